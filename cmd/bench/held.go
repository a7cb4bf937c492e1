package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/loadgen"
)

// heldSchedule is the timing of a held-snapshot run: load throughout, a
// snapshot held open from leadIn for hold, then tail more of load, all
// measured in windows of window.
type heldSchedule struct {
	leadIn, hold, tail, window time.Duration
}

func (s heldSchedule) total() time.Duration { return s.leadIn + s.hold + s.tail }

type phase int

const (
	beforeHold phase = iota
	underHold
	afterHold
)

func (p phase) String() string {
	return [...]string{"before", "HELD", "after"}[p]
}

// phaseOf places the window starting at start: before the hold only when
// it ends by the time the snapshot is taken, after only when it starts once
// the snapshot is gone, and under the hold whenever it overlaps it.
func (s heldSchedule) phaseOf(start time.Duration) phase {
	switch {
	case start+s.window <= s.leadIn:
		return beforeHold
	case start >= s.leadIn+s.hold:
		return afterHold
	default:
		return underHold
	}
}

// heldWindow is one window of a held-snapshot run.
type heldWindow struct {
	start time.Duration
	phase phase
	rate  float64
	// ratio is rate over the mean rate of the windows before the hold.
	ratio float64
	// claimP99 is known for runs through HTTP; cycleMean (claim and
	// release) for pgbench, which reports no percentiles per interval.
	claimP99, cycleMean time.Duration
	// statements is what the run's statements (heldRun.statements) cost
	// in the window.
	statements map[string]statementWindow
}

// heldRun is a held-snapshot run of the service or of the floor.
type heldRun struct {
	name          string
	clients, pool int
	windows       []heldWindow
	// baseline is the mean rate of the windows before the hold.
	baseline float64
	// opened and closed are when the snapshot was taken and given up,
	// counted from the start of the load.
	opened, closed time.Duration
	// statements are the statements that read the most buffers over the
	// run, most first; empty when pg_stat_statements cannot be read.
	statements []string
	// statementsNote says why there are no statement figures.
	statementsNote string
}

// sampleStatements measures the run's statements window by window, from
// begin, on the database dbName; attach puts the figures on the run. stop
// ends the sampling and waits for it, so that a run that fails does not
// leave it reading until the schedule's end; after attach it does nothing.
func (h *harness) sampleStatements(ctx context.Context, dbName string, begin time.Time, s heldSchedule) (attach func(*heldRun), stop func()) {
	if h.statements != "" {
		return func(r *heldRun) { r.statementsNote = h.statements }, func() {}
	}
	// Reset, so that the run's statements are the only ones counted.
	if err := resetStatements(ctx, h.adminURL); err != nil {
		return func(r *heldRun) { r.statementsNote = err.Error() }, func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan *statementSampler, 1)
	go func() { done <- sampleStatements(ctx, h.adminURL, dbName, begin, s.window, int(s.total()/s.window)) }()
	wait := sync.OnceValue(func() *statementSampler { return <-done })
	stop = func() {
		cancel()
		wait()
	}
	return func(r *heldRun) {
		got := wait()
		cancel()
		if got.err != nil {
			r.statementsNote = "pg_stat_statements: " + got.err.Error()
			return
		}
		names, windows := got.windows()
		r.statements = names
		for i := range r.windows {
			if k := int(r.windows[i].start / s.window); k < len(windows) {
				r.windows[i].statements = windows[k]
			}
		}
	}, stop
}

func resetStatements(ctx context.Context, adminURL string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, "SELECT pg_stat_statements_reset()")
	return err
}

// finish sets each window's phase and its ratio to the windows before the
// hold.
func (r *heldRun) finish(s heldSchedule) {
	sum, n := 0.0, 0
	for i := range r.windows {
		r.windows[i].phase = s.phaseOf(r.windows[i].start)
		if r.windows[i].phase == beforeHold {
			sum += r.windows[i].rate
			n++
		}
	}
	if n == 0 {
		return
	}
	r.baseline = sum / float64(n)
	for i := range r.windows {
		if r.baseline > 0 {
			r.windows[i].ratio = r.windows[i].rate / r.baseline
		}
	}
}

// target is one of the held-snapshot goals and whether a run met it.
type target struct {
	goal   string
	met    bool
	actual string
}

const (
	heldMinRatio      = 0.75
	heldMaxClaimP99   = 50 * time.Millisecond
	heldRecoveryRatio = 0.90
)

// heldTargets checks a run against the goals for a held snapshot. withP99
// is false for runs that measure no claim percentile (the floor).
func heldTargets(r heldRun, withP99 bool) []target {
	lowest, lowestAt := math.Inf(1), time.Duration(-1)
	var worstP99 time.Duration
	var firstAfter *heldWindow
	for i, w := range r.windows {
		if w.phase == underHold && w.ratio < lowest {
			lowest, lowestAt = w.ratio, w.start
		}
		worstP99 = max(worstP99, w.claimP99)
		if w.phase == afterHold && firstAfter == nil {
			firstAfter = &r.windows[i]
		}
	}
	var out []target
	if lowestAt < 0 {
		out = append(out, target{goal: fmt.Sprintf("every window under the hold ≥ %.0f%% of before", heldMinRatio*100), actual: "no window under the hold"})
	} else {
		out = append(out, target{goal: fmt.Sprintf("every window under the hold ≥ %.0f%% of before", heldMinRatio*100),
			met: lowest >= heldMinRatio, actual: fmt.Sprintf("lowest %.0f%% (window at %s)", lowest*100, lowestAt)})
	}
	if withP99 {
		out = append(out, target{goal: fmt.Sprintf("claim p99 < %s in every window", heldMaxClaimP99),
			met: len(r.windows) > 0 && worstP99 < heldMaxClaimP99, actual: "highest " + ms(worstP99)})
	}
	if firstAfter == nil {
		out = append(out, target{goal: fmt.Sprintf("first window after the hold ≥ %.0f%% of before", heldRecoveryRatio*100), actual: "no window after the hold"})
	} else {
		out = append(out, target{goal: fmt.Sprintf("first window after the hold ≥ %.0f%% of before", heldRecoveryRatio*100),
			met: firstAfter.ratio >= heldRecoveryRatio, actual: fmt.Sprintf("%.0f%%", firstAfter.ratio*100)})
	}
	return out
}

// progressWindows turns pgbench's progress reports into windows: the
// report at k·width closes window k-1. Reports that fit no window (pgbench
// may print one more at the very end) are left out.
func progressWindows(lines []progressLine, width time.Duration, n int) []heldWindow {
	var out []heldWindow
	for _, l := range lines {
		k := int(math.Round(float64(l.at)/float64(width))) - 1
		if k < 0 || k >= n || (len(out) > 0 && out[len(out)-1].start >= time.Duration(k)*width) {
			continue
		}
		out = append(out, heldWindow{start: time.Duration(k) * width, rate: l.tps, cycleMean: l.latency})
	}
	return out
}

// snapshotHolder takes a snapshot on its own connection and gives it up on
// schedule.
type snapshotHolder struct {
	conn           *pgx.Conn
	opened, closed time.Time
}

// hold waits until leadIn after begin, takes a snapshot in a REPEATABLE READ
// transaction (the first read takes it), keeps it for s.hold and commits.
// Nothing may clean up row versions newer than the snapshot meanwhile.
func (sh *snapshotHolder) hold(ctx context.Context, begin time.Time, s heldSchedule) error {
	if err := sleepUntil(ctx, begin.Add(s.leadIn)); err != nil {
		return err
	}
	sh.opened = time.Now()
	if _, err := sh.conn.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ"); err != nil {
		return err
	}
	var one int
	if err := sh.conn.QueryRow(ctx, "SELECT 1 FROM keys LIMIT 1").Scan(&one); err != nil {
		return err
	}
	// The point of the scenario: make sure the transaction does hold
	// back the cleanup horizon.
	var holds bool
	if err := sh.conn.QueryRow(ctx, "SELECT backend_xmin IS NOT NULL FROM pg_stat_activity WHERE pid = pg_backend_pid()").Scan(&holds); err != nil {
		return err
	}
	if !holds {
		return errors.New("the held transaction has no snapshot (backend_xmin is null)")
	}
	if err := sleepUntil(ctx, sh.opened.Add(s.hold)); err != nil {
		return err
	}
	_, err := sh.conn.Exec(ctx, "COMMIT")
	sh.closed = time.Now()
	return err
}

func sleepUntil(ctx context.Context, t time.Time) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Until(t)):
		return nil
	}
}

// heldSnapshot runs the service through HTTP with a snapshot held in the
// middle of the run, then the floor through pgbench on the same schedule.
func (h *harness) heldSnapshot(ctx context.Context, poolSize, clients int, s heldSchedule) ([]heldRun, error) {
	service, err := h.heldService(ctx, poolSize, clients, s)
	if err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	service.finish(s)
	floor, err := h.heldFloor(ctx, poolSize, clients, s)
	if err != nil {
		return []heldRun{service}, fmt.Errorf("floor: %w", err)
	}
	floor.finish(s)
	return []heldRun{service, floor}, nil
}

func (h *harness) heldService(ctx context.Context, poolSize, clients int, s heldSchedule) (heldRun, error) {
	return h.heldServiceOn(ctx, "service (HTTP)", poolSize, clients, s, nil)
}

// heldServiceOn runs the service under load with a snapshot held on the
// connection that holdOn returns for the bench database (nil: the
// primary), and env for the servers; holdOn may return a cleanup.
func (h *harness) heldServiceOn(ctx context.Context, name string, poolSize, clients int, s heldSchedule,
	holdOn func(ctx context.Context, url string) (holdURL string, env []string, cleanup func(), err error)) (heldRun, error) {
	r := heldRun{name: name, clients: clients, pool: poolSize}
	url, err := h.freshDB(ctx)
	if err != nil {
		return r, err
	}
	if err := loadKeys(ctx, url, "bench", poolSize); err != nil {
		return r, err
	}
	holdURL, env := url, []string(nil)
	if holdOn != nil {
		var cleanup func()
		if holdURL, env, cleanup, err = holdOn(ctx, url); err != nil {
			return r, err
		}
		defer cleanup()
	}
	servers, err := h.startServers(ctx, url, 1, env)
	if err != nil {
		return r, err
	}
	defer stopServers(servers)
	conn, err := pgx.Connect(ctx, holdURL)
	if err != nil {
		return r, err
	}
	defer conn.Close(context.Background())
	if _, err := loadgen.Run(ctx, loadgen.Config{Servers: urls(servers), Pool: "bench", Clients: clients, Duration: time.Second}); err != nil {
		return r, err
	}
	type outcome struct {
		res loadgen.Result
		err error
	}
	done := make(chan outcome, 1)
	begin := time.Now()
	attach, stop := h.sampleStatements(ctx, benchDB, begin, s)
	defer stop()
	go func() {
		res, err := loadgen.Run(ctx, loadgen.Config{Servers: urls(servers), Pool: "bench", Clients: clients, Duration: s.total(), Window: s.window})
		done <- outcome{res, err}
	}()
	holder := &snapshotHolder{conn: conn}
	holdErr := holder.hold(ctx, begin, s)
	out := <-done
	if holdErr != nil {
		return r, fmt.Errorf("held snapshot: %w", holdErr)
	}
	if out.err != nil {
		return r, out.err
	}
	r.opened, r.closed = holder.opened.Sub(out.res.Started), holder.closed.Sub(out.res.Started)
	for _, w := range out.res.Windows {
		r.windows = append(r.windows, heldWindow{start: w.Start, rate: w.CyclesPerSecond(), claimP99: w.ClaimPercentile(99)})
	}
	attach(&r)
	return r, nil
}

func (h *harness) heldFloor(ctx context.Context, poolSize, clients int, s heldSchedule) (heldRun, error) {
	r := heldRun{name: "bare floor (pgbench)", clients: clients, pool: poolSize}
	url, err := h.freshFloor(ctx, poolSize)
	if err != nil {
		return r, err
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return r, err
	}
	defer conn.Close(context.Background())
	type outcome struct {
		out pgbenchOutput
		err error
	}
	done := make(chan outcome, 1)
	// pgbench's clock starts once its clients are connected, a moment after
	// this one; its reports therefore lag the schedule by that moment.
	begin := time.Now()
	attach, stop := h.sampleStatements(ctx, floorDB, begin, s)
	defer stop()
	go func() {
		out, err := runPgbench(ctx, h.pgbench, pgbenchRun{url: url, script: floorScript, clients: clients,
			duration: s.total(), progress: s.window})
		done <- outcome{out, err}
	}()
	holder := &snapshotHolder{conn: conn}
	holdErr := holder.hold(ctx, begin, s)
	out := <-done
	if holdErr != nil {
		return r, fmt.Errorf("held snapshot: %w", holdErr)
	}
	if out.err != nil {
		return r, out.err
	}
	r.opened, r.closed = holder.opened.Sub(begin), holder.closed.Sub(begin)
	r.windows = progressWindows(out.out.progress, s.window, int(s.total()/s.window))
	attach(&r)
	return r, nil
}
