// Package keyexec runs a command with a key of a Token Orchestrator pool:
// it claims a free key, hands the key's secret to the command in an
// environment variable, keeps the lease alive while the command runs, and
// releases the key when the command exits, with a cooldown chosen by the
// command's exit code if asked.
//
// A lease lost while the command runs (the key was deleted, or released by
// someone else, or no keep-alive got through before the lease ran out)
// means that the key may already be someone else's: the command is asked
// to stop with SIGTERM, and killed if it has not stopped after a grace
// period.
package keyexec

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/tokenorchestrator/tokenorchestrator/client"
)

// Defaults of Config.
const (
	// DefaultWait is how long Run waits for a free key.
	DefaultWait = 30 * time.Second
	// DefaultKillAfter is how long a command whose lease was lost has to
	// stop after SIGTERM before it is killed.
	DefaultKillAfter = 10 * time.Second
	// DefaultReleaseTimeout bounds the call that releases the key.
	DefaultReleaseTimeout = 30 * time.Second
	// waitDelay bounds how long Run waits, once the command has exited,
	// for the output that processes it started still hold open.
	waitDelay = 2 * time.Second
)

// Config says what to run, with a key of which pool.
type Config struct {
	// Client claims, keeps alive and releases the key. Required.
	Client *client.Client
	// Pool the key comes from. Defaults to the server's default pool.
	Pool string
	// Labels narrow the claim to keys that carry every one, each written
	// name=value. Defaults to none.
	Labels []string
	// Wait bounds how long Run waits for a free key. Defaults to
	// DefaultWait.
	Wait time.Duration
	// EnvName is the environment variable that holds the secret in the
	// command's environment. Required.
	EnvName string
	// Command is the program and its arguments. Required.
	Command []string
	// Env is the command's environment, but for EnvName, which Run sets.
	// Defaults to this process's environment.
	Env []string
	// Stdin, Stdout and Stderr are the command's. Default to this
	// process's.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Signals are passed on to the command while it runs. One that comes
	// while Run waits for a key ends the wait (Run returns an
	// *InterruptedError). Defaults to none.
	Signals <-chan os.Signal
	// Forward, when set, says whether a signal that comes while the
	// command runs is passed on to it: a terminal sends Ctrl-C to the
	// command itself when both run in its foreground, and a second SIGINT
	// would interrupt the command's own handling of the first. Defaults to
	// every signal.
	Forward func(os.Signal) bool
	// Cooldowns maps exit codes of the command to the cooldown of the key's
	// release: no claim takes the key again before it has passed. Exit codes
	// it does not name release the key at once. Defaults to none.
	Cooldowns map[int]time.Duration
	// KillAfter is how long the command has to stop after SIGTERM when the
	// lease is lost, before it is killed. Defaults to DefaultKillAfter.
	KillAfter time.Duration
	// ReleaseTimeout bounds the call that releases the key. Defaults to
	// DefaultReleaseTimeout.
	ReleaseTimeout time.Duration
	// Notify, when set, is told of what happens while the command runs
	// that the user should know at once: the lease's loss. Defaults to
	// nothing.
	Notify func(msg string)
}

// Result is what happened once a key was claimed.
type Result struct {
	// KeyID is the key the command ran with.
	KeyID string
	// ExitCode is the command's: its own when it exited, 128+N when signal
	// N ended it, as shells report it.
	ExitCode int
	// LeaseLost, when not nil, is why the lease was lost while the command
	// ran; the command was then asked to stop.
	LeaseLost error
	// Cooldown is the cooldown the key was released with; zero for none.
	Cooldown time.Duration
	// ReleaseErr is why the key could not be released after the command
	// exited; the lease then runs out on its own (and a cooldown is lost).
	// Not set when the lease was lost.
	ReleaseErr error
}

// ErrNoSecret: the key claimed carries no secret to hand to the command.
// The key was released at once.
var ErrNoSecret = errors.New("the key has no secret")

// StartError is a command that could not be started. The key was released
// at once.
type StartError struct {
	// NotFound: the program does not exist (the shell's 127); else it
	// exists but cannot be run (126).
	NotFound bool
	Err      error
}

func (e *StartError) Error() string { return e.Err.Error() }
func (e *StartError) Unwrap() error { return e.Err }

// InterruptedError is a signal that came while Run waited for a key;
// nothing was run and no key is held.
type InterruptedError struct{ Signal os.Signal }

func (e *InterruptedError) Error() string {
	return fmt.Sprintf("interrupted by %v while waiting for a key", e.Signal)
}

// Run claims a key, runs the command with it, and releases the key. The
// error is about what happened before the command ran: the claim (errors
// of the client package, such as client.ErrNoKeyAvailable when no key
// became free in time), ErrNoSecret, *StartError or *InterruptedError. Once
// the command has run, the Result tells the rest. ctx bounds the claim
// only.
func Run(ctx context.Context, cfg Config) (Result, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return Result{}, err
	}
	lease, err := claim(ctx, cfg)
	if err != nil {
		return Result{}, err
	}
	res := Result{KeyID: lease.ID()}
	releaseNow := func() {
		rctx, cancel := context.WithTimeout(context.Background(), cfg.ReleaseTimeout)
		defer cancel()
		_ = lease.Release(rctx)
	}
	if lease.Secret() == "" {
		releaseNow()
		return res, fmt.Errorf("key %s of pool %q: %w", lease.ID(), lease.Key().Pool, ErrNoSecret)
	}

	cmd := exec.Command(cfg.Command[0], cfg.Command[1:]...)
	cmd.Env = append(withoutVar(cfg.Env, cfg.EnvName), cfg.EnvName+"="+lease.Secret())
	cmd.Stdin, cmd.Stdout, cmd.Stderr = cfg.Stdin, cfg.Stdout, cfg.Stderr
	// A command's own children may keep its output open after it exits.
	cmd.WaitDelay = waitDelay
	if err := cmd.Start(); err != nil {
		releaseNow()
		return res, &StartError{NotFound: errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist), Err: err}
	}

	res.ExitCode, res.LeaseLost = wait(cmd, lease, cfg)
	if res.LeaseLost != nil {
		// Nothing to release: the lease is gone, and the key with it.
		return res, nil
	}
	res.Cooldown = cfg.Cooldowns[res.ExitCode]
	rctx, cancel := context.WithTimeout(context.Background(), cfg.ReleaseTimeout)
	defer cancel()
	if res.Cooldown > 0 {
		res.ReleaseErr = lease.ReleaseWithCooldown(rctx, res.Cooldown)
	} else {
		res.ReleaseErr = lease.Release(rctx)
	}
	return res, nil
}

func (cfg Config) withDefaults() Config {
	if cfg.Wait <= 0 {
		cfg.Wait = DefaultWait
	}
	if cfg.Env == nil {
		cfg.Env = os.Environ()
	}
	if cfg.Stdin == nil {
		cfg.Stdin = os.Stdin
	}
	if cfg.Stdout == nil {
		cfg.Stdout = os.Stdout
	}
	if cfg.Stderr == nil {
		cfg.Stderr = os.Stderr
	}
	if cfg.KillAfter <= 0 {
		cfg.KillAfter = DefaultKillAfter
	}
	if cfg.ReleaseTimeout <= 0 {
		cfg.ReleaseTimeout = DefaultReleaseTimeout
	}
	if cfg.Notify == nil {
		cfg.Notify = func(string) {}
	}
	return cfg
}

func (cfg Config) validate() error {
	var errs []error
	if cfg.Client == nil {
		errs = append(errs, errors.New("keyexec: a client of the Token Orchestrator server is required"))
	}
	if len(cfg.Command) == 0 || cfg.Command[0] == "" {
		errs = append(errs, errors.New("keyexec: no command to run"))
	}
	if cfg.EnvName == "" || strings.ContainsAny(cfg.EnvName, "=\x00") {
		errs = append(errs, fmt.Errorf("keyexec: %q cannot name an environment variable", cfg.EnvName))
	}
	return errors.Join(errs...)
}

// claim claims a key, waiting up to cfg.Wait, unless a signal comes first.
func claim(ctx context.Context, cfg Config) (*client.Lease, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Wait)
	defer cancel()
	type claimed struct {
		lease *client.Lease
		err   error
	}
	done := make(chan claimed, 1)
	go func() {
		lease, err := cfg.Client.Claim(ctx, cfg.Pool, client.WithLabels(cfg.Labels...))
		done <- claimed{lease, err}
	}()
	select {
	case c := <-done:
		return c.lease, c.err
	case sig := <-cfg.Signals:
		cancel()
		if c := <-done; c.lease != nil {
			// The claim got through as the signal came.
			rctx, cancel := context.WithTimeout(context.Background(), cfg.ReleaseTimeout)
			defer cancel()
			_ = c.lease.Release(rctx)
		}
		return nil, &InterruptedError{Signal: sig}
	}
}

// wait waits for the command to exit, passing signals on, and stops it if
// the lease is lost. It returns the command's exit code.
func wait(cmd *exec.Cmd, lease *client.Lease, cfg Config) (int, error) {
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	lost := lease.Lost()
	var (
		lostErr error
		kill    <-chan time.Time
	)
	for {
		select {
		case <-exited:
			// The process's state tells all; a Wait that failed leaves
			// none, which is exit code 1.
			return exitCode(cmd), lostErr
		case sig := <-cfg.Signals:
			if cfg.Forward == nil || cfg.Forward(sig) {
				_ = cmd.Process.Signal(sig)
			}
		case <-lost:
			lost = nil
			lostErr = lease.Err()
			cfg.Notify(fmt.Sprintf("lease lost while the command ran (%v); the key may be someone else's now: "+
				"sending the command SIGTERM, and SIGKILL if it still runs in %s", lostErr, cfg.KillAfter))
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				// Where there is no SIGTERM (Windows), or the command
				// is gone already.
				_ = cmd.Process.Kill()
			}
			kill = time.After(cfg.KillAfter)
		case <-kill:
			kill = nil
			cfg.Notify(fmt.Sprintf("the command still ran %s after SIGTERM: killing it", cfg.KillAfter))
			_ = cmd.Process.Kill()
		}
	}
}

// exitCode is the command's exit code as a shell reports it: 128+N when
// signal N ended it.
func exitCode(cmd *exec.Cmd) int {
	if cmd.ProcessState == nil {
		return 1
	}
	if code := cmd.ProcessState.ExitCode(); code >= 0 {
		return code
	}
	if sig, ok := signalOf(cmd.ProcessState); ok {
		return 128 + sig
	}
	return 1
}

// withoutVar is env without the variables named name.
func withoutVar(env []string, name string) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); k != name {
			out = append(out, kv)
		}
	}
	return out
}
