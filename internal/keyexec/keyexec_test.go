package keyexec_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/client"
	"github.com/tokenorchestrator/tokenorchestrator/internal/config"
	"github.com/tokenorchestrator/tokenorchestrator/internal/keyexec"
	"github.com/tokenorchestrator/tokenorchestrator/internal/secrets"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/servertest"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }

// bundle is a server with a pool of one key, and a command's outputs.
type bundle struct {
	ctx    context.Context
	c      *client.Client
	pool   string
	key    client.Key
	secret string
	stdout *syncBuffer
	dir    string
}

func setup(t *testing.T, o servertest.Options, withSecret bool) *bundle {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	raw := make([]byte, secrets.KeySize)
	_, _ = rand.Read(raw)
	kr, err := secrets.New(raw)
	require.NoError(t, err)
	o.Configure = func(cfg *config.Config) { cfg.Secrets = kr }
	c, err := client.New(servertest.Start(t, o).URL)
	require.NoError(t, err)
	b := &bundle{ctx: ctx, c: c, pool: "jobs", stdout: &syncBuffer{}, dir: t.TempDir()}
	if withSecret {
		b.secret = "sk-" + rand.Text()
		keys, err := c.ImportKeys(ctx, b.pool, []client.NewKey{{Secret: b.secret}})
		require.NoError(t, err)
		b.key = keys[0]
	} else {
		b.key, err = c.CreateKey(ctx, b.pool)
		require.NoError(t, err)
	}
	return b
}

// config runs the shell script with the pool's key as API_KEY.
func (b *bundle) config(script string) keyexec.Config {
	return keyexec.Config{
		Client: b.c, Pool: b.pool, Wait: 5 * time.Second, EnvName: "API_KEY",
		Command: []string{"sh", "-c", script},
		// An API_KEY of the environment gives way to the key's.
		Env: append(os.Environ(), "API_KEY=from-the-environment", "DIR="+b.dir,
			// SPIN waits for a signal, or 10 s at most, so that a command
			// whose signal never comes ends all the same, with 99.
			`SPIN=n=0; while [ $n -lt 500 ]; do sleep 0.02; n=$((n+1)); done; exit 99`),
		Stdin:  strings.NewReader(""),
		Stdout: b.stdout, Stderr: b.stdout,
	}
}

func (b *bundle) keyNow(t *testing.T) client.Key {
	t.Helper()
	k, err := b.c.GetKey(b.ctx, b.key.ID)
	require.NoError(t, err)
	return k
}

// requireFree checks that the key is released, without a cooldown.
func (b *bundle) requireFree(t *testing.T) {
	t.Helper()
	k := b.keyNow(t)
	require.False(t, k.IsBlocked, "the key is released")
	require.Nil(t, k.CoolingUntil, "the key does not cool down")
}

// waitFor waits until the command has written s.
func (b *bundle) waitFor(t *testing.T, s string) {
	t.Helper()
	require.Eventually(t, func() bool { return strings.Contains(b.stdout.String(), s) }, 10*time.Second, 5*time.Millisecond,
		"the command writes %q; it wrote %q", s, b.stdout.String())
}

// The command gets the secret in its environment; its exit code comes
// back; the key is released after.
func TestRunsWithTheSecret(t *testing.T) {
	t.Parallel()
	b := setup(t, servertest.Options{}, true)
	res, err := keyexec.Run(b.ctx, b.config(`printf '%s' "$API_KEY"; exit 3`))
	require.NoError(t, err)
	require.Equal(t, 3, res.ExitCode)
	require.Equal(t, b.secret, b.stdout.String())
	require.Equal(t, b.key.ID, res.KeyID)
	require.NoError(t, res.ReleaseErr)
	require.Nil(t, res.LeaseLost)
	require.Zero(t, res.Cooldown)
	b.requireFree(t)
	require.EqualValues(t, 1, b.keyNow(t).TimesAssigned)
}

// An exit code named in Cooldowns releases the key with that cooldown;
// others release it at once.
func TestCooldownOnExit(t *testing.T) {
	t.Parallel()
	b := setup(t, servertest.Options{}, true)
	cfg := b.config(`exit "$(cat "$DIR/code")"`)
	cfg.Cooldowns = map[int]time.Duration{75: 40 * time.Second}

	require.NoError(t, os.WriteFile(filepath.Join(b.dir, "code"), []byte("1"), 0o600))
	res, err := keyexec.Run(b.ctx, cfg)
	require.NoError(t, err)
	require.Equal(t, 1, res.ExitCode)
	require.Zero(t, res.Cooldown)
	b.requireFree(t)

	require.NoError(t, os.WriteFile(filepath.Join(b.dir, "code"), []byte("75"), 0o600))
	before := time.Now()
	res, err = keyexec.Run(b.ctx, cfg)
	after := time.Now()
	require.NoError(t, err)
	require.Equal(t, 75, res.ExitCode)
	require.Equal(t, 40*time.Second, res.Cooldown)
	k := b.keyNow(t)
	require.False(t, k.IsBlocked)
	require.NotNil(t, k.CoolingUntil, "the key cools down")
	require.WithinRange(t, *k.CoolingUntil, before.Add(39*time.Second), after.Add(41*time.Second))
	_, err = b.c.ClaimKey(b.ctx, b.pool, 0)
	require.ErrorIs(t, err, client.ErrNoKeyAvailable, "no claim takes a cooling key")
}

// The lease is held, and kept alive past its length, while the command
// runs.
func TestLeaseKeptAliveWhileTheCommandRuns(t *testing.T) {
	t.Parallel()
	// Short enough for a quick test, long enough that a keep-alive delayed
	// by a machine busy with the whole suite still comes in time: the
	// client keeps the lease alive a third of the way through, so it rides
	// out a stall of two thirds of this. With 600 ms, a run of the suite on
	// 2 cores lost the lease when keep-alives came up to 570 ms apart.
	leaseTTL := 2 * time.Second
	b := setup(t, servertest.Options{LeaseTTL: leaseTTL, SweepInterval: 20 * time.Millisecond}, true)
	done := make(chan keyexec.Result, 1)
	started := time.Now()
	go func() {
		res, err := keyexec.Run(b.ctx, b.config(`echo ready; n=0; until [ -e "$DIR/stop" ] || [ $n -ge 1000 ]; do sleep 0.02; n=$((n+1)); done`))
		if err != nil {
			t.Errorf("Run: %v", err)
		}
		done <- res
	}()
	b.waitFor(t, "ready")
	held := b.keyNow(t)
	require.True(t, held.IsBlocked, "the key is held while the command runs")
	// Wait, by the database's clock, until a lease nobody kept alive would
	// long have been taken back.
	mustHaveEnded := held.LeaseExpiresAt.Add(leaseTTL)
	require.Eventually(t, func() bool {
		k := b.keyNow(t)
		require.True(t, k.IsBlocked, "the lease ended while the command ran")
		return k.LastKeepAliveAt != nil && k.LastKeepAliveAt.After(mustHaveEnded)
	}, 10*time.Second, 20*time.Millisecond, "the lease is kept alive")

	require.NoError(t, os.WriteFile(filepath.Join(b.dir, "stop"), nil, 0o600))
	res := awaitResult(t, done)
	require.Equal(t, 0, res.ExitCode)
	require.Less(t, time.Since(started), 15*time.Second, "the command ended when asked, not at its bound")
	require.Nil(t, res.LeaseLost)
	b.requireFree(t)
}

// Signals are passed on to the command; a command ended by one exits
// 128+N, as a shell reports it.
func TestSignalsPassedOn(t *testing.T) {
	t.Parallel()
	b := setup(t, servertest.Options{}, true)
	signals := make(chan os.Signal, 1)
	cfg := b.config(`trap 'echo got TERM; exit 7' TERM; echo ready; eval "$SPIN"`)
	cfg.Signals = signals
	done := make(chan keyexec.Result, 1)
	go func() {
		res, err := keyexec.Run(b.ctx, cfg)
		if err != nil {
			t.Errorf("Run: %v", err)
		}
		done <- res
	}()
	b.waitFor(t, "ready")
	signals <- syscall.SIGTERM
	res := awaitResult(t, done)
	require.Equal(t, 7, res.ExitCode)
	require.Contains(t, b.stdout.String(), "got TERM")
	b.requireFree(t)

	cfg = b.config(`echo ready again; exec sleep 10`)
	cfg.Signals = signals
	go func() {
		res, _ := keyexec.Run(b.ctx, cfg)
		done <- res
	}()
	b.waitFor(t, "ready again")
	signals <- os.Interrupt
	require.Equal(t, 128+int(syscall.SIGINT), awaitResult(t, done).ExitCode)
	b.requireFree(t)

	// A signal that Forward holds back does not reach the command.
	cfg = b.config(`trap 'echo got INT' INT; trap 'echo got TERM; exit 8' TERM; echo ready at last; eval "$SPIN"`)
	cfg.Signals = signals
	cfg.Forward = func(sig os.Signal) bool { return sig != os.Interrupt }
	go func() {
		res, _ := keyexec.Run(b.ctx, cfg)
		done <- res
	}()
	b.waitFor(t, "ready at last")
	signals <- os.Interrupt
	signals <- syscall.SIGTERM
	require.Equal(t, 8, awaitResult(t, done).ExitCode)
	require.NotContains(t, b.stdout.String(), "got INT")
}

// A lease lost while the command runs stops the command: SIGTERM, then
// SIGKILL for one that ignores it.
func TestLeaseLostStopsTheCommand(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, script string
		exitCode     int
	}{
		{"stops on SIGTERM", `trap 'echo stopping; exit 0' TERM; echo ready; eval "$SPIN"`, 0},
		{"ignores SIGTERM", `trap '' TERM; echo ready; eval "$SPIN"`, 128 + int(syscall.SIGKILL)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, servertest.Options{LeaseTTL: 300 * time.Millisecond, SweepInterval: 20 * time.Millisecond}, true)
			var (
				mu    sync.Mutex
				notes []string
			)
			cfg := b.config(tc.script)
			cfg.KillAfter = 300 * time.Millisecond
			cfg.Notify = func(msg string) { mu.Lock(); notes = append(notes, msg); mu.Unlock() }
			done := make(chan keyexec.Result, 1)
			go func() {
				res, err := keyexec.Run(b.ctx, cfg)
				if err != nil {
					t.Errorf("Run: %v", err)
				}
				done <- res
			}()
			b.waitFor(t, "ready")
			// Someone else releases the key: the next keep-alive fails.
			_, err := b.c.ReleaseKey(b.ctx, b.key.ID, "")
			require.NoError(t, err)

			res := awaitResult(t, done)
			require.ErrorIs(t, res.LeaseLost, client.ErrLeaseLost)
			require.Equal(t, tc.exitCode, res.ExitCode)
			mu.Lock()
			defer mu.Unlock()
			require.NotEmpty(t, notes)
			require.Contains(t, notes[0], "lease lost")
			if tc.exitCode != 0 {
				require.Len(t, notes, 2)
				require.Contains(t, notes[1], "killing")
			}
		})
	}
}

// Nothing runs when no key can be had, or the key has no secret, or the
// command cannot start; a key claimed is released at once.
func TestNothingRuns(t *testing.T) {
	t.Parallel()
	t.Run("key without a secret", func(t *testing.T) {
		t.Parallel()
		b := setup(t, servertest.Options{}, false)
		_, err := keyexec.Run(b.ctx, b.config(`touch "$DIR/ran"`))
		require.ErrorIs(t, err, keyexec.ErrNoSecret)
		require.Contains(t, err.Error(), b.key.ID)
		require.NoFileExists(t, filepath.Join(b.dir, "ran"))
		b.requireFree(t)
	})
	t.Run("not found", func(t *testing.T) {
		t.Parallel()
		b := setup(t, servertest.Options{}, true)
		cfg := b.config("")
		cfg.Command = []string{filepath.Join(b.dir, "no-such-command")}
		_, err := keyexec.Run(b.ctx, cfg)
		var startErr *keyexec.StartError
		require.ErrorAs(t, err, &startErr)
		require.True(t, startErr.NotFound)
		b.requireFree(t)

		notExecutable := filepath.Join(b.dir, "script")
		require.NoError(t, os.WriteFile(notExecutable, []byte("#!/bin/sh\n"), 0o600))
		cfg.Command = []string{notExecutable}
		_, err = keyexec.Run(b.ctx, cfg)
		require.ErrorAs(t, err, &startErr)
		require.False(t, startErr.NotFound)
		b.requireFree(t)
	})
	t.Run("no free key", func(t *testing.T) {
		t.Parallel()
		b := setup(t, servertest.Options{}, true)
		lease, err := b.c.Claim(b.ctx, b.pool)
		require.NoError(t, err)
		t.Cleanup(func() { _ = lease.Release(context.Background()) })

		cfg := b.config(`touch "$DIR/ran"`)
		cfg.Wait = 200 * time.Millisecond
		_, err = keyexec.Run(b.ctx, cfg)
		require.ErrorIs(t, err, client.ErrNoKeyAvailable)

		// A signal ends the wait at once.
		signals := make(chan os.Signal, 1)
		cfg.Signals, cfg.Wait = signals, 20*time.Second
		signals <- os.Interrupt
		start := time.Now()
		_, err = keyexec.Run(b.ctx, cfg)
		var interrupted *keyexec.InterruptedError
		require.ErrorAs(t, err, &interrupted)
		require.Equal(t, os.Interrupt, interrupted.Signal)
		require.Less(t, time.Since(start), 5*time.Second)
		require.NoFileExists(t, filepath.Join(b.dir, "ran"))
		require.True(t, b.keyNow(t).IsBlocked, "the test's lease is untouched")
	})
	t.Run("bad config", func(t *testing.T) {
		t.Parallel()
		_, err := keyexec.Run(context.Background(), keyexec.Config{EnvName: "A=B"})
		require.ErrorContains(t, err, "client")
		require.ErrorContains(t, err, "no command")
		require.ErrorContains(t, err, `"A=B"`)
		require.False(t, errors.Is(err, keyexec.ErrNoSecret))
	})
}

// awaitResult waits for a Run that should end soon.
func awaitResult(t *testing.T, done <-chan keyexec.Result) keyexec.Result {
	t.Helper()
	select {
	case res := <-done:
		return res
	case <-time.After(20 * time.Second):
		t.Fatal("the command did not end")
		return keyexec.Result{}
	}
}

// syncBuffer is the command's output, read by the test while it runs.
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
