package store_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
	"github.com/tokenorchestrator/tokenorchestrator/internal/sweeper"
)

// A session that holds a snapshot (a long report, a backup, an idle
// transaction in someone's psql) holds back the cleanup of every table: the
// store sees how long, and the background job names the session in a
// warning.
func TestAnOldSnapshotIsSeenAndNamed(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{})
	cfg := b.pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = "held-snapshot-test"
	holder, err := pgx.ConnectConfig(b.ctx, cfg)
	require.NoError(t, err)
	defer holder.Close(b.ctx)
	tx, err := holder.BeginTx(b.ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(b.ctx) }()
	var keys int
	require.NoError(t, tx.QueryRow(b.ctx, "SELECT count(*) FROM keys").Scan(&keys)) // takes the snapshot
	const held = 700 * time.Millisecond
	time.Sleep(held)

	h, err := b.store.CleanupHorizon(b.ctx)
	require.NoError(t, err)
	require.GreaterOrEqual(t, h.SnapshotAge, held, "%+v", h)

	var logs syncBuffer
	sw := sweeper.New(b.store, sweeper.Config{
		HorizonInterval: 10 * time.Millisecond, SnapshotAgeWarning: held / 2,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	require.NoError(t, sw.Start(ctx))
	defer sw.Stop()
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "an old snapshot holds back") },
		10*time.Second, 10*time.Millisecond)
	require.Contains(t, logs.String(), "snapshot_age=")
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
