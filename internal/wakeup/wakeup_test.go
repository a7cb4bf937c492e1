package wakeup_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/lease"
	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
	"github.com/tokenorchestrator/tokenorchestrator/internal/wakeup"
)

func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }

// quiet takes the hubs' logs: claims of a test's hub that outlive its
// database fail, and say so.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// bundle is a test's database, as a pool and a store over it.
type bundle struct {
	pool  *pgxpool.Pool
	store *store.Store
}

// setup gives the test its own database; configure, when set, adjusts the
// connection pool first.
func setup(t *testing.T, configure func(*pgxpool.Config), storeCfg store.Config) *bundle {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(testdb.New(t))
	require.NoError(t, err)
	if configure != nil {
		configure(cfg)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	storeCfg.KeyTTL, storeCfg.LeaseTTL = time.Hour, time.Hour
	st := store.New(pool, storeCfg)
	t.Cleanup(st.Close)
	return &bundle{pool: pool, store: st}
}

// registrations counts the pool's rows in pool_waiters that have not
// expired.
func (b *bundle) registrations(t *testing.T, pool string) int {
	t.Helper()
	var n int
	require.NoError(t, b.pool.QueryRow(context.Background(),
		"SELECT count(*) FROM pool_waiters WHERE pool = $1 AND expires_at > now()", pool).Scan(&n))
	return n
}

// waiting is one client waiting on the hub.
type waiting struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// wait starts a client waiting for a key of the pool for up to a minute;
// it leaves when the test ends.
func wait(t *testing.T, hub *wakeup.Hub, pool string) *waiting {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &waiting{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		_, w.err = hub.Wait(ctx, pool, time.Minute)
	}()
	t.Cleanup(func() {
		cancel()
		<-w.done
	})
	return w
}

// result waits for the end of the wait and returns its error.
func (w *waiting) result() error {
	<-w.done
	return w.err
}

// gate stands between the hub and the database for calls of one kind: it
// tells the test when each call arrives and when it has finished, and holds
// the calls that hold picks until the test lets them through.
type gate struct {
	hold     func(n int) bool // n counts the calls from 1
	n        atomic.Int64
	arrived  chan int
	let      chan struct{}
	finished chan int
}

func newGate(hold func(n int) bool) *gate {
	return &gate{hold: hold, arrived: make(chan int, 100), let: make(chan struct{}), finished: make(chan int, 100)}
}

func (g *gate) pass(call func() error) error {
	n := int(g.n.Add(1))
	g.arrived <- n
	if g.hold(n) {
		<-g.let
	}
	err := call()
	g.finished <- n
	return err
}

func heldFirst(n int) bool { return n == 1 }
func heldNone(int) bool    { return false }

// gatedStore is the store with registrations and withdrawals that pass
// through the gates.
type gatedStore struct {
	*store.Store
	registers, unregisters *gate
}

func (g gatedStore) RegisterWaiters(ctx context.Context, pool, replica string, generation int64, ttl time.Duration) error {
	return g.registers.pass(func() error { return g.Store.RegisterWaiters(ctx, pool, replica, generation, ttl) })
}

func (g gatedStore) UnregisterWaiters(ctx context.Context, pool, replica string, generation int64) error {
	return g.unregisters.pass(func() error { return g.Store.UnregisterWaiters(ctx, pool, replica, generation) })
}

// gatedHub is a hub over the store whose registrations and withdrawals
// pass through the gates.
func gatedHub(b *bundle, registers, unregisters *gate) *wakeup.Hub {
	return wakeup.New(gatedStore{Store: b.store, registers: registers, unregisters: unregisters}, wakeup.Config{
		Poll:   10 * time.Millisecond,
		Logger: quiet,
	})
}

// claimingStore is the store with its claims made by claim.
type claimingStore struct {
	*store.Store
	claim func(ctx context.Context, pool string, n int) ([]lease.Key, error)
}

func (c claimingStore) ClaimMany(ctx context.Context, pool string, n int) ([]lease.Key, error) {
	return c.claim(ctx, pool, n)
}

// The last waiter of a pool leaves and the hub withdraws its registration;
// the next waiter registers again before that withdrawal reaches the
// database. The withdrawal must not delete the new registration: while the
// hub believes it is registered, the database must hold its row, or freed
// keys of the pool are never announced to it.
func TestLateUnregisterLeavesTheNextRegistration(t *testing.T) {
	t.Parallel()
	b := setup(t, nil, store.Config{})
	registers, unregisters := newGate(heldNone), newGate(heldFirst)
	hub := gatedHub(b, registers, unregisters)

	first := wait(t, hub, "p")
	require.Equal(t, 1, <-registers.finished)
	first.cancel()
	require.ErrorIs(t, first.result(), context.Canceled)
	require.Equal(t, 1, <-unregisters.arrived, "the queue emptied: its registration is withdrawn")

	wait(t, hub, "p")
	require.Equal(t, 2, <-registers.finished, "a new queue registers again")
	unregisters.let <- struct{}{}
	require.Equal(t, 1, <-unregisters.finished)

	require.True(t, hub.Registered("p"))
	require.Equal(t, 1, b.registrations(t, "p"), "the hub believes it is registered, so the database must have its row")
}

// A registration that reaches the database after a newer one, and the
// withdrawal of the older queue after both, leave the newer registration in
// place.
func TestStaleRegisterAndUnregisterLeaveTheNewerRegistration(t *testing.T) {
	t.Parallel()
	b := setup(t, nil, store.Config{})
	_, err := b.store.Create(context.Background(), "p", 2)
	require.NoError(t, err)
	registers, unregisters := newGate(heldFirst), newGate(heldFirst)
	hub := gatedHub(b, registers, unregisters)

	// The first waiter's registration is held. A second waiter joins the
	// same queue and claims both keys, for itself and the first: the queue
	// empties and its withdrawal is held too.
	first := wait(t, hub, "p")
	require.Equal(t, 1, <-registers.arrived)
	second := wait(t, hub, "p")
	require.NoError(t, second.result())
	require.Equal(t, 1, <-unregisters.arrived)

	// A third waiter starts a new queue, which registers at once.
	wait(t, hub, "p")
	require.Equal(t, 2, <-registers.arrived)
	require.Equal(t, 2, <-registers.finished)

	// Then the first registration lands, then the first withdrawal.
	registers.let <- struct{}{}
	require.Equal(t, 1, <-registers.finished)
	require.NoError(t, first.result(), "the first waiter got the key claimed for it")
	unregisters.let <- struct{}{}
	require.Equal(t, 1, <-unregisters.finished)

	require.True(t, hub.Registered("p"))
	require.Equal(t, 1, b.registrations(t, "p"), "the hub believes it is registered, so the database must have its row")
}

// statements records every statement that the connections ran, by its
// sqlc name, with its arguments.
type statements struct {
	ended chan statement
}

type statement struct {
	name string
	args []any
}

type traceKey struct{}

var queryName = regexp.MustCompile(`-- name: (\w+)`)

func (s *statements) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	name := "(unnamed)"
	if m := queryName.FindStringSubmatch(data.SQL); m != nil {
		name = m[1]
	}
	return context.WithValue(ctx, traceKey{}, statement{name: name, args: data.Args})
}

func (s *statements) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryEndData) {
	if st, ok := ctx.Value(traceKey{}).(statement); ok {
		s.ended <- st
	}
}

// names reports whether the statement has the pool among its arguments.
func (s statement) names(pool string) bool {
	for _, arg := range s.args {
		switch v := arg.(type) {
		case string:
			if v == pool {
				return true
			}
		case []string:
			if slices.Contains(v, pool) {
				return true
			}
		}
	}
	return false
}

// Clients waiting on many pools that have no free key cost the database one
// statement per poll, not one per pool: a made-up pool name per request
// must not multiply the polling.
func TestWaitingOnManyPoolsCostsOneStatementPerPoll(t *testing.T) {
	t.Parallel()
	const pools = 100
	trace := &statements{ended: make(chan statement, 100000)}
	b := setup(t, func(cfg *pgxpool.Config) { cfg.ConnConfig.Tracer = trace }, store.Config{})
	hub := wakeup.New(b.store, wakeup.Config{
		Poll:   20 * time.Millisecond,
		Logger: quiet,
	})
	for i := range pools {
		wait(t, hub, fmt.Sprintf("made-up-%03d", i))
	}

	// Every waiter registers and tries a first claim.
	registered, claimed := 0, 0
	for registered < pools || claimed < pools {
		switch st := <-trace.ended; st.name {
		case "PoolWaitersRegister":
			registered++
		case "KeyClaim":
			claimed++
		}
	}
	// From then on, every poll of the first pool starts a round; count the
	// statements of three whole rounds.
	const watched = "made-up-000"
	for st := range trace.ended {
		if st.names(watched) {
			break
		}
	}
	for round := 1; round <= 3; round++ {
		var ran []string
		for st := range trace.ended {
			ran = append(ran, st.name)
			if st.names(watched) {
				break
			}
		}
		require.Equal(t, []string{"PoolWaitersFreePools"}, ran,
			"round %d of polling %d pools ran %d statements: %s", round, pools, len(ran), summary(ran))
	}
}

// summary counts statements by name.
func summary(names []string) string {
	counts := map[string]int{}
	for _, name := range names {
		counts[name]++
	}
	var parts []string
	for name, n := range counts {
		parts = append(parts, fmt.Sprintf("%s×%d", name, n))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

// However many pools are waited on, the hub's database calls use only a few
// of the connections at once, so that requests that do not wait still get
// one: here every claim for waiters holds its connection until the test
// lets it go, and a plain request is still served meanwhile.
func TestWaitersLeaveConnectionsForOtherRequests(t *testing.T) {
	t.Parallel()
	const conns, hubCalls = 3, 2
	b := setup(t, func(cfg *pgxpool.Config) { cfg.MaxConns = conns }, store.Config{QueryTimeout: 2 * time.Second})
	var (
		holding           = make(chan struct{}, 100)
		release           = make(chan struct{})
		inFlight, highest atomic.Int64
		mu                sync.Mutex
		releaseOnce       sync.Once
	)
	// Before the pool closes, which waits for the connections held here.
	letGo := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(letGo)
	slowClaim := func(ctx context.Context, pool string, n int) ([]lease.Key, error) {
		conn, err := b.pool.Acquire(ctx)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		highest.Store(max(highest.Load(), inFlight.Add(1)))
		mu.Unlock()
		holding <- struct{}{}
		<-release
		inFlight.Add(-1)
		conn.Release()
		return b.store.ClaimMany(ctx, pool, n)
	}
	hub := wakeup.New(claimingStore{Store: b.store, claim: slowClaim}, wakeup.Config{
		Poll:    time.Hour,
		DBCalls: hubCalls,
		Logger:  quiet,
	})
	for i := range 10 {
		wait(t, hub, fmt.Sprintf("pool-%d", i))
	}
	for range hubCalls {
		<-holding
	}

	_, err := b.store.Create(context.Background(), "plain", 1)
	require.NoError(t, err, "a request that does not wait gets a connection while the hub's calls are slow")
	letGo()
	require.LessOrEqual(t, highest.Load(), int64(hubCalls))
}

// Past MaxWaiters clients, or past MaxPools pools, a client is refused at
// once and costs nothing; a place that frees up takes the next one.
func TestWaitersBeyondTheCapsAreRefused(t *testing.T) {
	t.Parallel()
	b := setup(t, nil, store.Config{})
	hub := wakeup.New(b.store, wakeup.Config{
		Poll:       time.Hour,
		MaxWaiters: 3,
		MaxPools:   2,
		Logger:     quiet,
	})
	queued := func(waiters, pools int) {
		t.Helper()
		require.Eventually(t, func() bool {
			w, p := hub.Counts()
			return w == waiters && p == pools
		}, 10*time.Second, time.Millisecond)
	}
	refused := func(pool string, want error) {
		t.Helper()
		_, err := hub.Wait(context.Background(), pool, time.Minute)
		require.ErrorIs(t, err, want)
	}

	first := wait(t, hub, "a")
	wait(t, hub, "b")
	queued(2, 2)
	refused("c", wakeup.ErrTooManyPools)
	wait(t, hub, "a")
	queued(3, 2)
	refused("a", wakeup.ErrTooManyWaiters)
	refused("c", wakeup.ErrTooManyWaiters)
	queued(3, 2)

	first.cancel()
	require.ErrorIs(t, first.result(), context.Canceled)
	wait(t, hub, "b")
	queued(3, 2)
}

// A configuration out of range is refused at once, with every fault named;
// zero values are the defaults.
func TestInvalidConfigurationIsRefused(t *testing.T) {
	t.Parallel()
	cfg := wakeup.New(nil, wakeup.Config{}).Settings()
	require.Equal(t, wakeup.PollDefault, cfg.Poll)
	require.Equal(t, wakeup.DBCallsDefault, cfg.DBCalls)
	require.Equal(t, wakeup.MaxWaitersDefault, cfg.MaxWaiters)
	require.Equal(t, wakeup.MaxPoolsDefault, cfg.MaxPools)
	require.PanicsWithError(t, "wakeup: invalid configuration: "+
		"Poll must be positive (zero for the default), not -1s\n"+
		"DBCalls must be positive (zero for the default), not -1\n"+
		"MaxPools must be positive (zero for the default), not -2",
		func() { wakeup.New(nil, wakeup.Config{Poll: -time.Second, DBCalls: -1, MaxPools: -2}) })
}
