package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/tokenorchestrator/tokenorchestrator/internal/loadgen"
)

// row is one line of the results table.
type row struct {
	name              string
	replicas, clients int
	pool              int
	cycles, pgbench   float64
	p50, p99          time.Duration
	cpuCores, rssMB   float64
	note              string
}

func (r *row) fill(res loadgen.Result, servers []*serverProc, cpuBefore float64) {
	r.cycles = res.CyclesPerSecond()
	r.p50, r.p99 = res.ClaimPercentile(50), res.ClaimPercentile(99)
	r.cpuCores = (cpuSeconds(servers) - cpuBefore) / res.Elapsed.Seconds()
	r.rssMB = peakRSS(servers)
}

func header() string {
	return "| scenario | replicas | clients | pool | cycles/s (HTTP) | cycles/s (pgbench) | ratio | claim p50 | claim p99 | server CPU (cores) | server RSS (MB) | note |\n" +
		"|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
}

func (r row) String() string {
	pgbench, ratio := "n/a", "n/a"
	if r.pgbench > 0 {
		pgbench = fmt.Sprintf("%.0f", r.pgbench)
		ratio = fmt.Sprintf("%.2f", r.cycles/r.pgbench)
	}
	return fmt.Sprintf("| %s | %d | %d | %d | %.0f | %s | %s | %s | %s | %.2f | %.0f | %s |",
		r.name, r.replicas, r.clients, r.pool, r.cycles, pgbench, ratio,
		ms(r.p50), ms(r.p99), r.cpuCores, r.rssMB, r.note)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

func (h *harness) describe() string {
	cpu := "unknown CPU"
	if raw, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			if strings.HasPrefix(line, "model name") {
				cpu = strings.TrimSpace(strings.SplitN(line, ":", 2)[1])
				break
			}
		}
	}
	commit := "unknown"
	if out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		commit = strings.TrimSpace(string(out))
	}
	return fmt.Sprintf("- Machine: %d cores (%s), %s/%s; PostgreSQL %s on the same machine\n- Date: %s\n- Commit: %s\n- Each run: %s of load after a 1 s warm-up; pgbench for as long, same clients, same pool",
		runtime.NumCPU(), cpu, runtime.GOOS, runtime.GOARCH, h.pgVersion, time.Now().UTC().Format("2006-01-02 15:04 MST"), commit, h.o.duration)
}

func writeReport(path, machine string, rows []row) error {
	var b strings.Builder
	b.WriteString("# Benchmarks\n\nWritten by `make bench` (`go run ./cmd/bench`); reproduce with that command.\n\n")
	b.WriteString(machine + "\n\n")
	b.WriteString(`A cycle is one claim (GET /keys) and one release (PUT /keys/{id} with the
lease token) through HTTP, every claim checked by the load generator against
the keys its other workers hold (a double assignment fails the run). The
pgbench reference runs the service's own KeyClaim and KeyReleaseMany
statements from db/queries/keys.sql, one claim and one release per
transaction, as prepared statements, with the same number of clients on the
same pool; "ratio" is HTTP / pgbench. Load generator, servers, pgbench and
PostgreSQL share the machine's cores. Server CPU is the servers' CPU time
over the run's wall time; RSS is the peak resident set of a server.

`)
	b.WriteString(header() + "\n")
	for _, r := range rows {
		b.WriteString(r.String() + "\n")
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
