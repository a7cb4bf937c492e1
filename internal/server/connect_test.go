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

// Nor do they start parallel workers: on 1,000,000 keys never analysed, the
// generic plan of a chart of two minutes (KeyEventsPerMinute) gathered two
// workers for 81 rows; starting them took 35–45 ms of a 47 ms statement
// that read 26 buffers, where the same statement runs in 1 ms alone. Every
// statement of the service is an index lookup or a short range; a worker
// costs far more than it can save, and a client polling a chart would take
// the server's few workers from everyone. A setting in the URL still wins.
func TestSessionsRunWithoutParallelWorkers(t *testing.T) {
	t.Parallel()
	url := testdb.New(t)
	for dsn, want := range map[string]string{url: "0", url + "&max_parallel_workers_per_gather=2": "2"} {
		pool, err := connect(context.Background(), dsn, "DATABASE_URL", "token-orchestrator", 2, config.Config{DBTimeout: 5e9}, nil)
		require.NoError(t, err)
		var workers string
		require.NoError(t, pool.QueryRow(context.Background(), "SHOW max_parallel_workers_per_gather").Scan(&workers))
		pool.Close()
		require.Equal(t, want, workers, dsn)
	}
}
