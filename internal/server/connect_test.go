package server

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/config"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

// The service's sessions run without JIT, and with the generic plans of
// their prepared statements: on a pool of a million keys the
// claim's estimated cost passes jit_above_cost, and compiling it took
// 0.5–2 s per statement while the statement itself runs in well under a
// millisecond. A jit set in the URL still wins.
func TestSessionsRunWithoutJIT(t *testing.T) {
	t.Parallel()
	url := testdb.New(t)
	for dsn, want := range map[string]string{url: "off", url + "&jit=on": "on"} {
		pool, err := connect(context.Background(), dsn, "DATABASE_URL", "token-orchestrator", 2, config.Config{DBTimeout: 5e9}, nil)
		require.NoError(t, err)
		var jit, planCache string
		require.NoError(t, pool.QueryRow(context.Background(), "SHOW jit").Scan(&jit))
		require.NoError(t, pool.QueryRow(context.Background(), "SHOW plan_cache_mode").Scan(&planCache))
		pool.Close()
		require.Equal(t, want, jit, dsn)
		require.Equal(t, "force_generic_plan", planCache, "prepared statements are planned once")
	}
}
