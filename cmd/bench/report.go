package main

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/loadgen"
)

// row is one line of the results table.
type row struct {
	name              string
	replicas, clients int
	pool              int
	cycles            float64
	// floor and serviceSQL are the references' cycles per second: the
	// bare floor and the service's own statements through pgbench.
	floor, serviceSQL float64
	p50, p99          time.Duration
	cpuCores, rssMB   float64
	// cpu and floorCPU are the CPU time per cycle of PostgreSQL, the
	// servers and the load generator, and of PostgreSQL and pgbench.
	cpu, floorCPU cpuSplit
	// statements is where the run's database time went, per cycle, most
	// first (empty when pg_stat_statements cannot be read).
	statements []cycleStatement
	note       string
}

func (r *row) fill(res loadgen.Result, servers []*serverProc, cpuBefore float64) {
	r.cycles = res.CyclesPerSecond()
	r.p50, r.p99 = res.ClaimPercentile(50), res.ClaimPercentile(99)
	r.cpuCores = (cpuSeconds(servers) - cpuBefore) / res.Elapsed.Seconds()
	r.rssMB = peakRSS(servers)
}

func (r *row) addNote(note string) {
	if r.note != "" {
		r.note += "; "
	}
	r.note += note
}

func header() string {
	return "| scenario | replicas | clients | pool | cycles/s (HTTP) | floor (cycles/s) | HTTP / floor | service SQL (cycles/s) | HTTP / service SQL | claim p50 | claim p99 | server CPU (cores) | server RSS (MB) | CPU µs per cycle: PostgreSQL + servers + load generator | floor: PostgreSQL + pgbench | note |\n" +
		"|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
}

func (r row) String() string {
	floor, floorRatio := reference(r.cycles, r.floor)
	sql, sqlRatio := reference(r.cycles, r.serviceSQL)
	return fmt.Sprintf("| %s | %d | %d | %d | %.0f | %s | %s | %s | %s | %s | %s | %.2f | %.0f | %s | %s | %s |",
		r.name, r.replicas, r.clients, r.pool, r.cycles, floor, floorRatio, sql, sqlRatio,
		ms(r.p50), ms(r.p99), r.cpuCores, r.rssMB, r.cpu.String(), r.floorCPU.String(), r.note)
}

// String writes the split as "total (PostgreSQL + servers + client)".
func (c cpuSplit) String() string {
	if !c.known() {
		return "n/a"
	}
	if c.server == 0 {
		return fmt.Sprintf("%.0f (%.0f + %.0f)", c.total(), c.postgres, c.client)
	}
	return fmt.Sprintf("%.0f (%.0f + %.0f + %.0f)", c.total(), c.postgres, c.server, c.client)
}

// reference formats a reference rate and the ratio of rate to it.
func reference(rate, ref float64) (string, string) {
	if ref <= 0 {
		return "n/a", "n/a"
	}
	return fmt.Sprintf("%.0f", ref), fmt.Sprintf("%.2f", rate/ref)
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
	var db string
	if h.cluster != nil {
		var changed []string
		for _, name := range sortedKeys(clusterSettings) {
			changed = append(changed, name+"="+clusterSettings[name])
		}
		db = fmt.Sprintf("the harness's own cluster, created for this run in a temporary directory on the same machine, with stock settings except %s",
			strings.Join(changed, ", "))
	} else {
		db = "**the server given with -database-url (" + serverAddr(h.adminURL) + ")**, not a cluster of the harness: its settings below are whatever that server has"
	}
	var settings []string
	for _, s := range h.settings {
		settings = append(settings, s.name+" = "+s.value)
	}
	return fmt.Sprintf(`- Machine: %d cores (%s), %s/%s
- Date: %s
- Commit: %s
- PostgreSQL %s: %s
- Server settings (SHOW): %s
- Each run: %s of load after a 1 s warm-up; the floor and the service's SQL through pgbench for as long, same clients, same pool`,
		runtime.NumCPU(), cpu, runtime.GOOS, runtime.GOARCH, time.Now().UTC().Format("2006-01-02 15:04 MST"), commit,
		h.pgVersion, db, strings.Join(settings, ", "), h.o.duration)
}

// serverAddr is the host, port and database of a connection string,
// without credentials.
func serverAddr(conn string) string {
	cfg, err := pgx.ParseConfig(conn)
	if err != nil {
		return "an unparsable connection string"
	}
	return fmt.Sprintf("%s:%d/%s", cfg.Host, cfg.Port, cfg.Database)
}

// report is everything a run measured; the sections of the scenarios that
// did not run are left out.
type report struct {
	machine  string
	rows     []row
	held     []heldRun
	schedule heldSchedule
	// standby is the held snapshot on a standby, when it ran.
	standby *heldRun
	costs   []costRun
	// endpoints is the endpoints scenario, when it ran.
	endpoints *endpointResults
}

func (r report) String() string {
	var b strings.Builder
	b.WriteString("# Benchmarks\n\nWritten by `make bench` (`go run ./cmd/bench`); reproduce with that command. How the hot path got here, with the costs before and after and what a held snapshot does to each statement: [hot-path.md](hot-path.md).\n\n")
	b.WriteString(r.machine + "\n\n")
	b.WriteString(floorText)
	if len(r.rows) > 0 {
		b.WriteString(throughputText)
		b.WriteString(header() + "\n")
		for _, row := range r.rows {
			b.WriteString(row.String() + "\n")
		}
		b.WriteString("\n")
		b.WriteString(cycleStatementsSection(r.rows))
	}
	if len(r.held) > 0 {
		b.WriteString(heldSection(r.held, r.schedule))
	}
	if r.standby != nil {
		b.WriteString(standbySection(*r.standby, r.held, r.schedule))
	}
	if len(r.costs) > 0 {
		b.WriteString(costSection(r.costs))
	}
	if r.endpoints != nil {
		b.WriteString(endpointSection(*r.endpoints))
	}
	return b.String()
}

var floorText = fmt.Sprintf("## The bare SQL floor\n\n"+`The reference every figure is set against: the least a claim-and-release
cycle can cost in PostgreSQL. Its own database holds one table, with no
history and no triggers, loaded with as many keys in pool 'default' as the
scenario's pool and then vacuumed and analysed:

`+"```sql"+`%s`+"```"+`

One cycle is two prepared statements, each its own transaction, run by
pgbench (`+"`-M prepared -c <clients> -j 2`"+`):

`+"```"+`
%s`+"```"+`

The start point :r is drawn from [0, %.2f), not [0, 1): the claim does not
wrap around to the start of the index, so at least 1%% of the keys must lie
above any start. The keys the clients hold are spread over the whole range,
so only about 1%% of them lie up there, and a claim always finds a key
(pgbench's `+"`\\gset`"+` fails the client when it gets no row).

`, floorSchema(10_000), floorScript, floorStart)

const throughputText = `## Throughput

A cycle is one claim (GET /keys) and one release (PUT /keys/{id} with the
lease token) through HTTP, every claim checked by the load generator against
the keys its other workers hold (a double claim fails the run). Right
after each scenario the floor runs with the same clients for the same time
on a pool of the same size ("HTTP / floor"). The second reference runs the
service's own KeyClaim and KeyReleaseMany statements from
db/queries/keys.sql through pgbench, one key per claim and one release per
transaction, as prepared statements, with the same clients on the
scenario's database ("HTTP / service SQL"). Load generator, servers,
pgbench and PostgreSQL share the machine's cores. Server CPU is the
servers' CPU time over the run's wall time; RSS is the peak resident set of
a server. "CPU µs per cycle" splits where each cycle's CPU time went: the
cluster's processes (from /proc, the exited ones through the postmaster's
children's times), the servers, and the load generator (the harness's own
process), or for the floor PostgreSQL and pgbench; with the cores saturated,
cycles per second is about cores × 10⁶ / that total.

`

func heldSection(runs []heldRun, s heldSchedule) string {
	var b strings.Builder
	service := runs[0]
	fmt.Fprintf(&b, `## Held snapshot

A transaction on its own connection takes a snapshot (BEGIN ISOLATION LEVEL
REPEATABLE READ; SELECT 1 FROM keys LIMIT 1) after %s of load, keeps it
open for %s and commits; the load goes on for %s more. While the snapshot
is held nothing may remove the row versions the cycles leave behind, in the
table or in its indexes. One server, %d clients, pool of %d. Each line is a
window of %s; "ratio" is the window's rate over the mean rate of the
windows before the hold, and HELD marks the windows under the hold. The
floor runs on the same schedule through pgbench (its rate from pgbench's
progress reports, which give a mean latency per cycle rather than
percentiles).

`, s.leadIn, s.hold, s.tail, service.clients, service.pool, s.window)
	b.WriteString("Targets for the service:\n\n")
	for _, t := range heldTargets(service, true) {
		fmt.Fprintf(&b, "- %s %s: %s\n", mark(t.met), t.goal, t.actual)
	}
	b.WriteString("\n")
	for _, r := range runs {
		fmt.Fprintf(&b, "- %s: snapshot taken at %.1f s, given up at %.1f s of the load\n", r.name, r.opened.Seconds(), r.closed.Seconds())
	}
	if len(runs) > 1 {
		b.WriteString("- the floor on the same goals: ")
		var parts []string
		for _, t := range heldTargets(runs[1], false) {
			parts = append(parts, fmt.Sprintf("%s (%s: %s)", mark(t.met), t.goal, t.actual))
		}
		b.WriteString(strings.Join(parts, "; ") + "\n")
	}
	b.WriteString("\n")
	b.WriteString(heldTable(runs, s.window))
	b.WriteString("\n")
	b.WriteString(statementTables(runs, s.window))
	return b.String()
}

// statementTables gives, for each run, the buffers per call (shared blocks
// hit and read) of the statements that read the most over the run, window
// by window, from pg_stat_statements read at each window's end.
func statementTables(runs []heldRun, width time.Duration) string {
	var b strings.Builder
	b.WriteString(`Buffers per call by statement, window by window (pg_stat_statements,
shared blocks hit and read, read at the end of each window), for the
statements that read the most over the run; "calls" is the window's. A
held snapshot shows here: a statement that walks dead index entries or
follows version chains reads more per call.

`)
	for _, r := range runs {
		if len(r.statements) == 0 {
			fmt.Fprintf(&b, "%s: no statement figures (%s).\n\n", r.name, r.statementsNote)
			continue
		}
		fmt.Fprintf(&b, "%s:\n\n| window | phase |", r.name)
		for _, name := range r.statements {
			fmt.Fprintf(&b, " %s: buffers / call (calls, ms / call) |", name)
		}
		b.WriteString("\n|---|---|" + strings.Repeat("---:|", len(r.statements)) + "\n")
		for _, w := range r.windows {
			fmt.Fprintf(&b, "| %s–%s | %s |", seconds(w.start), seconds(w.start+width), w.phase)
			for _, name := range r.statements {
				st, ok := w.statements[name]
				if !ok {
					b.WriteString(" n/a |")
					continue
				}
				fmt.Fprintf(&b, " %.1f (%d, %.3f) |", st.buffersPerCall, st.calls, st.msPerCall)
			}
			b.WriteString("\n")
		}
		b.WriteString("\n")
	}
	return b.String()
}

func mark(met bool) string {
	if met {
		return "**met**"
	}
	return "**missed**"
}

// heldTable puts the service's windows and the floor's side by side.
func heldTable(runs []heldRun, width time.Duration) string {
	var b strings.Builder
	b.WriteString("| window | phase | service cycles/s | ratio | claim p99 | floor cycles/s | ratio | floor cycle mean |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|\n")
	floor := map[time.Duration]heldWindow{}
	if len(runs) > 1 {
		for _, w := range runs[1].windows {
			floor[w.start] = w
		}
	}
	for _, w := range runs[0].windows {
		f, ok := floor[w.start]
		floorCells := "n/a | n/a | n/a"
		if ok {
			floorCells = fmt.Sprintf("%.0f | %.2f | %s", f.rate, f.ratio, ms(f.cycleMean))
		}
		fmt.Fprintf(&b, "| %s–%s | %s | %.0f | %.2f | %s | %s |\n", seconds(w.start), seconds(w.start+width),
			w.phase, w.rate, w.ratio, ms(w.claimP99), floorCells)
	}
	return b.String()
}

func seconds(d time.Duration) string { return fmt.Sprintf("%g s", d.Seconds()) }

func costSection(runs []costRun) string {
	var b strings.Builder
	b.WriteString(`## Per-cycle cost

What one cycle costs the database, each workload on a fresh database of its
own, one client, after a CHECKPOINT and a warm-up as long as the
measurement (so that the full-page images that follow a checkpoint fall
mostly in the warm-up). WAL bytes come from pg_current_wal_insert_lsn()
before and after; the records by resource manager from pg_waldump --stats
over that range; statements from pg_stat_statements, reset before; rows
from the deltas of pg_stat_user_tables. The WAL range holds whatever the
cluster wrote meanwhile (autovacuum is on, as in production); the
statements' own WAL is in their table. The batched workload claims and
releases a number of keys per statement and counts a cycle per key.

`)
	b.WriteString("| workload | cycles | WAL bytes / cycle | WAL records / cycle | of which full-page images (bytes / cycle) | note |\n|---|---:|---:|---:|---:|---|\n")
	for _, r := range runs {
		var records, fpi int64
		for _, s := range r.rmgrs {
			records += s.records
			fpi += s.fpiBytes
		}
		recs, fpis := "n/a", "n/a"
		if len(r.rmgrs) > 0 {
			recs, fpis = perCycle(records, r.cycles, 2), perCycle(fpi, r.cycles, 0)
		}
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s |\n", r.name, r.cycles, perCycle(r.walBytes, r.cycles, 0), recs, fpis, strings.Join(r.notes, "; "))
	}

	var rmgrs []string
	seen := map[string]bool{}
	for _, r := range runs {
		for _, s := range r.rmgrs {
			if !seen[s.name] {
				seen[s.name] = true
				rmgrs = append(rmgrs, s.name)
			}
		}
	}
	if len(rmgrs) > 0 {
		b.WriteString("\nWAL records per cycle by resource manager (pg_waldump --stats), records (bytes):\n\n| resource manager |")
		for _, r := range runs {
			b.WriteString(" " + r.name + " |")
		}
		b.WriteString("\n|---|" + strings.Repeat("---:|", len(runs)) + "\n")
		for _, name := range rmgrs {
			b.WriteString("| " + name + " |")
			for _, r := range runs {
				cell := "0"
				for _, s := range r.rmgrs {
					if s.name == name {
						cell = fmt.Sprintf("%s (%s)", perCycle(s.records, r.cycles, 2), perCycle(s.recordBytes+s.fpiBytes, r.cycles, 0))
					}
				}
				b.WriteString(" " + cell + " |")
			}
			b.WriteString("\n")
		}
	}

	b.WriteString("\nStatements (pg_stat_statements), per call:\n\n")
	b.WriteString("| workload | statement | calls | rows / call | shared hit | shared read | dirtied | WAL records | WAL bytes | mean exec time |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range runs {
		for _, s := range r.statements {
			fmt.Fprintf(&b, "| %s | %s | %d | %.2f | %.1f | %.1f | %.2f | %.2f | %.0f | %.3f ms |\n",
				r.name, s.name, s.calls, float64(s.rows)/float64(s.calls), s.hit, s.read, s.dirtied, s.walRecords, s.walBytes, s.mean)
		}
	}

	b.WriteString("\nRows per cycle by table (pg_stat_user_tables):\n\n")
	b.WriteString("| workload | table | updated | of which HOT | inserted |\n|---|---|---:|---:|---:|\n")
	for _, r := range runs {
		for _, t := range r.tables {
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", r.name, t.name,
				perCycle(t.updated, r.cycles, 2), perCycle(t.hot, r.cycles, 2), perCycle(t.inserted, r.cycles, 2))
		}
	}
	b.WriteString("\n")
	return b.String()
}

// perCycle divides total by cycles; a figure too small for the decimals
// asked for keeps two significant digits rather than reading as zero.
func perCycle(total, cycles int64, decimals int) string {
	if cycles <= 0 {
		return "n/a"
	}
	v := float64(total) / float64(cycles)
	if v != 0 && math.Abs(v) < 0.5*math.Pow(10, -float64(decimals)) {
		return strconv.FormatFloat(v, 'g', 2, 64)
	}
	return fmt.Sprintf("%.*f", decimals, v)
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// cycleStatementsSection says, for each throughput run, where a cycle's
// database time went, statement by statement.
func cycleStatementsSection(rows []row) string {
	var b strings.Builder
	b.WriteString(`Where each run's database time went, per cycle, statement by statement
(pg_stat_statements over the measured run, reset before it; the
statements that took the most time, the background job's included;
"buffers" are shared blocks hit and read, "read" those of them that were
not in shared_buffers):

| scenario | clients | statement | calls / cycle | exec µs / cycle | buffers / cycle | of which read | buffers / call |
|---|---:|---|---:|---:|---:|---:|---:|
`)
	for _, r := range rows {
		for _, st := range r.statements {
			fmt.Fprintf(&b, "| %s | %d | %s | %.3f | %.1f | %.1f | %.2f | %.1f |\n",
				r.name, r.clients, st.name, st.callsPerCycle, st.execMicrosPerCycle, st.buffersPerCycle, st.readsPerCycle, st.buffersPerCall)
		}
	}
	b.WriteString("\n")
	return b.String()
}
