// Command bench is the benchmark harness behind `make bench`. It starts real
// server processes against a PostgreSQL, drives them over HTTP with the load
// generator, runs the same claim and release SQL through pgbench as the
// reference, and writes the table to docs/benchmarks.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
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
	only      string
}

func main() {
	var o options
	flag.StringVar(&o.adminURL, "database-url", envOr("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"),
		"PostgreSQL where the harness may create the database tokenorchestrator_bench (env BENCH_DATABASE_URL); unreachable: an embedded cluster")
	flag.StringVar(&o.serverBin, "server", "bin/token-orchestrator", "the server binary to start")
	flag.StringVar(&o.queries, "queries", "db/queries/keys.sql", "the service's SQL, for the pgbench reference")
	flag.StringVar(&o.out, "out", "docs/benchmarks.md", "where to write the results (empty: only print)")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "length of each measured run")
	flag.BoolVar(&o.quick, "quick", false, "a smoke run: small pools, short runs, nothing written")
	flag.StringVar(&o.only, "only", "", "run only the scenarios whose name contains this text (nothing is written)")
	flag.StringVar(&o.profile, "profile", "", "write a CPU profile of the server during the 32-client run on the small pool to this file")
	flag.Parse()
	if o.quick {
		o.duration = 2 * time.Second
		o.out = ""
	}
	if o.only != "" {
		o.out = ""
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, o); err != nil {
		log.Fatalf("bench: %v", err)
	}
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

func run(ctx context.Context, o options) error {
	h, err := newHarness(ctx, o)
	if err != nil {
		return err
	}
	defer h.close()

	var rows []row
	add := func(r row, err error) error {
		if err != nil {
			return fmt.Errorf("%s: %w", r.name, err)
		}
		fmt.Println(r.String())
		rows = append(rows, r)
		return nil
	}
	smallPool, bigPool := 10_000, 1_000_000
	clientCounts := []int{8, 32, 128}
	expiring := 100_000
	if o.quick {
		smallPool, bigPool, clientCounts, expiring = 1_000, 20_000, []int{8}, 5_000
	}
	fmt.Println(header())
	want := func(name string) bool { return strings.Contains(name, o.only) }
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
	if o.out != "" {
		if err := writeReport(o.out, h.describe(), rows); err != nil {
			return err
		}
		fmt.Println("written to", o.out)
	}
	return nil
}
