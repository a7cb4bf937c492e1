package migrate_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/migrate"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }

// safety bounds how long a test waits for the database to reach a state;
// it gets there far sooner, and no assertion depends on how much sooner.
const safety = 30 * time.Second

// concurrentIndex is the index that a migration builds with CREATE INDEX
// CONCURRENTLY, and that migration's version.
const (
	concurrentIndex        = "keys_pool_id_idx"
	concurrentIndexVersion = 4
)

// A CREATE INDEX CONCURRENTLY that is cancelled while it waits for older
// snapshots (by statement_timeout or lock_timeout behind a long
// transaction, an operator, a restart of the database) leaves an invalid
// index behind and its migration unrecorded. Migrating again must build the
// index anew, not take the invalid one, which the planner never uses, for
// done.
func TestInterruptedIndexBuildIsRebuilt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testdb.New(t)
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	// Roll back down to, and including, the migration that builds the index.
	for {
		version, err := migrate.RollBack(ctx, pool)
		require.NoError(t, err)
		if version == concurrentIndexVersion {
			break
		}
		require.Greater(t, version, int64(concurrentIndexVersion), "a later migration")
	}

	// A transaction that holds a snapshot: the build waits for it to end
	// before it marks the index valid.
	holder, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	t.Cleanup(func() { holder.Close(context.Background()) })
	snapshot, err := holder.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	require.NoError(t, err)
	_, err = snapshot.Exec(ctx, "SELECT 1")
	require.NoError(t, err)

	upDone := make(chan error, 1)
	go func() { upDone <- migrate.Up(ctx, pool) }()
	const waiting = `FROM pg_stat_progress_create_index
		WHERE relid = 'keys'::regclass AND phase = 'waiting for old snapshots'`
	waitUntil(t, pool, "SELECT EXISTS (SELECT 1 "+waiting+")")
	// Cancelled in the server, as a timeout would: a client that merely
	// gives up leaves the build running.
	_, err = pool.Exec(ctx, "SELECT pg_cancel_backend(pid) "+waiting)
	require.NoError(t, err)
	require.ErrorContains(t, <-upDone, "canceling statement", "the cancelled migration fails")
	require.False(t, indexValid(t, pool, concurrentIndex), "the cancelled build leaves an invalid index")
	require.NoError(t, snapshot.Rollback(ctx))

	require.NoError(t, migrate.Up(ctx, pool))
	require.True(t, indexValid(t, pool, concurrentIndex), "migrating again leaves a valid index")
	pending, err := migrate.Pending(ctx, pool)
	require.NoError(t, err)
	require.False(t, pending)
}

// waitUntil polls a condition of the database until it holds.
func waitUntil(t *testing.T, pool *pgxpool.Pool, condition string) {
	t.Helper()
	deadline := time.Now().Add(safety)
	for {
		var holds bool
		require.NoError(t, pool.QueryRow(context.Background(), condition).Scan(&holds))
		if holds {
			return
		}
		require.True(t, time.Now().Before(deadline), "still not so after %s: %s", safety, condition)
		time.Sleep(10 * time.Millisecond)
	}
}

// indexValid reports whether the index exists and is valid.
func indexValid(t *testing.T, pool *pgxpool.Pool, index string) bool {
	t.Helper()
	var valid bool
	err := pool.QueryRow(context.Background(),
		"SELECT coalesce((SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)), false)", index).Scan(&valid)
	require.NoError(t, err)
	return valid
}
