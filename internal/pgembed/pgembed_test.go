package pgembed

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// The embedded cluster keeps its data across a stop and a start, and a
// second start on a data directory in use reuses the running server.
func TestDataSurvivesRestart(t *testing.T) {
	t.Parallel()
	if _, err := findBinDir(""); err != nil {
		t.Fatalf("this test needs the PostgreSQL server binaries: %v", err)
	}
	// Not t.TempDir(): the server may run as another user than root, and
	// must reach the directory.
	dir, err := os.MkdirTemp("", "pgembed-test-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o755))
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := Config{DataDir: filepath.Join(dir, "data"), Settings: map[string]string{"fsync": "off"}}
	ctx := context.Background()

	first, err := Start(ctx, cfg)
	require.NoError(t, err)
	runSQL(t, first.URL(), "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')")

	again, err := Start(ctx, cfg)
	require.NoError(t, err, "a second start finds the server running")
	require.Equal(t, first.Port(), again.Port())
	require.NoError(t, again.Stop(), "stopping a server this one did not start does nothing")
	require.NoError(t, first.Stop())

	second, err := Start(ctx, cfg)
	require.NoError(t, err)
	defer func() { require.NoError(t, second.Stop()) }()
	conn, err := pgx.Connect(ctx, second.URL())
	require.NoError(t, err)
	defer conn.Close(ctx)
	var v string
	require.NoError(t, conn.QueryRow(ctx, "SELECT v FROM kept").Scan(&v))
	require.Equal(t, "still here", v)
}

func runSQL(t *testing.T, url, sql string) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	_, err = conn.Exec(context.Background(), sql)
	require.NoError(t, err)
}
