package server

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/config"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

// Each of sessionSettings is set on the service's sessions, and a setting
// in the URL wins over it (why each is set: sessionSettings).
func TestSessionSettings(t *testing.T) {
	t.Parallel()
	url := testdb.New(t)
	for _, c := range []struct{ name, want, inURL string }{
		{"jit", "off", "on"},
		{"plan_cache_mode", "force_generic_plan", "auto"},
		{"max_parallel_workers_per_gather", "0", "2"},
	} {
		for dsn, want := range map[string]string{url: c.want, url + "&" + c.name + "=" + c.inURL: c.inURL} {
			pool, err := connect(context.Background(), dsn, "DATABASE_URL", "token-orchestrator", 2, config.Config{DBTimeout: 5e9}, nil)
			require.NoError(t, err)
			var got string
			require.NoError(t, pool.QueryRow(context.Background(), "SELECT current_setting($1)", c.name).Scan(&got))
			pool.Close()
			require.Equal(t, want, got, dsn)
		}
	}
}
