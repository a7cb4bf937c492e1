package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/client"
	"github.com/tokenorchestrator/tokenorchestrator/internal/config"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/servertest"
)

// secretsServer starts a server that takes secrets, and returns its URL.
func secretsServer(t *testing.T, o servertest.Options) string {
	t.Helper()
	kr, err := config.LoadSecrets(func(name string) string {
		if name == "SECRET_KEY" {
			return newEncodedKey(t)
		}
		return ""
	})
	require.NoError(t, err)
	o.Configure = func(cfg *config.Config) { cfg.Secrets = kr }
	return servertest.Start(t, o).URL
}

// importKey creates a key of the pool with a random secret; an empty pool
// name is the default pool.
func importKey(t *testing.T, server, pool string) (*client.Client, client.Key, string) {
	t.Helper()
	c, err := client.New(server)
	require.NoError(t, err)
	secret := "sk-" + rand.Text()
	keys, err := c.ImportKeys(context.Background(), pool, []client.NewKey{{Secret: secret}})
	require.NoError(t, err)
	return c, keys[0], secret
}

func TestExec(t *testing.T) {
	t.Parallel()
	server := secretsServer(t, servertest.Options{})
	c, key, secret := importKey(t, server, "jobs")
	env := map[string]string{"TOKEN_ORCHESTRATOR_SERVER": server}
	ctx := context.Background()

	// The secret is in the command's environment; the command's exit code
	// is exec's; the key is released after.
	r := run(t, runExec, env, "--pool", "jobs", "--env", "API_KEY", "--", "sh", "-c", `printf '%s' "$API_KEY"; exit 5`)
	require.Equal(t, 5, r.code, r.stderr)
	require.Equal(t, secret, r.stdout)
	require.Empty(t, r.stderr)
	info, err := c.GetKey(ctx, key.ID)
	require.NoError(t, err)
	require.False(t, info.IsBlocked)
	require.Nil(t, info.CoolingUntil)

	// Flags after the command are the command's, with or without "--".
	r = run(t, runExec, env, "--pool", "jobs", "--env", "API_KEY", "sh", "-c", `echo "$1"`, "sh", "--pool")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, "--pool\n", r.stdout)

	// An exit code named by --cooldown-on-exit releases the key with that
	// cooldown.
	before := time.Now()
	r = run(t, runExec, env, "--pool", "jobs", "--env", "API_KEY", "--cooldown-on-exit", "75=40s", "--cooldown-on-exit", "1=1s",
		"--", "sh", "-c", "exit 75")
	require.Equal(t, 75, r.code, r.stderr)
	info, err = c.GetKey(ctx, key.ID)
	require.NoError(t, err)
	require.False(t, info.IsBlocked)
	require.NotNil(t, info.CoolingUntil)
	require.WithinRange(t, *info.CoolingUntil, before.Add(39*time.Second), time.Now().Add(41*time.Second))

	// The only key cools down: none becomes free within --wait.
	r = run(t, runExec, env, "--pool", "jobs", "--env", "API_KEY", "--wait", "100ms", "--", "true")
	require.Equal(t, exitNoKey, r.code, r.stderr)
	require.Contains(t, r.stderr, "no key available")
}

func TestExecRefuses(t *testing.T) {
	t.Parallel()
	server := secretsServer(t, servertest.Options{})
	importKey(t, server, "")
	c, err := client.New(server)
	require.NoError(t, err)
	plain, err := c.CreateKey(context.Background(), "plain")
	require.NoError(t, err)
	env := map[string]string{"TOKEN_ORCHESTRATOR_SERVER": server}

	for _, tc := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"--env", "K"}, exitUsage, "expected a command to run"},
		{[]string{"true"}, exitUsage, "--env is required"},
		{[]string{"--env", "A=B", "true"}, exitUsage, `--env "A=B"`},
		{[]string{"--env", "K", "--wait", "0s", "true"}, exitUsage, "--wait must be more than 0"},
		{[]string{"--env", "K", "--cooldown-on-exit", "75", "true"}, exitUsage, "expected CODE=DURATION"},
		{[]string{"--env", "K", "--cooldown-on-exit", "300=1m", "true"}, exitUsage, "0 to 255"},
		{[]string{"--env", "K", "--cooldown-on-exit", "1=25h", "true"}, exitUsage, "at most 24h"},
		{[]string{"--env", "K", "--pol", "p", "true"}, exitUsage, `Did you mean "--pool"?`},
		{[]string{"--env", "K", "--server", "localhost:1", "true"}, exitUsage, "--server"},
		{[]string{"--env", "K", "--", "/no/such/command"}, exitNotFound, "released"},
		{[]string{"--env", "K", "--", "/"}, exitCannotRun, "released"},
		{[]string{"--env", "K", "--pool", "plain", "--", "true"}, exitFailed, "has no secret"},
		{[]string{"--env", "K", "--pool", "nobody", "--", "true"}, exitFailed, "unknown_pool"},
	} {
		r := run(t, runExec, env, tc.args...)
		require.Equal(t, tc.code, r.code, "exec %v: %s", tc.args, r.stderr)
		require.Contains(t, r.stderr, tc.stderr, "exec %v", tc.args)
		require.Empty(t, r.stdout, "exec %v", tc.args)
	}
	info, err := c.GetKey(context.Background(), plain.ID)
	require.NoError(t, err)
	require.False(t, info.IsBlocked, "a key without a secret is released at once")
}

// Signals to exec reach the command; a lost lease stops it and exec
// exits 4.
func TestExecSignalsAndLostLeases(t *testing.T) {
	t.Parallel()
	server := secretsServer(t, servertest.Options{LeaseTTL: 300 * time.Millisecond, SweepInterval: 20 * time.Millisecond})
	c, key, _ := importKey(t, server, "jobs")
	env := map[string]string{"TOKEN_ORCHESTRATOR_SERVER": server}
	// The loop ends after 10 s at most, so that a signal that never comes
	// fails the test rather than hangs it.
	script := `trap 'echo got TERM; exit 9' TERM; echo ready; n=0; while [ $n -lt 500 ]; do sleep 0.02; n=$((n+1)); done; exit 99`

	start := func(signals chan os.Signal) (*syncBuffer, *syncBuffer, <-chan int) {
		stdout, stderr := &syncBuffer{}, &syncBuffer{}
		code := make(chan int, 1)
		go func() {
			code <- execWithSignals(signals, nil, []string{"--pool", "jobs", "--env", "API_KEY", "--kill-after", "5s", "--", "sh", "-c", script},
				stdout, stderr, func(name string) string { return env[name] })
		}()
		require.Eventually(t, func() bool { return strings.Contains(stdout.String(), "ready") }, 10*time.Second, 5*time.Millisecond)
		return stdout, stderr, code
	}

	signals := make(chan os.Signal, 1)
	stdout, stderr, code := start(signals)
	signals <- syscall.SIGTERM
	require.Equal(t, 9, <-code, stderr.String())
	require.Contains(t, stdout.String(), "got TERM")
	info, err := c.GetKey(context.Background(), key.ID)
	require.NoError(t, err)
	require.False(t, info.IsBlocked)

	stdout, stderr, code = start(make(chan os.Signal))
	// Someone else releases the key: the next keep-alive fails.
	_, err = c.ReleaseKey(context.Background(), key.ID, "")
	require.NoError(t, err)
	require.Equal(t, exitLeaseLost, <-code, stderr.String())
	require.Contains(t, stdout.String(), "got TERM", "the command was asked to stop")
	require.Contains(t, stderr.String(), "lease lost")
	require.Contains(t, stderr.String(), "the command exited 9 after its lease was lost: exiting 4")
}

// syncBuffer is an output read while a command writes it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}
