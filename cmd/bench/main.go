// Command bench is the benchmark harness behind `make bench`. It starts its
// own PostgreSQL cluster with stock settings, starts real server processes
// against it, drives them over HTTP with the load generator, sets every
// figure against the bare SQL floor and against the service's own claim and
// release SQL through pgbench, holds a snapshot open under load, measures
// what one cycle costs the database, and writes docs/benchmarks.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"slices"
	"strings"
	"time"
)

type options struct {
	adminURL  string
	serverBin string
	queries   string
	out       string
	duration  time.Duration
	quick     bool
	profile   string
	// profileClients: the clients of the run the profile is taken of.
	profileClients int
	only           string
	held           heldSchedule
	costCycles     int
	// endpointCalls and endpointBurst: the endpoints scenario's calls per
	// endpoint and cycles of history.
	endpointCalls, endpointBurst int
}

func main() {
	var o options
	flag.StringVar(&o.adminURL, "database-url", os.Getenv("BENCH_DATABASE_URL"),
		"run on this PostgreSQL instead of the harness's own stock cluster; the user must be allowed to create databases (env BENCH_DATABASE_URL)")
	flag.StringVar(&o.serverBin, "server", "bin/token-orchestrator", "the server binary to start")
	flag.StringVar(&o.queries, "queries", "db/queries/keys.sql", "the service's SQL, for the pgbench reference and the cost table")
	flag.StringVar(&o.out, "out", "docs/benchmarks.md", "where to write the results (empty: only print); with -quick or -only, written only when given")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "length of each measured run")
	flag.BoolVar(&o.quick, "quick", false, "a smoke run: small pools, short runs, nothing written unless -out is given")
	flag.StringVar(&o.only, "only", "", `run only the scenarios whose name contains this text, e.g. "held snapshot", "cost" (nothing written unless -out is given)`)
	flag.StringVar(&o.profile, "profile", "", "write a CPU profile of the server during a run on the small pool (see -profile-clients) to this file")
	flag.IntVar(&o.profileClients, "profile-clients", 32, "the number of clients of the run that -profile is taken of")
	flag.DurationVar(&o.held.leadIn, "lead-in", 30*time.Second, "held snapshot: load before the snapshot is taken")
	flag.DurationVar(&o.held.hold, "hold", 3*time.Minute, "held snapshot: how long the snapshot is held")
	flag.DurationVar(&o.held.tail, "tail", 30*time.Second, "held snapshot: load after the snapshot is given up")
	flag.DurationVar(&o.held.window, "window", 10*time.Second, "held snapshot: length of each reported window (whole seconds)")
	flag.IntVar(&o.costCycles, "cost-cycles", 5000, "per-cycle cost: cycles measured per workload (after as many for warm-up)")
	flag.IntVar(&o.endpointCalls, "endpoint-calls", 20, "endpoints: measured calls of each endpoint at each size and statistics state")
	flag.IntVar(&o.endpointBurst, "endpoint-burst", 3000, "endpoints: claim-and-release cycles of history written before the calls")
	flag.Parse()
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.quick {
		quick := map[string]func(){
			"duration":    func() { o.duration = 2 * time.Second },
			"lead-in":     func() { o.held.leadIn = 4 * time.Second },
			"hold":        func() { o.held.hold = 10 * time.Second },
			"tail":        func() { o.held.tail = 4 * time.Second },
			"window":      func() { o.held.window = 2 * time.Second },
			"cost-cycles": func() { o.costCycles = 500 },
			// The endpoints keep their calls: a median of fewer says little.
			"endpoint-burst": func() { o.endpointBurst = 1000 },
		}
		for name, apply := range quick {
			if !set[name] {
				apply()
			}
		}
	}
	// A partial run must not overwrite the full report by accident; it
	// writes only where it is told to.
	if (o.quick || o.only != "") && !set["out"] {
		o.out = ""
	}
	if err := o.validate(); err != nil {
		log.Fatalf("bench: %v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, o)
	stop()
	if err != nil {
		log.Fatalf("bench: %v", err)
	}
}

func (o options) validate() error {
	var errs []error
	s := o.held
	if s.window < time.Second || s.window%time.Second != 0 {
		errs = append(errs, fmt.Errorf("-window %s: whole seconds, at least 1 (pgbench reports progress in seconds)", s.window))
	} else {
		for name, d := range map[string]time.Duration{"-lead-in": s.leadIn, "-hold": s.hold, "-tail": s.tail} {
			if d < s.window || d%s.window != 0 {
				errs = append(errs, fmt.Errorf("%s %s: a positive multiple of -window %s, so that every window lies wholly before, under or after the hold", name, d, s.window))
			}
		}
	}
	if o.costCycles < 1 {
		errs = append(errs, fmt.Errorf("-cost-cycles %d: at least 1", o.costCycles))
	}
	if o.endpointCalls < 1 {
		errs = append(errs, fmt.Errorf("-endpoint-calls %d: at least 1", o.endpointCalls))
	}
	if o.endpointBurst < 1 {
		errs = append(errs, fmt.Errorf("-endpoint-burst %d: at least 1", o.endpointBurst))
	}
	if o.profile != "" && !slices.Contains(o.clientCounts(), o.profileClients) {
		errs = append(errs, fmt.Errorf("-profile-clients %d: the small pool runs with %v clients", o.profileClients, o.clientCounts()))
	}
	return errors.Join(errs...)
}

// clientCounts are the clients of the throughput runs on the small pool.
func (o options) clientCounts() []int {
	if o.quick {
		return []int{8}
	}
	return []int{8, 32, 128}
}

func run(ctx context.Context, o options) error {
	h, err := newHarness(ctx, o)
	if err != nil {
		return err
	}
	defer h.close()

	rep := report{machine: h.describe(), schedule: o.held}
	fmt.Println(rep.machine)
	add := func(r row, err error) error {
		if err != nil {
			return fmt.Errorf("%s: %w", r.name, err)
		}
		fmt.Println(r.String())
		rep.rows = append(rep.rows, r)
		return nil
	}
	smallPool, bigPool := 10_000, 1_000_000
	clientCounts := o.clientCounts()
	expiring := 100_000
	// The endpoints at 10,000 keys, at 1,000,000 and at 2,000 pools of 50.
	endpointSizes := []endpointSize{{1, 10_000}, {1, 1_000_000}, {2_000, 50}}
	if o.quick {
		smallPool, bigPool, expiring = 1_000, 20_000, 5_000
		endpointSizes = []endpointSize{{1, 10_000}, {1, 100_000}, {200, 50}}
	}
	want := func(name string) bool { return strings.Contains(name, o.only) }
	fmt.Println(header())
	for _, clients := range clientCounts {
		if name := fmt.Sprintf("pool of %d", smallPool); want(name) {
			if err := add(h.throughput(ctx, name, smallPool, clients, 1)); err != nil {
				return err
			}
		}
	}
	if name := fmt.Sprintf("pool of %d (COPY)", bigPool); want(name) {
		if err := add(h.throughput(ctx, name, bigPool, 32, 1)); err != nil {
			return err
		}
	}
	if want(fmt.Sprintf("%d leases ending at once", expiring)) {
		if err := add(h.massExpiry(ctx, expiring, smallPool, 32)); err != nil {
			return err
		}
	}
	if want("three replicas") {
		if err := add(h.throughput(ctx, "three replicas", smallPool, 64, 3)); err != nil {
			return err
		}
	}
	if want("held snapshot") {
		fmt.Printf("held snapshot: %s of load, the snapshot held from %s for %s; the service, then the floor\n",
			o.held.total(), o.held.leadIn, o.held.hold)
		runs, err := h.heldSnapshot(ctx, smallPool, 32, o.held)
		if err != nil {
			return fmt.Errorf("held snapshot: %w", err)
		}
		rep.held = runs
		fmt.Print(heldSection(runs, o.held))
	}
	if want("held snapshot on a standby") && h.cluster == nil {
		// A standby is made from the harness's own cluster with
		// pg_basebackup; a server given by -database-url may be anywhere.
		fmt.Println("held snapshot on a standby: skipped, it needs the harness's own cluster (no -database-url)")
	} else if want("held snapshot on a standby") {
		fmt.Printf("held snapshot on a standby: %s of load, the snapshot held on the standby from %s for %s\n",
			o.held.total(), o.held.leadIn, o.held.hold)
		run, err := h.standbyHeld(ctx, smallPool, 32, o.held)
		if err != nil {
			return fmt.Errorf("held snapshot on a standby: %w", err)
		}
		rep.standby = &run
		fmt.Print(standbySection(run, rep.held, o.held))
	}
	if want("per-cycle cost") {
		fmt.Printf("per-cycle cost: %d cycles per workload\n", o.costCycles)
		costs, err := h.cost(ctx, smallPool, o.costCycles)
		if err != nil {
			return fmt.Errorf("per-cycle cost: %w", err)
		}
		rep.costs = costs
		fmt.Print(costSection(costs))
	}
	if want("endpoints") {
		fmt.Printf("endpoints: %d calls of each at %d sizes, never analysed and analysed\n", o.endpointCalls, len(endpointSizes))
		res, err := h.endpoints(ctx, endpointSizes, o.endpointCalls, o.endpointBurst)
		if err != nil {
			return fmt.Errorf("endpoints: %w", err)
		}
		rep.endpoints = &res
		fmt.Print(endpointSection(res))
	}
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(rep.String()), 0o644); err != nil {
			return err
		}
		fmt.Println("written to", o.out)
	}
	return nil
}
