package sweeper_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
	"github.com/tokenorchestrator/tokenorchestrator/internal/sweeper"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }

func setup(t *testing.T) (*pgxpool.Pool, *store.Store) {
	t.Helper()
	pool := testdb.NewPool(t)
	st := store.New(pool, store.Config{KeyTTL: time.Hour, LeaseTTL: time.Hour})
	t.Cleanup(st.Close)
	return pool, st
}

func count(t *testing.T, pool *pgxpool.Pool, sql string) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), sql).Scan(&n))
	return n
}

// Registrations of waiting clients whose replica died are never withdrawn;
// the background job deletes them once they have expired, and leaves the
// live ones alone.
func TestSweeperDeletesExpiredWaiterRegistrations(t *testing.T) {
	t.Parallel()
	pool, st := setup(t)
	ctx := context.Background()
	_, err := pool.Exec(ctx, `
		INSERT INTO pool_waiters (pool, replica, expires_at)
		SELECT 'pool-' || n, 'dead-replica', now() - interval '1 minute' FROM generate_series(1, 2500) AS n
		UNION ALL
		SELECT 'pool-' || n, 'live-replica', now() + interval '1 minute' FROM generate_series(1, 3) AS n`)
	require.NoError(t, err)

	result := sweeper.New(st, sweeper.Config{}).Service(sweeper.ServiceWaiters).RunOnce(ctx)
	require.Equal(t, sweeper.Result{WaitersExpired: 2500}, result, "three batches, the last one short")
	require.Zero(t, count(t, pool, "SELECT count(*) FROM pool_waiters WHERE replica = 'dead-replica'"), "expired registrations are deleted")
	require.Equal(t, 3, count(t, pool, "SELECT count(*) FROM pool_waiters WHERE replica = 'live-replica'"), "live registrations stay")
}

// History written faster than one pass used to delete (ten batches of
// 1,000) is still deleted: a pass keeps deleting while batches come back
// full, within its time (half the service's interval), so a backlog of
// 60,000 rows goes in one pass when the interval leaves the time for it.
func TestHistoryRetentionKeepsUpWithABacklog(t *testing.T) {
	t.Parallel()
	pool, st := setup(t)
	ctx := context.Background()
	const old = 60000
	_, err := pool.Exec(ctx, `
		INSERT INTO key_events (at, key_id, pool, event)
		SELECT now() - interval '40 days' + n * interval '1 millisecond', gen_random_uuid(), 'busy', 'assigned'
		FROM generate_series(1, $1) AS n`, old)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `
		INSERT INTO key_events (at, key_id, pool, event)
		SELECT now() - interval '1 day', gen_random_uuid(), 'busy', 'assigned' FROM generate_series(1, 10)`)
	require.NoError(t, err)

	retention := sweeper.New(st, sweeper.Config{HistoryRetentionInterval: time.Minute}).Service(sweeper.ServiceHistoryRetention)
	result := retention.RunOnce(ctx)
	require.Equal(t, sweeper.Result{HistoryDeleted: old}, result, "one pass deletes the whole backlog")
	require.Zero(t, count(t, pool, "SELECT count(*) FROM key_events WHERE at < now() - interval '30 days'"))
	require.Equal(t, 10, count(t, pool, "SELECT count(*) FROM key_events"), "history within the retention stays")
}

// A pass stops deleting history once its time is up, after one batch at
// least, so that a backlog never holds the database for longer than that;
// the following passes finish it.
func TestHistoryRetentionStopsWhenItsTimeIsUp(t *testing.T) {
	t.Parallel()
	pool, st := setup(t)
	ctx := context.Background()
	_, err := pool.Exec(ctx, `
		INSERT INTO key_events (at, key_id, pool, event)
		SELECT now() - interval '40 days', gen_random_uuid(), 'busy', 'assigned' FROM generate_series(1, 2500)`)
	require.NoError(t, err)

	retention := sweeper.New(st, sweeper.Config{HistoryTimePerPass: time.Nanosecond}).Service(sweeper.ServiceHistoryRetention)
	var deleted []int
	for range 4 {
		result := retention.RunOnce(ctx)
		require.NoError(t, result.Err)
		deleted = append(deleted, result.HistoryDeleted)
	}
	require.Equal(t, []int{1000, 1000, 500, 0}, deleted, "one batch a pass")
}
