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
	"github.com/tokenorchestrator/tokenorchestrator/internal/testdb"
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

	result := sweeper.New(st, sweeper.Config{}).RunOnce(ctx)
	require.NoError(t, result.Err)
	require.Equal(t, 2500, result.WaitersExpired, "three batches, the last one short")
	require.Zero(t, count(t, pool, "SELECT count(*) FROM pool_waiters WHERE replica = 'dead-replica'"), "expired registrations are deleted")
	require.Equal(t, 3, count(t, pool, "SELECT count(*) FROM pool_waiters WHERE replica = 'live-replica'"), "live registrations stay")
}
