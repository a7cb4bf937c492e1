package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tokenorchestrator/tokenorchestrator/client"
	"github.com/tokenorchestrator/tokenorchestrator/internal/keyexec"
)

const execHelp = `Usage: token-orchestrator exec --env NAME [flags] [--] COMMAND [ARG...]

Run COMMAND with a key of a pool: claim a free key (waiting up to --wait),
put its secret into COMMAND's environment as NAME, keep the lease alive
while COMMAND runs, and release the key when COMMAND exits, with a cooldown
when --cooldown-on-exit names COMMAND's exit code. exec exits with
COMMAND's exit code; SIGINT, SIGTERM and SIGHUP sent to exec are passed on
to COMMAND (but the Ctrl-C of a terminal, which reaches COMMAND directly).
The flags come before COMMAND; '--' ends them.

The key must carry a secret (token-orchestrator keys import); a key
without one is released at once and nothing runs.

If the lease is lost while COMMAND runs (the key was deleted or released
by someone else, or the server could not be reached until the lease ran
out), the key may be someone else's already: exec says so on stderr, sends
COMMAND SIGTERM, then SIGKILL if it still runs after --kill-after, and
exits 4 whatever COMMAND's exit code.

Example: a batch job with a key of pool openai, which cools down for a
minute when the job exits 75 (rate-limited):

  token-orchestrator exec --pool openai --env OPENAI_API_KEY \
      --cooldown-on-exit 75=1m -- python batch.py

Exit codes of exec itself, besides those below: COMMAND's once it ran
(128+N when signal N ended it); 4 the lease was lost while COMMAND ran;
126 COMMAND could not be run; 127 COMMAND was not found; 128+N signal N
came while exec waited for a key.`

// Exit codes of exec beside the common ones.
const (
	exitLeaseLost   = 4
	exitCannotRun   = 126
	exitNotFound    = 127
	exitSignalsBase = 128
)

// forwardedSignals are the signals exec passes on to its command.
var forwardedSignals = []os.Signal{os.Interrupt, syscall.SIGTERM, syscall.SIGHUP}

// execFlags are the flags of exec, parsed.
type execFlags struct {
	fs        *flag.FlagSet
	newClient func() (*client.Client, error)
	pool      *string
	envName   *string
	labels    *[]string
	wait      *time.Duration
	killAfter *time.Duration
	cooldowns map[int]time.Duration
}

func newExecFlags(stderr io.Writer, getenv func(string) string) execFlags {
	fs := newFlagSet("token-orchestrator exec", execHelp, stderr)
	f := execFlags{fs: fs, cooldowns: map[int]time.Duration{}}
	f.pool = fs.String("pool", "", "the pool (default: the server's default pool)")
	f.envName = fs.String("env", "", "the environment variable that holds the key's secret in COMMAND's environment (required)")
	f.labels = labelsFlag(fs)
	f.wait = fs.Duration("wait", keyexec.DefaultWait, "wait up to this long for a key to become free (exit 3 when none did)")
	fs.Func("cooldown-on-exit", "CODE=DURATION: when COMMAND exits with CODE, release the key with this cooldown (at most 24h), e.g. 75=1m; repeatable",
		func(v string) error {
			code, d, err := parseExitCooldown(v)
			if err != nil {
				return err
			}
			f.cooldowns[code] = d
			return nil
		})
	f.killAfter = fs.Duration("kill-after", keyexec.DefaultKillAfter, "when the lease is lost: how long COMMAND has to stop after SIGTERM before it is killed")
	f.newClient = clientFlags(fs, getenv)
	// Flags go before the command, unlike other commands' flags.
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), strings.TrimSpace(execHelp))
		fmt.Fprintln(fs.Output(), "\nFlags (before COMMAND):")
		printFlags(fs)
		fmt.Fprintln(fs.Output(), "\n"+exitCodesHelp)
	}
	return f
}

// labelsFlag adds --label, repeatable, and returns the labels given.
func labelsFlag(fs *flag.FlagSet) *[]string {
	var labels []string
	fs.Func("label", "claim only a key that carries this label, NAME=VALUE; repeatable, all must match (the first is the one searched by)", func(v string) error {
		if _, _, err := splitLabel(v); err != nil {
			return err
		}
		labels = append(labels, v)
		return nil
	})
	return &labels
}

// parseExitCooldown reads CODE=DURATION.
func parseExitCooldown(v string) (int, time.Duration, error) {
	codeText, durationText, ok := strings.Cut(v, "=")
	if !ok {
		return 0, 0, errors.New("expected CODE=DURATION, e.g. 75=1m")
	}
	code, err := strconv.Atoi(strings.TrimSpace(codeText))
	if err != nil || code < 0 || code > 255 {
		return 0, 0, fmt.Errorf("exit code %q: expected a number from 0 to 255", codeText)
	}
	d, err := time.ParseDuration(strings.TrimSpace(durationText))
	if err != nil || d <= 0 || d > 24*time.Hour {
		return 0, 0, fmt.Errorf("cooldown %q: expected a duration above 0 and at most 24h, e.g. 30s", durationText)
	}
	return code, d, nil
}

func execWords() words { return words{flags: newExecFlags(io.Discard, noEnv).fs} }

// runExec runs "exec ...", passing this process's signals on.
func runExec(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, forwardedSignals...)
	defer signal.Stop(signals)
	return execWithSignals(signals, notFromTerminal, args, stdout, stderr, getenv)
}

// notFromTerminal holds back the SIGINT and SIGHUP that the terminal has
// sent the command itself, as it does when exec runs in its foreground.
func notFromTerminal(sig os.Signal) bool {
	return (sig != os.Interrupt && sig != syscall.SIGHUP) || !inTerminalForeground()
}

// execWithSignals runs "exec ...", passing on the signals that come on
// signals, those that forward allows (nil: all).
func execWithSignals(signals <-chan os.Signal, forward func(os.Signal) bool, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	f := newExecFlags(stderr, getenv)
	fs := f.fs
	command, err := parseCommandLine(fs, args, stdout)
	if err != nil {
		return parseError(err)
	}
	switch {
	case len(command) == 0:
		return usageError(fs, "expected a command to run")
	case *f.envName == "":
		return usageError(fs, "--env is required: the environment variable that holds the secret")
	case strings.ContainsAny(*f.envName, "=\x00"):
		return badValue(fs, "--env %q cannot name an environment variable", *f.envName)
	case *f.wait <= 0:
		return badValue(fs, "--wait must be more than 0, got %s", *f.wait)
	}
	c, err := f.newClient()
	if err != nil {
		return usageError(fs, "--server: %v", err)
	}
	// The command writes to the same outputs as exec's messages; outputs
	// that are files are handed to it as they are (a terminal stays one).
	stdout, stderr = lockedUnlessFile(stdout), lockedUnlessFile(stderr)
	res, err := keyexec.Run(context.Background(), keyexec.Config{
		Client: c, Pool: *f.pool, Labels: *f.labels, Wait: *f.wait,
		EnvName: *f.envName, Command: command,
		Stdin: stdin, Stdout: stdout, Stderr: stderr,
		Signals: signals, Forward: forward, Cooldowns: f.cooldowns, KillAfter: *f.killAfter,
		Notify: func(msg string) { fmt.Fprintf(stderr, "%s: %s\n", fs.Name(), msg) },
	})
	var (
		interrupted *keyexec.InterruptedError
		startErr    *keyexec.StartError
	)
	switch {
	case errors.As(err, &interrupted):
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		if sig, ok := interrupted.Signal.(syscall.Signal); ok {
			return exitSignalsBase + int(sig)
		}
		return exitFailed
	case errors.As(err, &startErr):
		fmt.Fprintf(stderr, "%s: %v (key %s released)\n", fs.Name(), err, res.KeyID)
		if startErr.NotFound {
			return exitNotFound
		}
		return exitCannotRun
	case errors.Is(err, client.ErrNoKeyAvailable):
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		return exitNoKey
	case errors.Is(err, keyexec.ErrNoSecret):
		fmt.Fprintf(stderr, "%s: %v: nothing was run, and the key was released.\n"+
			"exec hands a key's secret to the command; give the pool's keys secrets with 'token-orchestrator keys import'.\n", fs.Name(), err)
		return exitFailed
	case err != nil:
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		return exitFailed
	case res.LeaseLost != nil:
		fmt.Fprintf(stderr, "%s: the command exited %d after its lease was lost: exiting %d\n", fs.Name(), res.ExitCode, exitLeaseLost)
		return exitLeaseLost
	case res.ReleaseErr != nil:
		fmt.Fprintf(stderr, "%s: key %s could not be released (%v); its lease runs out on its own\n", fs.Name(), res.KeyID, res.ReleaseErr)
	}
	return res.ExitCode
}

// lockedUnlessFile makes w safe for the command's output and exec's
// messages to be written at once. A file is left alone: the command gets
// it directly, not through a pipe that exec copies.
func lockedUnlessFile(w io.Writer) io.Writer {
	if _, ok := w.(*os.File); ok {
		return w
	}
	return &lockedWriter{w: w}
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
