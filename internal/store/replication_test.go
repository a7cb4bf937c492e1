package store_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/lease"
	"github.com/tokenorchestrator/tokenorchestrator/internal/pgembed"
	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
)

// The test server has no standby and asks for none; the statement reads
// what it says.
func TestReplicationStateOfAServerWithoutStandbys(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{})
	st, err := b.store.ReplicationState(b.ctx)
	require.NoError(t, err)
	require.False(t, st.InRecovery)
	require.NotEmpty(t, st.SynchronousCommit)
	require.Zero(t, st.Sync+st.Potential+st.Async+st.Unknown, "%+v", st)
	if st.SynchronousStandbyNames == "" {
		require.Equal(t, store.ReplicationNone, st.Mode())
	}
}

func TestReplicationModes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		st       store.ReplicationState
		required int
		mode     string
	}{
		{"alone", store.ReplicationState{SynchronousCommit: "on"}, 0, store.ReplicationNone},
		{"an async standby", store.ReplicationState{SynchronousCommit: "on", Async: 1}, 0, store.ReplicationAsynchronous},
		{"pg_auto_failover's quorum, standby there", store.ReplicationState{SynchronousCommit: "on",
			SynchronousStandbyNames: "ANY 1 (pgautofailover_standby_2)", Sync: 1}, 1, store.ReplicationSynchronous},
		{"quorum, standby gone", store.ReplicationState{SynchronousCommit: "on",
			SynchronousStandbyNames: "ANY 1 (pgautofailover_standby_2)"}, 1, store.ReplicationWaiting},
		{"two of three first", store.ReplicationState{SynchronousCommit: "remote_apply",
			SynchronousStandbyNames: "FIRST 2 (a, b, c)", Sync: 1, Potential: 1}, 2, store.ReplicationWaiting},
		{"a bare count", store.ReplicationState{SynchronousCommit: "on",
			SynchronousStandbyNames: "2 (a, b)", Sync: 2}, 2, store.ReplicationSynchronous},
		{"a plain list asks for one", store.ReplicationState{SynchronousCommit: "on",
			SynchronousStandbyNames: "a, b", Sync: 1, Potential: 1}, 1, store.ReplicationSynchronous},
		{"synchronous_commit local waits for nobody", store.ReplicationState{SynchronousCommit: "local",
			SynchronousStandbyNames: "*", Sync: 1}, 1, store.ReplicationAsynchronous},
		{"standbys hidden from the role", store.ReplicationState{SynchronousCommit: "on",
			SynchronousStandbyNames: "*", Unknown: 1}, 1, store.ReplicationUnknown},
		{"a standby", store.ReplicationState{SynchronousCommit: "on", InRecovery: true}, 0, store.ReplicationUnknown},
	}
	for _, c := range cases {
		require.Equal(t, c.required, c.st.RequiredSyncStandbys(), c.name)
		require.Equal(t, c.mode, c.st.Mode(), c.name)
	}
}

// A server whose synchronous_standby_names names a standby that never
// connects: a new connection is refused through the pool's AfterConnect,
// as the service's own pool does, and the store calls the database
// unavailable (503), not broken.
func TestConnectionWithoutItsSynchronousStandbyIsRefused(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "replication-test-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755)) // the server may run as another user than root
	cluster, err := pgembed.Start(context.Background(), pgembed.Config{
		DataDir:  filepath.Join(dir, "data"),
		Settings: map[string]string{"synchronous_standby_names": "ANY 1 (nobody)"},
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cluster.Stop() })

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, cluster.URL())
	require.NoError(t, err)
	defer conn.Close(ctx)
	st, err := store.ReadReplicationState(ctx, conn)
	require.NoError(t, err)
	require.Equal(t, store.ReplicationWaiting, st.Mode(), "%+v", st)
	require.ErrorIs(t, store.RequireSynchronousStandbys(ctx, conn), store.ErrSynchronousStandbysMissing)

	cfg, err := pgxpool.ParseConfig(cluster.URL())
	require.NoError(t, err)
	cfg.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error { return store.RequireSynchronousStandbys(ctx, conn) }
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer pool.Close()
	err = store.New(pool, store.Config{QueryTimeout: 5 * time.Second}).Ping(ctx)
	require.ErrorIs(t, err, lease.ErrUnavailable)
	require.ErrorIs(t, err, store.ErrSynchronousStandbysMissing)
}
