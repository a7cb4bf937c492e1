package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/client"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/servertest"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }

// result is what a command did.
type result struct {
	code           int
	stdout, stderr string
}

// run runs a command's entry point with env as its environment.
func run(t *testing.T, cmd func([]string, io.Writer, io.Writer, func(string) string) int, env map[string]string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := cmd(args, &stdout, &stderr, func(name string) string { return env[name] })
	return result{code, stdout.String(), stderr.String()}
}

func TestKeysCommands(t *testing.T) {
	t.Parallel()
	env := map[string]string{"TOKEN_ORCHESTRATOR_SERVER": servertest.Start(t, servertest.Options{}).URL}
	keys := func(args ...string) result { t.Helper(); return run(t, runKeys, env, args...) }

	created := keys("create", "--pool", "cli")
	require.Equal(t, exitOK, created.code, created.stderr)
	require.Regexp(t, `^Created key [0-9a-f-]{36}\.\n`, created.stdout)
	require.Contains(t, created.stdout, "status          free")

	batch := keys("create", "--pool", "cli", "--count", "2", "--json")
	require.Equal(t, exitOK, batch.code, batch.stderr)
	var many struct{ Keys []client.Key }
	require.NoError(t, json.Unmarshal([]byte(batch.stdout), &many))
	require.Len(t, many.Keys, 2)

	// Human output names the key and its lease token.
	got := keys("get", "--pool", "cli", "--wait", "1s")
	require.Equal(t, exitOK, got.code, got.stderr)
	m := regexp.MustCompile(`Leased key ([0-9a-f-]{36}) under lease token (\d+)\.`).FindStringSubmatch(got.stdout)
	require.NotNil(t, m, got.stdout)
	id, token := m[1], m[2]
	require.Contains(t, got.stdout, "lease token     "+token)

	info := keys("info", id, "--json")
	require.Equal(t, exitOK, info.code, info.stderr)
	var key client.Key
	require.NoError(t, json.Unmarshal([]byte(info.stdout), &key))
	require.Equal(t, id, key.ID)
	require.True(t, key.IsBlocked)
	require.Empty(t, key.LeaseToken)

	kept := keys("keepalive", "--lease", token, id)
	require.Equal(t, exitOK, kept.code, kept.stderr)
	require.Contains(t, kept.stdout, "Kept key "+id+" alive.")
	stale := keys("keepalive", id, "--lease", "999999")
	require.Equal(t, exitFailed, stale.code)
	require.Contains(t, stale.stderr, "lease_mismatch")
	require.Empty(t, stale.stdout)

	released := keys("release", id, "--lease", token, "--json")
	require.Equal(t, exitOK, released.code, released.stderr)
	require.NoError(t, json.Unmarshal([]byte(released.stdout), &key))
	require.False(t, key.IsBlocked)

	deleted := keys("delete", id)
	require.Equal(t, exitOK, deleted.code, deleted.stderr)
	require.Equal(t, "Deleted key "+id+".\n", deleted.stdout)
	gone := keys("info", id)
	require.Equal(t, exitFailed, gone.code)
	require.Contains(t, gone.stderr, "key_not_found")

	// No free key has an exit code of its own, also after a wait.
	require.Equal(t, exitOK, keys("create", "--pool", "full").code)
	require.Equal(t, exitOK, keys("get", "--pool", "full").code)
	none := keys("get", "--pool", "full")
	require.Equal(t, exitNoKey, none.code)
	require.Contains(t, none.stderr, "no_free_key")
	require.Empty(t, none.stdout)
	none = keys("get", "--pool", "full", "--wait", "50ms", "--json")
	require.Equal(t, exitNoKey, none.code)
	require.Contains(t, none.stderr, "no_free_key")
	// A pool without keys is a mistake, not a pool to wait for: it fails at
	// once, however long the wait.
	start := time.Now()
	unknown := keys("get", "--pool", "empty", "--wait", "30s")
	require.Equal(t, exitFailed, unknown.code)
	require.Contains(t, unknown.stderr, "unknown_pool")
	require.Less(t, time.Since(start), 10*time.Second)
}

func TestKeysSendsTheBearerToken(t *testing.T) {
	t.Parallel()
	target, err := url.Parse(servertest.Start(t, servertest.Options{}).URL)
	require.NoError(t, err)
	var (
		mu    sync.Mutex
		auths []string
	)
	proxy := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auths = append(auths, r.Header.Get("Authorization"))
		mu.Unlock()
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)

	env := map[string]string{"TOKEN_ORCHESTRATOR_SERVER": front.URL, "TOKEN_ORCHESTRATOR_TOKEN": "from-env"}
	require.Equal(t, exitOK, run(t, runKeys, env, "create").code)
	require.Equal(t, exitOK, run(t, runKeys, env, "create", "--token", "from-flag").code)
	delete(env, "TOKEN_ORCHESTRATOR_TOKEN")
	require.Equal(t, exitOK, run(t, runKeys, env, "create").code)
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []string{"Bearer from-env", "Bearer from-flag", ""}, auths)
}

func TestKeysUsage(t *testing.T) {
	t.Parallel()
	env := map[string]string{"TOKEN_ORCHESTRATOR_SERVER": "http://127.0.0.1:1"}
	for _, tc := range []struct {
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{nil, exitUsage, "", "Usage: token-orchestrator keys COMMAND"},
		{[]string{"--help"}, exitOK, "Exit codes:", ""},
		{[]string{"get", "-h"}, exitOK, "--wait", ""},
		{[]string{"frobnicate"}, exitUsage, "", `unknown command "frobnicate"`},
		{[]string{"info"}, exitUsage, "", "expected one key ID, got 0 arguments"},
		{[]string{"info", "a", "b"}, exitUsage, "", "expected one key ID, got 2 arguments"},
		{[]string{"create", "extra"}, exitUsage, "", "unexpected arguments: extra"},
		{[]string{"create", "--count"}, exitUsage, "", "flag needs an argument"},
		{[]string{"get", "--wait", "soon"}, exitUsage, "", "invalid value"},
		{[]string{"create", "--server", "localhost:8080"}, exitUsage, "", "--server"},
		// Nothing listens on port 1.
		{[]string{"create"}, exitFailed, "", "connection refused"},
	} {
		r := run(t, runKeys, env, tc.args...)
		require.Equal(t, tc.code, r.code, "keys %v: %s", tc.args, r.stderr)
		if tc.stdout != "" {
			require.Contains(t, r.stdout, tc.stdout, "keys %v", tc.args)
		}
		if tc.stderr != "" {
			require.Contains(t, r.stderr, tc.stderr, "keys %v", tc.args)
		}
		if tc.code == exitOK {
			require.Empty(t, r.stderr, "help asked for goes to stdout only")
			require.Equal(t, 1, strings.Count(r.stdout, "Exit codes:"), "help is printed once")
		}
	}
}

func TestMigrateCommands(t *testing.T) {
	t.Parallel()
	env := map[string]string{"DATABASE_URL": testdb.New(t)}
	migrate := func(args ...string) result { t.Helper(); return run(t, runMigrate, env, args...) }

	status := migrate("status")
	require.Equal(t, exitOK, status.code, status.stderr)
	require.Regexp(t, `(?m)^1\s+00001_keys\.sql\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$`, status.stdout)

	refused := migrate("down")
	require.Equal(t, exitUsage, refused.code)
	require.Contains(t, refused.stderr, "--yes")
	require.Equal(t, status.stdout, migrate("status").stdout, "a refused down changes nothing")

	// down rolls back one migration at a time, the newest first. Versions
	// need not be consecutive (migrations written on separate branches
	// leave gaps until they meet), so they are read from the status.
	var versions []int
	for _, m := range regexp.MustCompile(`(?m)^(\d+)\s+\d+_\S+\.sql\s`).FindAllStringSubmatch(status.stdout, -1) {
		version, err := strconv.Atoi(m[1])
		require.NoError(t, err)
		versions = append(versions, version)
	}
	require.Len(t, versions, strings.Count(status.stdout, ".sql"))
	require.True(t, slices.IsSorted(versions), status.stdout)
	for i := len(versions) - 1; i >= 0; i-- {
		down := migrate("down", "--yes")
		require.Equal(t, exitOK, down.code, down.stderr)
		require.Equal(t, fmt.Sprintf("Rolled back migration %d.\n", versions[i]), down.stdout)
	}
	require.Regexp(t, `(?m)^1\s+00001_keys\.sql\s+pending$`, migrate("status").stdout)
	require.Equal(t, "No migration is applied: nothing to roll back.\n", migrate("down", "--yes").stdout)

	up := migrate("up")
	require.Equal(t, exitOK, up.code, up.stderr)
	for _, version := range versions {
		require.Contains(t, up.stdout, fmt.Sprintf("Applied migration %d.\n", version))
	}
	require.Equal(t, "Every migration was already applied.\n", migrate("up").stdout)

	for _, tc := range []struct {
		args []string
		env  map[string]string
		code int
		want string
	}{
		{nil, env, exitUsage, "expected one of up, down, status"},
		{[]string{"sideways"}, env, exitUsage, `unknown action "sideways"`},
		{[]string{"status"}, map[string]string{}, exitUsage, "DATABASE_URL"},
		{[]string{"status", "--database-url", "postgres://postgres@127.0.0.1:1/none?connect_timeout=2"}, env, exitFailed, "migrate status"},
	} {
		r := run(t, runMigrate, tc.env, tc.args...)
		require.Equal(t, tc.code, r.code, "migrate %v: %s", tc.args, r.stderr)
		require.Contains(t, r.stderr, tc.want)
	}
}

func TestHealthcheck(t *testing.T) {
	t.Parallel()
	replica := servertest.Start(t, servertest.Options{})
	u, err := url.Parse(replica.URL)
	require.NoError(t, err)
	// As in a container: the server's ADDR tells where to ask.
	env := map[string]string{"ADDR": ":" + u.Port()}

	ok := run(t, runHealthcheck, env)
	require.Equal(t, exitOK, ok.code, ok.stderr)
	require.Equal(t, "ready\n", ok.stdout)

	replica.CutDatabase()
	down := run(t, runHealthcheck, env)
	require.Equal(t, exitFailed, down.code)
	require.Contains(t, down.stderr, "not_ready")
	replica.RestoreDatabase()

	require.Equal(t, exitFailed, run(t, runHealthcheck, env, "--server", "http://127.0.0.1:1").code)
	require.Equal(t, exitUsage, run(t, runHealthcheck, env, "extra").code)
}

func TestLocalServer(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]string{
		":8080":          "http://127.0.0.1:8080",
		"0.0.0.0:9000":   "http://127.0.0.1:9000",
		"[::]:9000":      "http://127.0.0.1:9000",
		"10.1.2.3:80":    "http://10.1.2.3:80",
		"[::1]:8080":     "http://[::1]:8080",
		"":               defaultServer,
		"127.0.0.1:8080": "http://127.0.0.1:8080",
	} {
		require.Equal(t, want, localServer(addr), addr)
	}
}
