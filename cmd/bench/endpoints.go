package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	neturl "net/url"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tokenorchestrator/tokenorchestrator/internal/reports"
	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
)

// endpointSize is one data size of the endpoints scenario: pools of
// perPool keys each.
type endpointSize struct {
	pools, perPool int
}

func (s endpointSize) keys() int { return s.pools * s.perPool }

func (s endpointSize) String() string {
	if s.pools == 1 {
		return thousands(s.perPool) + " keys"
	}
	return fmt.Sprintf("%s pools × %s keys", thousands(s.pools), thousands(s.perPool))
}

// poolName is the name of pool p of the size.
func (s endpointSize) poolName(p int) string {
	if s.pools == 1 {
		return "bench"
	}
	return fmt.Sprintf("p%05d", p)
}

// thousands writes n with a comma between groups of three digits.
func thousands(n int) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + thousands(-n)
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// statsState is the planner statistics' state of a database.
type statsState int

const (
	neverAnalysed statsState = iota
	analysed
)

var statsStates = []statsState{neverAnalysed, analysed}

func (s statsState) String() string {
	if s == analysed {
		return "analysed"
	}
	return "never analysed"
}

// endpointFigure is what the calls of one endpoint took and cost, at one
// size in one state.
type endpointFigure struct {
	median time.Duration
	// buffers is the mean of the shared buffers (hit + read) per call;
	// negative when not known.
	buffers float64
}

type endpointKey struct {
	row   string
	size  int
	state statsState
}

// endpointResults is the endpoints scenario's outcome.
type endpointResults struct {
	sizes []endpointSize
	// calls is the measured calls of each endpoint; burst the cycles of
	// history written before them.
	calls, burst int
	// rows are the endpoints, in the order they were measured.
	rows    []string
	figures map[endpointKey]endpointFigure
	// buffers is whether buffers were read (pg_stat_statements).
	buffers bool
	notes   []string
	// took is how long each size took, loading included.
	took []time.Duration
}

func (r *endpointResults) add(row string, size int, state statsState, f endpointFigure) {
	if r.figures == nil {
		r.figures = map[endpointKey]endpointFigure{}
	}
	if !slices.Contains(r.rows, row) {
		r.rows = append(r.rows, row)
	}
	r.figures[endpointKey{row, size, state}] = f
}

func (r *endpointResults) note(format string, args ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

// The rows that list the pools, which may grow with their number, and the
// rows of what the dashboard reads (app.js: refresh).
const (
	rowStats          = "GET /stats"
	rowPools          = "GET /pools"
	rowKeysPage       = "GET /pools/{pool}/keys?limit=20 (first page)"
	rowActivityPoll   = "GET /activity?pool=&minutes=2"
	rowActivityHour   = "GET /activity?pool=&minutes=60"
	rowDurationsHour  = "GET /activity/lease-durations?pool=&minutes=60"
	rowCooldownsDay   = "GET /reports/key-cooldowns?pool=&from=(24 h ago)"
	endpointMaxRatio  = 3.0
	endpointWarmUp    = 2
	pollMaxRatio      = 1.1
	dashboardPollSecs = 2
	dashboardFullEach = 15
)

// listsPools is whether a row may grow with the number of pools.
func listsPools(row string) bool { return row == rowStats || row == rowPools }

// endpointRatio is the cell of the ratios to the first size's figures:
// of the medians and, when both are known, of the buffers per call. Each
// is marked when above endpointMaxRatio, unless the row lists pools and the
// size has more than one.
func endpointRatio(base, big endpointFigure, okBase, okBig bool, row string, size endpointSize) string {
	if !okBase || !okBig || base.median <= 0 {
		return "n/a"
	}
	exempt := listsPools(row) && size.pools > 1
	ratio := func(r float64) string {
		cell := fmt.Sprintf("%.1f×", r)
		if r > endpointMaxRatio && !exempt {
			return "**" + cell + " ✗**"
		}
		return cell
	}
	cell := ratio(float64(big.median) / float64(base.median))
	if base.buffers > 0 && big.buffers >= 0 {
		cell += " · buf " + ratio(big.buffers/base.buffers)
	}
	if exempt {
		cell += " (lists the pools)"
	}
	return cell
}

// figureCell writes a median and, when known, the buffers per call.
func figureCell(f endpointFigure, ok bool) string {
	if !ok {
		return "n/a"
	}
	cell := ms(f.median)
	if f.buffers >= 0 {
		cell += fmt.Sprintf(" · %s buf", buffersText(f.buffers))
	}
	return cell
}

func buffersText(b float64) string {
	if b < 10 && b != float64(int64(b)) {
		return fmt.Sprintf("%.1f", b)
	}
	return fmt.Sprintf("%.0f", b)
}

// writeSizeHeader writes a table's header: a column per size and state,
// and for each size after the first, one for its ratio to the first.
func writeSizeHeader(b *strings.Builder, first string, sizes []endpointSize) {
	b.WriteString("| " + first + " |")
	align := "|---|"
	for i, size := range sizes {
		for _, state := range statsStates {
			fmt.Fprintf(b, " %s, %s |", size, state)
			align += "---:|"
			if i > 0 {
				fmt.Fprintf(b, " × %s |", sizes[0])
				align += "---:|"
			}
		}
	}
	b.WriteString("\n" + align + "\n")
}

// endpointTable writes the rows × (size × state) table, with the ratio of
// each larger size's median to the first size's in the same state.
func endpointTable(r endpointResults) string {
	var b strings.Builder
	writeSizeHeader(&b, "endpoint", r.sizes)
	for _, row := range r.rows {
		b.WriteString("| " + row + " |")
		for i, size := range r.sizes {
			for _, state := range statsStates {
				f, ok := r.figures[endpointKey{row, i, state}]
				b.WriteString(" " + figureCell(f, ok) + " |")
				if i > 0 {
					base, okBase := r.figures[endpointKey{row, 0, state}]
					b.WriteString(" " + endpointRatio(base, f, okBase, ok, row, size) + " |")
				}
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

// pollCost is what the dashboard's polls cost the database in buffers:
// every poll (the pool counts, the page of keys, the last two minutes of
// activity), every full refresh (each FULL_EVERY-th poll: the hour of
// activity instead of two minutes, the lease durations, the cooldowns and
// the pools' policies besides), and the mean per poll.
type pollCost struct {
	poll, full, mean float64
	known            bool
}

func dashboardPollCost(r endpointResults, size int, state statsState) pollCost {
	get := func(rows ...string) (float64, bool) {
		total := 0.0
		for _, row := range rows {
			f, ok := r.figures[endpointKey{row, size, state}]
			if !ok || f.buffers < 0 {
				return 0, false
			}
			total += f.buffers
		}
		return total, true
	}
	poll, ok1 := get(rowStats, rowKeysPage, rowActivityPoll)
	full, ok2 := get(rowStats, rowKeysPage, rowActivityHour, rowDurationsHour, rowCooldownsDay, rowPools)
	if !ok1 || !ok2 {
		return pollCost{}
	}
	return pollCost{poll: poll, full: full, mean: (poll*(dashboardFullEach-1) + full) / dashboardFullEach, known: true}
}

// pollRatio is the cell of a poll cost against the first size's: marked
// when more than pollMaxRatio of it.
func pollRatio(base, big float64) string {
	if base <= 0 {
		return "n/a"
	}
	ratio := big / base
	if ratio > pollMaxRatio {
		return fmt.Sprintf("**%.2f× ✗**", ratio)
	}
	return fmt.Sprintf("%.2f×", ratio)
}

// pollTable writes what a poll of the dashboard costs at each size and
// state, with the ratio of each larger size to the first.
func pollTable(r endpointResults) string {
	var b strings.Builder
	writeSizeHeader(&b, "shared buffers (hit + read)", r.sizes)
	lines := []struct {
		name string
		of   func(pollCost) float64
	}{
		{fmt.Sprintf("every poll (%d s): /stats, page of keys, 2 minutes of activity", dashboardPollSecs), func(c pollCost) float64 { return c.poll }},
		{fmt.Sprintf("every %dth poll instead: /stats, page of keys, the hour of activity, lease durations, cooldowns, /pools", dashboardFullEach), func(c pollCost) float64 { return c.full }},
		{fmt.Sprintf("mean per poll (%d s)", dashboardPollSecs), func(c pollCost) float64 { return c.mean }},
	}
	for _, line := range lines {
		b.WriteString("| " + line.name + " |")
		for i := range r.sizes {
			for _, state := range statsStates {
				c := dashboardPollCost(r, i, state)
				if !c.known {
					b.WriteString(" n/a |")
					if i > 0 {
						b.WriteString(" n/a |")
					}
					continue
				}
				fmt.Fprintf(&b, " %.0f |", line.of(c))
				if i > 0 {
					base := dashboardPollCost(r, 0, state)
					if !base.known {
						b.WriteString(" n/a |")
					} else {
						b.WriteString(" " + pollRatio(line.of(base), line.of(c)) + " |")
					}
				}
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

func endpointSection(r endpointResults) string {
	var b strings.Builder
	fmt.Fprintf(&b, `## Endpoints by data size and statistics

Every endpoint a client or the dashboard calls, at each data size, on a
database whose tables were never analysed and on the same database after
ANALYZE. Each size is its own fresh database: its keys loaded with COPY,
every key of one seat, with a name and a label (tier=paid on 1%% of them,
tier=free on the others), created (their created events) over an hour 36
hours before the run, outside the reports' default day and the charts' hour.
Then 5%% of each pool's keys are claimed and held, and %d
claim-and-release cycles write history in the measured pool (every fifth
keeping its lease alive once, every tenth releasing with a cooldown of
20 ms); with many pools, as many again spread over all of them. The
background job's work (ending cooldowns, folding the counts and the history
into the rollups) is then done by the harness, and the server runs with
SWEEP_INTERVAL=24h, so that what the database does while an endpoint is
measured is that endpoint's alone (a statement the idle server runs in 2 s
before the calls would be listed in the notes). Autovacuum is turned off on
every table of the database (autovacuum_enabled = false), so that nothing
analyses it behind the harness's back; "analysed" is after a plain ANALYZE
of the database, with a server started afresh.

Each endpoint is called %d times in a row, by one client over HTTP, against
one server process, after %d calls of warm-up; a cell gives the median time
of a call and the mean shared buffers (hit + read) of the database per
call, from pg_stat_statements read before and after every call (what the
statements of the call read, planning not included). Calls on one pool use
the same pool at every size (with many pools, one in the middle that has a
free paid key); "all pools" calls leave out ?pool=. A claim is released
right after it (the release is measured on the plain claims' keys), keys
are deleted from spare free keys (with many pools, of other pools), and
the keep-alives go to the keys held since before the run. The held keys
are 5%% of each size, so what reads the leases that started in its range
(the lease reports, the chart of lease durations) finds 5%% of the keys
among them. "× %s" is a median over the median at %s in
the same state, then ("buf") the buffers per call over those at %s;
**✗** marks more than %.0f×, except for the endpoints that list the pools
(/stats and GET /pools), which may grow with their number. The buffers are the steadier figure: the
times move with whatever else the machine runs. Reports over all pools
answer a row per pool and hour with history, so with many pools they grow
with the pools too.

`, r.burst, r.calls, endpointWarmUp, r.sizes[0], r.sizes[0], r.sizes[0], endpointMaxRatio)
	b.WriteString(endpointTable(r))
	fmt.Fprintf(&b, `
### What the dashboard's polls cost the database

The dashboard (internal/dashboard/assets/app.js) polls every %d s for the
pool counts (GET /stats), the page of keys on screen (GET
/pools/{pool}/keys?limit=20) and the last two minutes of activity (GET
/activity?pool=&minutes=2); every %dth poll reads the whole hour of
activity instead, and the lease durations, the key cooldowns of the day and
the pools' policies (GET /pools) besides. The shared buffers per poll, from
the endpoints' figures above; **✗** marks more than %.1f× the figure at
%s (a B-tree one level deeper costs a buffer more per descent). With many
pools, GET /stats and GET /pools list every one of them, so a poll's cost
there grows with the pools.

`, dashboardPollSecs, dashboardFullEach, pollMaxRatio, r.sizes[0])
	if !r.buffers {
		b.WriteString("No figures: the buffers per call were not read (see the notes).\n")
	} else {
		b.WriteString(pollTable(r))
	}
	if len(r.notes) > 0 {
		b.WriteString("\nNotes:\n\n")
		for _, n := range r.notes {
			b.WriteString("- " + n + "\n")
		}
	}
	var took []string
	for i, d := range r.took {
		took = append(took, fmt.Sprintf("%s %s", r.sizes[i], d.Round(time.Second)))
	}
	if len(took) > 0 {
		b.WriteString("\nTime taken by each size, loading included: " + strings.Join(took, ", ") + ".\n")
	}
	b.WriteString("\n")
	return b.String()
}

// median of the durations (the mean of the middle two of an even count).
func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// endpointRun is what the scenario needs to drive one size.
type endpointRun struct {
	size endpointSize
	// burst is the number of claim-and-release cycles of the history.
	burst int
	ids   []uuid.UUID
	// pool is the index of the pool the per-pool calls use.
	pool int
	// held are the keys of that pool held since before the run.
	held []heldLease
	// reads are the indices of keys of that pool to read; spares those of
	// free keys without the paid label to delete, never read.
	reads, spares []int
	// middle is the id after which the middle page of the pool's keys
	// starts.
	middle uuid.UUID
}

type heldLease struct {
	id    uuid.UUID
	token int64
}

func (e *endpointRun) poolOf(i int) string { return e.size.poolName(i / e.size.perPool) }

// holdBatch is the most keys the harness holds with one statement.
const holdBatch = 500

// burstCooldown is the cooldown of every tenth release of the history.
const burstCooldown = 20 * time.Millisecond

// paidKey tells the keys that carry tier=paid: 1% of them, the first of
// every other pool of 50.
func paidKey(i int) bool { return i%100 == 0 }

// endpoints runs the scenario at every size.
func (h *harness) endpoints(ctx context.Context, sizes []endpointSize, calls, burst int) (endpointResults, error) {
	res := endpointResults{sizes: sizes, calls: calls, burst: burst, buffers: h.statements == ""}
	if !res.buffers {
		res.note("no buffers per call: %s", h.statements)
	}
	for i, size := range sizes {
		start := time.Now()
		fmt.Printf("endpoints: %s\n", size)
		if err := h.endpointSize(ctx, &res, i, calls, burst); err != nil {
			return res, fmt.Errorf("%s: %w", size, err)
		}
		res.took = append(res.took, time.Since(start))
	}
	return res, nil
}

// endpointSize loads one size into a fresh database and measures every
// endpoint on it, never analysed and then analysed.
func (h *harness) endpointSize(ctx context.Context, res *endpointResults, sizeIndex, calls, burst int) error {
	size := res.sizes[sizeIndex]
	url, err := h.freshDB(ctx)
	if err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := autovacuumOff(ctx, pool); err != nil {
		return err
	}
	run := &endpointRun{size: size, burst: burst}
	pools := make([]string, size.pools)
	for p := range pools {
		pools[p] = size.poolName(p)
	}
	start := time.Now()
	if run.ids, err = copyKeys(ctx, url, keyLoad{pools: pools, perPool: size.perPool, paid: paidKey, named: true,
		created: time.Now().Add(-36 * time.Hour)}); err != nil {
		return err
	}
	fmt.Printf("  loaded in %s\n", time.Since(start).Round(time.Millisecond))
	st := store.New(pool, store.Config{KeyTTL: 24 * time.Hour, LeaseTTL: 6 * time.Hour, QueryTimeout: 10 * time.Minute})
	defer st.Close()
	start = time.Now()
	if err := run.prepare(ctx, st, pool, endpointWarmUp+calls); err != nil {
		return err
	}
	fmt.Printf("  held keys, history and rollups in %s\n", time.Since(start).Round(time.Millisecond))

	for _, state := range statsStates {
		if state == analysed {
			if _, err := pool.Exec(ctx, "ANALYZE"); err != nil {
				return err
			}
		} else if n, err := countAnalysed(ctx, pool); err != nil {
			return err
		} else if n > 0 {
			res.note("%s: %d tables had been analysed before the never-analysed calls", size, n)
		}
		if err := settle(ctx, st); err != nil {
			return err
		}
		servers, err := h.startServers(ctx, url, 1, []string{"SWEEP_INTERVAL=24h", "KEY_TTL=24h", "LEASE_TTL=1h"})
		if err != nil {
			return err
		}
		m, err := newMeter(ctx, h, servers[0].url, benchDB)
		if err == nil {
			start = time.Now()
			err = m.idle(ctx, res, size, state)
			if err == nil {
				err = run.measure(ctx, m, calls, state)
			}
			m.close()
			fmt.Printf("  %s: measured in %s\n", state, time.Since(start).Round(time.Millisecond))
		}
		stopServers(servers)
		if err != nil {
			return fmt.Errorf("%s: %w", state, err)
		}
		for _, row := range m.order {
			f := m.figure(row)
			res.add(row, sizeIndex, state, f)
			fmt.Printf("    %s: %s\n", row, figureCell(f, true))
		}
	}
	return nil
}

// autovacuumOff turns autovacuum off on every table of the database.
func autovacuumOff(ctx context.Context, pool *pgxpool.Pool) error {
	_, err := pool.Exec(ctx, `DO $$
DECLARE t regclass;
BEGIN
    FOR t IN SELECT c.oid::regclass FROM pg_class AS c
             WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r' LOOP
        EXECUTE format('ALTER TABLE %s SET (autovacuum_enabled = false, toast.autovacuum_enabled = false)', t);
    END LOOP;
END $$`)
	return err
}

// countAnalysed counts the tables of the database that were ever analysed.
func countAnalysed(ctx context.Context, pool *pgxpool.Pool) (int, error) {
	var n int
	err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_user_tables
		WHERE last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL`).Scan(&n)
	return n, err
}

// settle does the background job's work: ends the cooldowns that are
// over, folds the pools' count changes and the history into the rollups.
func settle(ctx context.Context, st *store.Store) error {
	for {
		n, err := st.EndCooldowns(ctx, 1000)
		if err != nil {
			return fmt.Errorf("end cooldowns: %w", err)
		}
		if n < 1000 {
			break
		}
	}
	if _, err := st.FoldCounts(ctx); err != nil {
		return fmt.Errorf("fold counts: %w", err)
	}
	for {
		_, caughtUp, err := st.FoldHistory(ctx, 10_000)
		if err != nil {
			return fmt.Errorf("fold history: %w", err)
		}
		if caughtUp {
			return nil
		}
	}
}

// prepare holds 5% of each pool's keys, picks the measured pool, writes
// the burst of history and picks the keys to read and, calls at a time, to
// delete.
func (e *endpointRun) prepare(ctx context.Context, st *store.Store, pool *pgxpool.Pool, calls int) error {
	size := e.size
	start := time.Now()
	heldIDs := map[uuid.UUID]bool{}
	heldBy := map[int][]heldLease{}
	for p := range size.pools {
		n := (p+1)*size.perPool*5/100 - p*size.perPool*5/100
		if n == 0 {
			continue
		}
		// A few hundred keys per statement: a claim of many keys pairs
		// every key it claims with every other in one of its steps.
		for n > 0 {
			keys, err := st.ClaimMany(ctx, size.poolName(p), min(n, holdBatch))
			if err != nil {
				return fmt.Errorf("hold keys: %w", err)
			}
			if len(keys) == 0 {
				return errors.New("hold keys: no free key")
			}
			for _, k := range keys {
				heldIDs[k.ID] = true
				heldBy[p] = append(heldBy[p], heldLease{k.ID, *k.LeaseToken})
			}
			n -= len(keys)
		}
	}
	fmt.Printf("  held 5%% of the keys in %s\n", time.Since(start).Round(time.Millisecond))
	// The measured pool: the middle one, or the first after it whose paid
	// key is free.
	e.pool = -1
	for p := size.pools / 2; p < size.pools+size.pools/2; p++ {
		q := p % size.pools
		for i := q * size.perPool; i < (q+1)*size.perPool; i++ {
			if paidKey(i) && !heldIDs[e.ids[i]] {
				e.pool = q
				break
			}
		}
		if e.pool >= 0 {
			break
		}
	}
	if e.pool < 0 {
		return errors.New("no pool has a free key labelled " + paidLabel)
	}
	e.held = heldBy[e.pool]
	if len(e.held) == 0 {
		return errors.New("the measured pool holds no key")
	}

	name := size.poolName(e.pool)
	start = time.Now()
	if err := e.historyBurst(ctx, st, func(int) string { return name }); err != nil {
		return err
	}
	if size.pools > 1 {
		if err := e.historyBurst(ctx, st, func(i int) string { return size.poolName(i % size.pools) }); err != nil {
			return err
		}
	}
	fmt.Printf("  history burst in %s\n", time.Since(start).Round(time.Millisecond))
	start = time.Now()
	// The last cooldowns end soon after the burst.
	if err := sleepUntil(ctx, time.Now().Add(2*burstCooldown)); err != nil {
		return err
	}
	if err := settle(ctx, st); err != nil {
		return err
	}
	fmt.Printf("  cooldowns, counts and history folded in %s\n", time.Since(start).Round(time.Millisecond))

	// Spares: free keys without the paid label, of other pools when there
	// are several; reads: the measured pool's other keys.
	first, last := e.pool*size.perPool, (e.pool+1)*size.perPool
	spares := 2 * len(statsStates) * calls // by id and by name, in each state
	order := rand.Perm(len(e.ids))
	for _, i := range order {
		inPool := i >= first && i < last
		switch {
		case len(e.spares) < spares && !paidKey(i) && !heldIDs[e.ids[i]] && (size.pools == 1 || !inPool):
			e.spares = append(e.spares, i)
		case inPool && len(e.reads) < 1000:
			e.reads = append(e.reads, i)
		}
		if len(e.spares) == spares && (len(e.reads) == 1000 || len(e.reads) == size.perPool) {
			break
		}
	}
	if len(e.reads) == 0 {
		return errors.New("no key to read")
	}
	return pool.QueryRow(ctx, "SELECT id FROM keys WHERE pool = $1 ORDER BY id OFFSET $2 LIMIT 1",
		name, size.perPool/2).Scan(&e.middle)
}

// historyBurst runs e.burst claim-and-release cycles through the store,
// the i-th on pool(i): every fifth keeps its lease alive once, every tenth
// releases with a cooldown of burstCooldown, and before it the cooldowns
// that are over end, as the background job would end them.
func (e *endpointRun) historyBurst(ctx context.Context, st *store.Store, pool func(i int) string) error {
	for i := range e.burst {
		if i%10 == 0 {
			if _, err := st.EndCooldowns(ctx, 1000); err != nil {
				return fmt.Errorf("history: end cooldowns: %w", err)
			}
		}
		k, err := st.Claim(ctx, pool(i))
		if err != nil {
			return fmt.Errorf("history: claim: %w", err)
		}
		if i%5 == 0 {
			if _, err := st.KeepAlive(ctx, k.ID, k.LeaseToken); err != nil {
				return fmt.Errorf("history: keep-alive: %w", err)
			}
		}
		if i%10 == 0 {
			_, err = st.ReleaseWithCooldown(ctx, k.ID, k.LeaseToken, burstCooldown)
		} else {
			_, err = st.Release(ctx, k.ID, k.LeaseToken)
		}
		if err != nil {
			return fmt.Errorf("history: release: %w", err)
		}
	}
	return nil
}

// apiRequest is one call of the API.
type apiRequest struct {
	method, path, body string
	header             map[string]string
}

func get(path string) apiRequest  { return apiRequest{method: http.MethodGet, path: path} }
func head(path string) apiRequest { return apiRequest{method: http.MethodHead, path: path} }
func put(path string) apiRequest  { return apiRequest{method: http.MethodPut, path: path} }
func del(path string) apiRequest  { return apiRequest{method: http.MethodDelete, path: path} }
func post(path, body string) apiRequest {
	return apiRequest{method: http.MethodPost, path: path, body: body, header: map[string]string{"Content-Type": "application/json"}}
}

// sample is one measured call.
type sample struct {
	took    time.Duration
	buffers int64
}

// meter calls the API and reads what each call cost the database.
type meter struct {
	client *http.Client
	base   string
	// admin reads pg_stat_statements; nil when it cannot be read.
	admin   *pgx.Conn
	dbOID   uint32
	samples map[string][]sample
	order   []string
}

func newMeter(ctx context.Context, h *harness, base, dbName string) (*meter, error) {
	m := &meter{client: &http.Client{Timeout: 5 * time.Minute}, base: base, samples: map[string][]sample{}}
	if h.statements != "" {
		return m, nil
	}
	admin, err := pgx.Connect(ctx, h.adminURL)
	if err != nil {
		return nil, err
	}
	if err := admin.QueryRow(ctx, "SELECT oid FROM pg_database WHERE datname = $1", dbName).Scan(&m.dbOID); err != nil {
		admin.Close(ctx)
		return nil, err
	}
	m.admin = admin
	return m, nil
}

func (m *meter) close() {
	if m.admin != nil {
		m.admin.Close(context.Background())
	}
}

// statements reads the buffers and calls of every statement of the
// database so far (without the texts, which pg_stat_statements reads from
// a file).
func (m *meter) statements(ctx context.Context) (buffers, calls int64, err error) {
	if m.admin == nil {
		return 0, 0, nil
	}
	err = m.admin.QueryRow(ctx, `SELECT coalesce(sum(shared_blks_hit + shared_blks_read), 0)::bigint, coalesce(sum(calls), 0)::bigint
		FROM pg_stat_statements(false) WHERE dbid = $1`, m.dbOID).Scan(&buffers, &calls)
	return buffers, calls, err
}

// idle notes what the server had the database do on its own for two
// seconds: the figures count it against the calls.
func (m *meter) idle(ctx context.Context, res *endpointResults, size endpointSize, state statsState) error {
	if m.admin == nil {
		return nil
	}
	b0, c0, err := m.statements(ctx)
	if err != nil {
		return err
	}
	if err := sleepUntil(ctx, time.Now().Add(2*time.Second)); err != nil {
		return err
	}
	b1, c1, err := m.statements(ctx)
	if err != nil {
		return err
	}
	if c1 != c0 {
		res.note("%s, %s: the idle server ran %d statements (%d buffers) in 2 s, counted against the calls they fell among",
			size, state, c1-c0, b1-b0)
	}
	return nil
}

// do makes a call; a measured one is a sample of row. It fails on any
// answer but a 2xx.
func (m *meter) do(ctx context.Context, row string, r apiRequest, measured bool) ([]byte, error) {
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, m.base+r.path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	b0, _, err := m.statements(ctx)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	resp, err := m.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", r.method, r.path, err)
	}
	out, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", r.method, r.path, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%s %s: %s: %s", r.method, r.path, resp.Status, bytes.TrimSpace(out))
	}
	b1, _, err := m.statements(ctx)
	if err != nil {
		return nil, err
	}
	if measured {
		if _, ok := m.samples[row]; !ok {
			m.order = append(m.order, row)
		}
		m.samples[row] = append(m.samples[row], sample{took: took, buffers: b1 - b0})
	}
	return out, nil
}

func (m *meter) figure(row string) endpointFigure {
	s := m.samples[row]
	took := make([]time.Duration, len(s))
	var buffers int64
	for i, x := range s {
		took[i] = x.took
		buffers += x.buffers
	}
	f := endpointFigure{median: median(took), buffers: -1}
	if m.admin != nil && len(s) > 0 {
		f.buffers = float64(buffers) / float64(len(s))
	}
	return f
}

// leasedKey is what a claim answers that the next calls need.
type leasedKey struct {
	KeyID      string `json:"keyId"`
	LeaseToken string `json:"leaseToken"`
}

func parseLeased(body []byte) (leasedKey, error) {
	var k leasedKey
	if err := json.Unmarshal(body, &k); err != nil {
		return k, fmt.Errorf("a claim's answer: %w", err)
	}
	if k.KeyID == "" || k.LeaseToken == "" {
		return k, fmt.Errorf("a claim's answer has no key or no lease token: %s", body)
	}
	return k, nil
}

// measure calls every endpoint calls times after a warm-up.
func (e *endpointRun) measure(ctx context.Context, m *meter, calls int, state statsState) error {
	const warm = endpointWarmUp
	n := warm + calls
	pool := e.size.poolName(e.pool)
	q := neturl.QueryEscape
	pooled := "pool=" + q(pool)
	// Each state uses keys of its own where a call changes them for good.
	offset := int(state) * n
	each := func(row string, call func(i int) apiRequest) error {
		for i := range n {
			if _, err := m.do(ctx, row, call(i), i >= warm); err != nil {
				return fmt.Errorf("%s: %w", row, err)
			}
		}
		return nil
	}
	release := func(k leasedKey) apiRequest {
		return put("/keys/" + q(k.KeyID) + "?lease=" + q(k.LeaseToken))
	}
	claimThenRelease := func(row, releaseRow string, claim func(i int) apiRequest) error {
		for i := range n {
			body, err := m.do(ctx, row, claim(i), i >= warm)
			if err != nil {
				return fmt.Errorf("%s: %w", row, err)
			}
			k, err := parseLeased(body)
			if err != nil {
				return fmt.Errorf("%s: %w", row, err)
			}
			if _, err := m.do(ctx, releaseRow, release(k), releaseRow != "" && i >= warm); err != nil {
				return fmt.Errorf("release after %s: %w", row, err)
			}
		}
		return nil
	}
	read := func(i int) int { return e.reads[(offset+i)%len(e.reads)] }
	spare := func(kind, i int) int { return e.spares[(int(state)*2+kind)*n+i] }
	if len(e.spares) < 4*n {
		return fmt.Errorf("%d spare keys for %d deletions", len(e.spares), 4*n)
	}

	// What clients call.
	if err := claimThenRelease("claim: GET /keys?pool=", "release: PUT /keys/{id}?lease=", func(int) apiRequest {
		return get("/keys?" + pooled)
	}); err != nil {
		return err
	}
	if err := claimThenRelease("claim labelled: GET /keys?pool=&label="+paidLabel, "", func(int) apiRequest {
		return get("/keys?" + pooled + "&label=" + q(paidLabel))
	}); err != nil {
		return err
	}
	if err := claimThenRelease("claim with Idempotency-Key: GET /keys?pool=", "", func(i int) apiRequest {
		r := get("/keys?" + pooled)
		r.header = map[string]string{"Idempotency-Key": fmt.Sprintf("bench-%d-%d", state, i)}
		return r
	}); err != nil {
		return err
	}
	if err := each("keep-alive: PUT /keys/{id}/keepalive?lease=", func(i int) apiRequest {
		k := e.held[i%len(e.held)]
		return put(fmt.Sprintf("/keys/%s/keepalive?lease=%d", k.id, k.token))
	}); err != nil {
		return err
	}
	if err := each("GET /keys/{id}", func(i int) apiRequest { return get("/keys/" + e.ids[read(i)].String()) }); err != nil {
		return err
	}
	if err := each("HEAD /keys/{id}", func(i int) apiRequest { return head("/keys/" + e.ids[read(i)].String()) }); err != nil {
		return err
	}
	if err := each("GET /pools/{pool}/keys/{name}", func(i int) apiRequest {
		return get("/pools/" + q(pool) + "/keys/" + q(keyName(read(i))))
	}); err != nil {
		return err
	}
	if err := each("pool availability: HEAD /keys?pool=", func(int) apiRequest { return head("/keys?" + pooled) }); err != nil {
		return err
	}
	if err := each("create: POST /keys {count: 1}", func(int) apiRequest {
		return post("/keys", fmt.Sprintf(`{"count": 1, "pool": %q}`, pool))
	}); err != nil {
		return err
	}
	if err := each("import: POST /keys {keys: [1 named, labelled]}", func(i int) apiRequest {
		return post("/keys", fmt.Sprintf(`{"pool": %q, "keys": [{"name": "imported-%d-%d", "labels": {"tier": "free"}}]}`, pool, state, i))
	}); err != nil {
		return err
	}
	if err := each("DELETE /keys/{id}", func(i int) apiRequest { return del("/keys/" + e.ids[spare(0, i)].String()) }); err != nil {
		return err
	}
	if err := each("DELETE /pools/{pool}/keys/{name}", func(i int) apiRequest {
		k := spare(1, i)
		return del("/pools/" + q(e.poolOf(k)) + "/keys/" + q(keyName(k)))
	}); err != nil {
		return err
	}

	// What the dashboard and operators read.
	day := time.Now().Add(-24 * time.Hour).UTC().Format(time.RFC3339)
	reads := []struct{ row, path string }{
		{rowStats, "/stats"},
		{rowPools, "/pools"},
		{"GET /pools/{pool}", "/pools/" + q(pool)},
		{rowKeysPage, "/pools/" + q(pool) + "/keys?limit=20"},
		{"GET /pools/{pool}/keys?after=&limit=20 (middle page)", "/pools/" + q(pool) + "/keys?limit=20&after=" + e.middle.String()},
		{rowActivityPoll, "/activity?" + pooled + "&minutes=2"},
		{rowActivityHour, "/activity?" + pooled + "&minutes=60"},
		{"GET /activity?minutes=60 (all pools)", "/activity?minutes=60"},
		{rowDurationsHour, "/activity/lease-durations?" + pooled + "&minutes=60"},
		{"GET /activity/lease-durations?minutes=60 (all pools)", "/activity/lease-durations?minutes=60"},
		{rowCooldownsDay, "/reports/key-cooldowns?" + pooled + "&from=" + q(day)},
	}
	for _, rep := range reports.All {
		reads = append(reads,
			struct{ row, path string }{"GET /reports/" + rep.Name + "?pool=", "/reports/" + rep.Name + "?" + pooled},
			struct{ row, path string }{"GET /reports/" + rep.Name + " (all pools)", "/reports/" + rep.Name})
	}
	for _, r := range reads {
		if err := each(r.row, func(int) apiRequest { return get(r.path) }); err != nil {
			return err
		}
	}
	return nil
}
