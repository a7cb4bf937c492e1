package testdb

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

// recorder is a test as New sees it: it keeps New's cleanup, to be run by
// the test, and records what the cleanup reports.
type recorder struct {
	testing.TB
	failed   bool
	cleanups []func()
	errors   []string
	logs     []string
}

func (r *recorder) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }
func (r *recorder) Failed() bool     { return r.failed }
func (r *recorder) Errorf(format string, a ...any) {
	r.errors = append(r.errors, fmt.Sprintf(format, a...))
}
func (r *recorder) Logf(format string, a ...any) { r.logs = append(r.logs, fmt.Sprintf(format, a...)) }

func (r *recorder) cleanUp() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}

func exists(t *testing.T, u string) bool {
	t.Helper()
	name := mustParsePath(t, u)
	conn, err := pgx.Connect(context.Background(), ServerURL(t))
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var found bool
	require.NoError(t, conn.QueryRow(context.Background(),
		"SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&found))
	return found
}

func mustParsePath(t *testing.T, u string) string {
	t.Helper()
	cfg, err := pgx.ParseConfig(u)
	require.NoError(t, err)
	return cfg.Database
}

// A passing test's database is dropped; a connection it left open fails
// it, and is not ended for it.
func TestLeakedConnectionFailsThePassingTest(t *testing.T) {
	t.Parallel()
	r := &recorder{TB: t}
	u := New(r)
	conn, err := pgx.Connect(context.Background(), u)
	require.NoError(t, err)
	r.cleanUp()
	require.Len(t, r.errors, 1, "the leaked connection is reported")
	require.Contains(t, r.errors[0], "did the test leave a connection open")
	require.True(t, exists(t, u))
	require.NoError(t, conn.Ping(context.Background()), "the leaked connection was not ended")

	require.NoError(t, conn.Close(context.Background()))
	r = &recorder{TB: t}
	u = New(r)
	r.cleanUp()
	require.Empty(t, r.errors)
	require.False(t, exists(t, u), "a passing test's database is dropped")
}

// A failed test keeps its database and logs its URL.
func TestFailedTestKeepsItsDatabase(t *testing.T) {
	t.Parallel()
	r := &recorder{TB: t, failed: true}
	u := New(r)
	r.cleanUp()
	require.Empty(t, r.errors)
	require.True(t, exists(t, u))
	require.Len(t, r.logs, 1)
	require.Contains(t, r.logs[0], u)
	require.NoError(t, execAdmin(context.Background(), ServerURL(t), "DROP DATABASE "+mustParsePath(t, u)))
}
