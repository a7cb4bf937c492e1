package main

import (
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/config"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/servertest"
)

// The keys commands and the health check against a server that asks for
// tokens, with its health protected too.
func TestCommandsWithTokens(t *testing.T) {
	t.Parallel()
	const adminToken, clientToken = "admin-token-0123456789abcdef", "client-token-0123456789abcdef"
	replica := servertest.Start(t, servertest.Options{Configure: func(c *config.Config) {
		c.AdminToken, c.ClientToken, c.PublicHealth = adminToken, clientToken, false
	}})
	env := map[string]string{"TOKEN_ORCHESTRATOR_SERVER": replica.URL}
	keys := func(token string, args ...string) result {
		t.Helper()
		if token != "" {
			args = append(args, "--token", token)
		}
		return run(t, runKeys, env, args...)
	}

	refused := keys("", "create", "--pool", "tok")
	require.Equal(t, exitFailed, refused.code)
	require.Contains(t, refused.stderr, "unauthorized")
	refused = keys(clientToken, "create", "--pool", "tok")
	require.Equal(t, exitFailed, refused.code)
	require.Contains(t, refused.stderr, "forbidden")
	created := keys(adminToken, "create", "--pool", "tok")
	require.Equal(t, exitOK, created.code, created.stderr)
	id := regexp.MustCompile(`[0-9a-f-]{36}`).FindString(created.stdout)

	got := keys(clientToken, "get", "--pool", "tok")
	require.Equal(t, exitOK, got.code, got.stderr)
	require.Contains(t, got.stdout, id)
	refused = keys(clientToken, "delete", id)
	require.Equal(t, exitFailed, refused.code)
	require.Contains(t, refused.stderr, "forbidden")
	deleted := keys(adminToken, "delete", id)
	require.Equal(t, exitOK, deleted.code, deleted.stderr)

	// The counts of every pool are the operator's.
	stats := run(t, runStats, env, "--token", clientToken)
	require.Equal(t, exitFailed, stats.code)
	require.Contains(t, stats.stderr, "forbidden")
	stats = run(t, runStats, map[string]string{"TOKEN_ORCHESTRATOR_SERVER": replica.URL, "TOKEN_ORCHESTRATOR_TOKEN": adminToken})
	require.Equal(t, exitOK, stats.code, stats.stderr)
	listed := keys(clientToken, "list", "--pool", "tok")
	require.Equal(t, exitFailed, listed.code)
	require.Contains(t, listed.stderr, "forbidden")
	listed = keys(adminToken, "list", "--pool", "tok")
	require.Equal(t, exitOK, listed.code, listed.stderr)
	require.Equal(t, "Pool tok has no keys.\n", listed.stdout)

	u, err := url.Parse(replica.URL)
	require.NoError(t, err)
	health := map[string]string{"ADDR": ":" + u.Port()}
	down := run(t, runHealthcheck, health)
	require.Equal(t, exitFailed, down.code)
	require.Contains(t, down.stderr, "unauthorized")
	require.Equal(t, exitFailed, run(t, runHealthcheck, health, "--token", "wrong-token-0123456789").code)

	// In a container the check runs beside the server, with its settings.
	health["CLIENT_TOKEN"] = clientToken
	ok := run(t, runHealthcheck, health)
	require.Equal(t, exitOK, ok.code, ok.stderr)
	delete(health, "CLIENT_TOKEN")
	file := filepath.Join(t.TempDir(), "admin-token")
	require.NoError(t, os.WriteFile(file, []byte(adminToken+"\n"), 0o600))
	health["ADMIN_TOKEN_FILE"] = file
	ok = run(t, runHealthcheck, health)
	require.Equal(t, exitOK, ok.code, ok.stderr)
}
