package store

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

// internalStore is a Store of the given settings on a database of its own,
// for the tests that reach inside the package, and its connection pool;
// both are closed when the test ends.
func internalStore(t *testing.T, cfg Config) (*Store, *pgxpool.Pool) {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), testdb.New(t))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	s := New(pool, cfg)
	t.Cleanup(s.Close)
	return s, pool
}
