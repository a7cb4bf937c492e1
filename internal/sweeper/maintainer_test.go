package sweeper_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
	"github.com/tokenorchestrator/tokenorchestrator/internal/sweeper"
)

// fakeStore counts the calls of each statement and answers every batch
// with rows rows (fewer than a batch: one call drains it) and err.
type fakeStore struct {
	rows int
	err  error

	mu    sync.Mutex
	calls map[string]int
}

func newFakeStore(rows int) *fakeStore { return &fakeStore{rows: rows, calls: map[string]int{}} }

func (f *fakeStore) call(name string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[name]++
	return f.rows, f.err
}

// taken returns the calls so far and starts counting again.
func (f *fakeStore) taken() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	calls := f.calls
	f.calls = map[string]int{}
	return calls
}

func (f *fakeStore) total() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		n += c
	}
	return n
}

func (f *fakeStore) ReleaseEndedLeases(context.Context, int) (int, error) {
	return f.call("ReleaseEndedLeases")
}
func (f *fakeStore) DeleteExpired(context.Context, int) (int, error) { return f.call("DeleteExpired") }
func (f *fakeStore) DeleteExpiredWaiters(context.Context, int) (int, error) {
	return f.call("DeleteExpiredWaiters")
}
func (f *fakeStore) DeleteHistoryOlderThan(context.Context, time.Duration, int) (int, error) {
	return f.call("DeleteHistoryOlderThan")
}
func (f *fakeStore) FoldHistory(context.Context, int) (int, bool, error) {
	n, err := f.call("FoldHistory")
	return n, true, err
}
func (f *fakeStore) FoldCounts(context.Context) (int, error) { return f.call("FoldCounts") }
func (f *fakeStore) RemoveEmptyPools(context.Context, int) (int, error) {
	return f.call("RemoveEmptyPools")
}
func (f *fakeStore) CleanupHorizon(context.Context) (store.Horizon, error) {
	_, err := f.call("CleanupHorizon")
	return store.Horizon{}, err
}
func (f *fakeStore) DeleteExpiredClaimRequests(context.Context, int) (int, error) {
	return f.call("DeleteExpiredClaimRequests")
}
func (f *fakeStore) EndCooldowns(context.Context, int) (int, error) { return f.call("EndCooldowns") }

// passes counts the passes that OnPass is told of, by service.
type passes struct {
	mu sync.Mutex
	n  map[string]int
}

func newPasses() *passes { return &passes{n: map[string]int{}} }

func (p *passes) observe(pass sweeper.Pass) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n[pass.Service]++
}

func (p *passes) count(service string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n[service]
}

func (p *passes) total() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range p.n {
		n += c
	}
	return n
}

// everyServicePassed reports whether every service has passed at least
// once.
func (p *passes) everyServicePassed() bool {
	for _, name := range sweeper.ServiceNames() {
		if p.count(name) == 0 {
			return false
		}
	}
	return true
}

var discard = slog.New(slog.DiscardHandler)

// quick is a configuration whose every service, the horizon check
// included, passes every few milliseconds.
func quick(cfg sweeper.Config) sweeper.Config {
	const every = 5 * time.Millisecond
	cfg.Interval, cfg.HistoryRetentionInterval, cfg.ClaimRequestInterval, cfg.HorizonInterval = every, every, every, every
	cfg.SnapshotAgeWarning = time.Hour
	cfg.Logger = discard
	return cfg
}

// Each service does its own chore and no other: a pass calls its
// statements alone and counts what they did under its own name, and a
// failed statement fails its pass.
func TestEachServiceDoesItsOwnChore(t *testing.T) {
	t.Parallel()
	st := newFakeStore(3)
	m := sweeper.New(st, sweeper.Config{SnapshotAgeWarning: time.Hour})
	var names []string
	for _, s := range m.Services() {
		names = append(names, s.Name())
	}
	require.Equal(t, sweeper.ServiceNames(), names, "one service per chore, in order")

	for _, tc := range []struct {
		service string
		calls   map[string]int
		result  sweeper.Result
	}{
		{sweeper.ServiceLeases, map[string]int{"ReleaseEndedLeases": sweeper.LeaseWorkersDefault},
			sweeper.Result{LeasesReleased: 3 * sweeper.LeaseWorkersDefault}},
		{sweeper.ServiceCooldowns, map[string]int{"EndCooldowns": 1}, sweeper.Result{CooldownsEnded: 3}},
		{sweeper.ServiceKeys, map[string]int{"DeleteExpired": 1}, sweeper.Result{KeysExpired: 3}},
		{sweeper.ServiceWaiters, map[string]int{"DeleteExpiredWaiters": 1}, sweeper.Result{WaitersExpired: 3}},
		{sweeper.ServicePoolCounts, map[string]int{"FoldCounts": 1, "RemoveEmptyPools": 1},
			sweeper.Result{CountChangesFolded: 3, EmptyPoolsRemoved: 3}},
		{sweeper.ServiceClaimRequests, map[string]int{"DeleteExpiredClaimRequests": 1}, sweeper.Result{ClaimRequestsDeleted: 3}},
		{sweeper.ServiceHistoryRetention, map[string]int{"DeleteHistoryOlderThan": 1}, sweeper.Result{HistoryDeleted: 3}},
		{sweeper.ServiceHistoryRollups, map[string]int{"FoldHistory": 1}, sweeper.Result{HistoryFolded: 3}},
		{sweeper.ServiceHorizon, map[string]int{"CleanupHorizon": 1}, sweeper.Result{}},
	} {
		s := m.Service(tc.service)
		require.NotNil(t, s, tc.service)
		require.Equal(t, tc.result, s.RunOnce(context.Background()), tc.service)
		require.Equal(t, tc.calls, st.taken(), tc.service)
	}

	boom := errors.New("boom")
	st.err = boom
	for _, s := range m.Services() {
		require.ErrorIs(t, s.RunOnce(context.Background()).Err, boom, s.Name())
	}
	require.ErrorIs(t, m.RunOnce(context.Background()).Err, boom)
}

// The maintainer starts every service and stops them all: once Stop has
// returned no statement runs, and the services start again.
func TestMaintainerStartsAndStopsEveryService(t *testing.T) {
	t.Parallel()
	st := newFakeStore(0)
	seen := newPasses()
	m := sweeper.New(st, quick(sweeper.Config{OnPass: seen.observe}))
	require.Len(t, m.Services(), len(sweeper.ServiceNames()))
	requireStarted := func(want bool) {
		t.Helper()
		require.Equal(t, want, m.Started())
		for _, s := range m.Services() {
			require.Equal(t, want, s.Started(), s.Name())
		}
	}
	requireStarted(false)
	m.Stop() // before Start: nothing to do

	ctx := context.Background()
	require.NoError(t, m.Start(ctx))
	require.NoError(t, m.Start(ctx), "a second Start while started changes nothing")
	requireStarted(true)
	require.Eventually(t, seen.everyServicePassed, 10*time.Second, 5*time.Millisecond, "every service passes")

	m.Stop()
	requireStarted(false)
	calls, told := st.total(), seen.total()
	time.Sleep(50 * time.Millisecond) // ten intervals
	require.Equal(t, calls, st.total(), "no statement after Stop")
	require.Equal(t, told, seen.total(), "no pass after Stop")

	require.NoError(t, m.Start(ctx))
	requireStarted(true)
	require.Eventually(t, func() bool { return seen.total() > told }, 10*time.Second, 5*time.Millisecond, "started again")
	m.Stop()
	requireStarted(false)
}

// The end of Start's context stops every service too.
func TestMaintainerStopsWithItsContext(t *testing.T) {
	t.Parallel()
	st := newFakeStore(0)
	seen := newPasses()
	m := sweeper.New(st, quick(sweeper.Config{OnPass: seen.observe}))
	ctx, cancel := context.WithCancel(context.Background())
	require.NoError(t, m.Start(ctx))
	require.Eventually(t, seen.everyServicePassed, 10*time.Second, 5*time.Millisecond)
	cancel()
	require.Eventually(t, func() bool {
		calls := st.total()
		time.Sleep(30 * time.Millisecond)
		return st.total() == calls
	}, 10*time.Second, time.Millisecond, "the services stop with the context")
	m.Stop()
}

// Each service passes at its own interval: the chores that bound the
// deadlines clients see at Interval, the cleanups less often, and none
// more often than its interval allows.
func TestEachServicePassesAtItsOwnInterval(t *testing.T) {
	t.Parallel()
	st := newFakeStore(0)
	seen := newPasses()
	cfg := sweeper.Config{
		Interval:                 10 * time.Millisecond,
		ClaimRequestInterval:     100 * time.Millisecond,
		HistoryRetentionInterval: 200 * time.Millisecond,
		HorizonInterval:          50 * time.Millisecond,
		SnapshotAgeWarning:       time.Hour,
		Logger:                   discard,
		OnPass:                   seen.observe,
	}
	m := sweeper.New(st, cfg)
	intervals := map[string]time.Duration{
		sweeper.ServiceLeases: cfg.Interval, sweeper.ServiceCooldowns: cfg.Interval, sweeper.ServiceKeys: cfg.Interval,
		sweeper.ServiceWaiters: cfg.Interval, sweeper.ServicePoolCounts: cfg.Interval, sweeper.ServiceHistoryRollups: cfg.Interval,
		sweeper.ServiceClaimRequests:    cfg.ClaimRequestInterval,
		sweeper.ServiceHistoryRetention: cfg.HistoryRetentionInterval,
		sweeper.ServiceHorizon:          cfg.HorizonInterval,
	}
	for _, s := range m.Services() {
		require.Equal(t, intervals[s.Name()], s.Interval(), s.Name())
	}

	start := time.Now()
	require.NoError(t, m.Start(context.Background()))
	require.Eventually(t, func() bool { return seen.count(sweeper.ServiceHistoryRetention) >= 3 }, 20*time.Second, 5*time.Millisecond)
	m.Stop()
	elapsed := time.Since(start)
	for name, interval := range intervals {
		require.LessOrEqual(t, seen.count(name), int(elapsed/interval), "%s passed more often than every %s in %s", name, interval, elapsed)
	}
	require.Greater(t, seen.count(sweeper.ServiceLeases), 2*seen.count(sweeper.ServiceClaimRequests))
	require.Greater(t, seen.count(sweeper.ServiceClaimRequests), seen.count(sweeper.ServiceHistoryRetention))
}

// Unset, the intervals of the cleanups are their defaults, or Interval
// when it is longer; the horizon check runs only when asked for.
func TestDefaultIntervals(t *testing.T) {
	t.Parallel()
	intervals := func(cfg sweeper.Config) map[string]time.Duration {
		out := map[string]time.Duration{}
		for _, s := range sweeper.New(newFakeStore(0), cfg).Services() {
			out[s.Name()] = s.Interval()
		}
		return out
	}
	got := intervals(sweeper.Config{})
	require.Equal(t, map[string]time.Duration{
		sweeper.ServiceLeases: time.Second, sweeper.ServiceCooldowns: time.Second, sweeper.ServiceKeys: time.Second,
		sweeper.ServiceWaiters: time.Second, sweeper.ServicePoolCounts: time.Second, sweeper.ServiceHistoryRollups: time.Second,
		sweeper.ServiceClaimRequests: 10 * time.Second, sweeper.ServiceHistoryRetention: time.Minute,
	}, got, "no horizon check without SnapshotAgeWarning")

	got = intervals(sweeper.Config{Interval: 20 * time.Millisecond, SnapshotAgeWarning: time.Minute})
	require.Equal(t, 20*time.Millisecond, got[sweeper.ServiceLeases])
	require.Equal(t, 10*time.Second, got[sweeper.ServiceClaimRequests])
	require.Equal(t, time.Minute, got[sweeper.ServiceHistoryRetention])
	require.Equal(t, 10*time.Second, got[sweeper.ServiceHorizon])

	got = intervals(sweeper.Config{Interval: 5 * time.Minute})
	require.Equal(t, 5*time.Minute, got[sweeper.ServiceClaimRequests], "never more often than Interval")
	require.Equal(t, 5*time.Minute, got[sweeper.ServiceHistoryRetention])
}

// While this replica does not lead, no service passes; once it leads,
// every one does.
func TestEveryServiceWaitsForTheLead(t *testing.T) {
	t.Parallel()
	st := newFakeStore(0)
	seen := newPasses()
	var leading atomic.Bool
	asked := make(chan struct{}, 1)
	m := sweeper.New(st, quick(sweeper.Config{OnPass: seen.observe, Leading: func() bool {
		select {
		case asked <- struct{}{}:
		default:
		}
		return leading.Load()
	}}))
	require.NoError(t, m.Start(context.Background()))
	defer m.Stop()
	for range 20 { // twenty ticks at least
		<-asked
	}
	require.Zero(t, st.total(), "no statement while another replica leads")
	require.Zero(t, seen.total())

	leading.Store(true)
	require.Eventually(t, seen.everyServicePassed, 10*time.Second, 5*time.Millisecond)
}

// Every pass of every service is a span of its own, named sweeper.pass,
// that says which service and what it did.
func TestEveryServicesPassIsTraced(t *testing.T) {
	t.Parallel()
	exporter := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exporter))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	st := newFakeStore(2)
	seen := newPasses()
	m := sweeper.New(st, quick(sweeper.Config{OnPass: seen.observe, TracerProvider: tp}))
	require.NoError(t, m.Start(context.Background()))
	require.Eventually(t, seen.everyServicePassed, 10*time.Second, 5*time.Millisecond)
	m.Stop()

	attrs := map[string]map[attribute.Key]attribute.Value{}
	for _, span := range exporter.GetSpans() {
		require.Equal(t, "sweeper.pass", span.Name)
		byKey := map[attribute.Key]attribute.Value{}
		for _, kv := range span.Attributes {
			byKey[kv.Key] = kv.Value
		}
		attrs[byKey["sweeper.service"].AsString()] = byKey
	}
	for _, name := range sweeper.ServiceNames() {
		require.Contains(t, attrs, name)
	}
	leases := attrs[sweeper.ServiceLeases]
	require.EqualValues(t, 2*sweeper.LeaseWorkersDefault, leases["sweeper.leases_released"].AsInt64())
	require.EqualValues(t, 2*sweeper.LeaseWorkersDefault, leases["sweeper.rows"].AsInt64())
	require.NotContains(t, leases, attribute.Key("sweeper.keys_expired"), "another service's count")
	require.EqualValues(t, 4, attrs[sweeper.ServicePoolCounts]["sweeper.rows"].AsInt64(), "counts folded and pools removed")
}

// newErr returns the error New panics with, or nil.
func newErr(cfg sweeper.Config) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = r.(error)
		}
	}()
	sweeper.New(newFakeStore(0), cfg)
	return nil
}

// A configuration out of range is refused at once, with every fault
// named; zero values are the defaults.
func TestInvalidConfigurationIsRefused(t *testing.T) {
	t.Parallel()
	require.NoError(t, newErr(sweeper.Config{}))
	for _, tc := range []struct {
		cfg  sweeper.Config
		want string
	}{
		{sweeper.Config{Interval: -time.Second}, "Interval must be positive (zero for the default), not -1s"},
		{sweeper.Config{HistoryRetentionInterval: -time.Second}, "HistoryRetentionInterval must be positive (zero for the default), not -1s"},
		{sweeper.Config{ClaimRequestInterval: -time.Second}, "ClaimRequestInterval must be positive (zero for the default), not -1s"},
		{sweeper.Config{HorizonInterval: -time.Second}, "HorizonInterval must be positive (zero for the default), not -1s"},
		{sweeper.Config{HistoryRetention: -time.Hour}, "HistoryRetention must be positive (zero for the default), not -1h0m0s"},
		{sweeper.Config{BatchSize: -5}, "BatchSize must be positive (zero for the default), not -5"},
		{sweeper.Config{LeaseWorkers: -1}, "LeaseWorkers must be positive (zero for the default), not -1"},
		{sweeper.Config{HistoryTimePerPass: -time.Second}, "HistoryTimePerPass must be positive (zero for half of each service's interval), not -1s"},
		{sweeper.Config{SnapshotAgeWarning: -time.Minute}, "SnapshotAgeWarning must be positive (zero turns the check off), not -1m0s"},
	} {
		err := newErr(tc.cfg)
		require.ErrorContains(t, err, "sweeper: invalid configuration: ", tc.want)
		require.ErrorContains(t, err, tc.want)
	}

	err := newErr(sweeper.Config{Interval: -time.Second, BatchSize: -5})
	require.ErrorContains(t, err, "Interval must be positive")
	require.ErrorContains(t, err, "BatchSize must be positive", "every fault at once")
}
