package server_test

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/config"
	"github.com/tokenorchestrator/tokenorchestrator/internal/server"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

// An invalid index (left by a CREATE INDEX CONCURRENTLY that was
// interrupted, and recorded as applied by an older release) is never used
// by the planner: the claims and pages it serves would scan instead. The
// server refuses to start on such a schema, and says which index it is.
func TestStartRefusesInvalidIndexes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testdb.New(t)
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	// As a superuser: what an interrupted build leaves, without the wait.
	_, err = conn.Exec(ctx, "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'keys_pool_id_idx'::regclass")
	require.NoError(t, err)

	cfg, err := config.Load(nil, func(string) string { return "" }, io.Discard)
	require.NoError(t, err)
	cfg.DatabaseURL = url
	srv, err := server.New(ctx, cfg, slog.New(slog.DiscardHandler))
	require.Error(t, err, "the server started on a schema with an invalid index")
	require.Nil(t, srv)
	require.ErrorContains(t, err, "keys_pool_id_idx")
}
