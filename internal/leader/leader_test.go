package leader

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }

type candidate struct {
	elector *Elector
	pool    *pgxpool.Pool
}

func start(t *testing.T, dbURL string, ttl time.Duration) *candidate {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), dbURL)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	// A connection first: an attempt gives up after a third of the term
	// (100 ms here), and under a full test run opening a connection can
	// take longer, so that nobody led for most of the first second. What
	// the tests measure is the election, not how fast connections open.
	require.NoError(t, pool.Ping(context.Background()))
	c := &candidate{elector: New(store.New(pool, store.Config{}), Config{Name: "sweeper", TTL: ttl}), pool: pool}
	require.NoError(t, c.elector.Start(context.Background()))
	t.Cleanup(c.elector.Stop)
	return c
}

// leaders samples who leads until d has passed and fails if two lead at
// once; it returns the share of samples with a leader and the last leader.
func leaders(t *testing.T, cs []*candidate, d time.Duration) (float64, *candidate) {
	t.Helper()
	var samples, led int
	var last *candidate
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		var now []*candidate
		for _, c := range cs {
			if c.elector.Leading() {
				now = append(now, c)
			}
		}
		require.LessOrEqual(t, len(now), 1, "two replicas lead at once")
		samples++
		if len(now) == 1 {
			led++
			last = now[0]
		}
	}
	return float64(led) / float64(samples), last
}

// One replica leads at a time; when it dies without resigning, another
// takes over once its term has expired; when it stops and resigns, another
// takes over at its next attempt.
func TestOneLeaderAndTakeOver(t *testing.T) {
	t.Parallel()
	const ttl = 300 * time.Millisecond
	dbURL := testdb.New(t)
	cs := []*candidate{start(t, dbURL, ttl), start(t, dbURL, ttl), start(t, dbURL, ttl)}

	share, first := leaders(t, cs, time.Second)
	require.NotNil(t, first)
	require.Greater(t, share, 0.5, "someone leads most of the time")

	// The leader dies: its connections go, so it can neither renew nor
	// resign. Another must lead within a term and an attempt interval.
	first.pool.Close()
	died := time.Now()
	var rest []*candidate
	for _, c := range cs {
		if c != first {
			rest = append(rest, c)
		}
	}
	var next *candidate
	for next == nil {
		require.Less(t, time.Since(died), 3*ttl, "no replica took over")
		_, next = leaders(t, rest, 10*time.Millisecond)
	}
	t.Logf("took over %s after the leader died (term %s)", time.Since(died).Round(time.Millisecond), ttl)

	// A leader that stops resigns: the last one takes over without waiting
	// for the term to expire.
	next.elector.Stop()
	stopped := time.Now()
	var last *candidate
	for _, c := range rest {
		if c != next {
			last = c
		}
	}
	for !last.elector.Leading() {
		require.Less(t, time.Since(stopped), ttl, "resigning did not hand over before the term's end")
		time.Sleep(5 * time.Millisecond)
	}
}

// Leading is the database's say: a second elector with another identity
// cannot renew a term it does not hold.
func TestAnotherReplicaCannotRenew(t *testing.T) {
	t.Parallel()
	pool, err := pgxpool.New(context.Background(), testdb.New(t))
	require.NoError(t, err)
	defer pool.Close()
	st := store.New(pool, store.Config{})
	a := New(st, Config{Name: "job", TTL: time.Minute})
	b := New(st, Config{Name: "job", TTL: time.Minute})
	var mu sync.Mutex
	changes := []bool{}
	a.cfg.OnChange = func(l bool) { mu.Lock(); changes = append(changes, l); mu.Unlock() }
	a.attempt(context.Background())
	b.attempt(context.Background())
	require.True(t, a.Leading())
	require.False(t, b.Leading())
	a.attempt(context.Background()) // renews
	require.True(t, a.Leading())
	a.resign()
	require.False(t, a.Leading())
	b.attempt(context.Background())
	require.True(t, b.Leading())
	mu.Lock()
	require.Equal(t, []bool{true, false}, changes)
	mu.Unlock()
}

// A configuration out of range is refused at once, with every fault
// named; a zero TTL is the default.
func TestInvalidConfigurationIsRefused(t *testing.T) {
	t.Parallel()
	require.Equal(t, TTLDefault, New(nil, Config{Name: "job"}).cfg.TTL)
	require.PanicsWithError(t, "leader: invalid configuration: empty Name: it names the elected role\nTTL must be positive (zero for the default), not -1s",
		func() { New(nil, Config{TTL: -time.Second}) })
}
