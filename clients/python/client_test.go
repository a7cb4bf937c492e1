// Package python_test runs the Python client's tests (tests/, with pytest)
// against the real server binary, started on a free loopback port with a
// database of its own and short TTLs.
package python_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/pgembed"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }

// minTests is how many tests tests/ has at least: fewer passing means some
// did not run.
const minTests = 30

// leaseTTL is short, so that a lease kept alive past it is quick to see.
const leaseTTL = time.Second

// python is the interpreter with Debian's packages: another python3 may come
// first on PATH without them. PYTHON overrides it.
func python() string {
	if p := os.Getenv("PYTHON"); p != "" {
		return p
	}
	return "/usr/bin/python3"
}

func TestPythonClient(t *testing.T) {
	t.Parallel()
	py := python()
	check := exec.Command(py, "-c", "import httpx, pytest, pytest_asyncio, hatchling, build, venv")
	if out, err := check.CombinedOutput(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("the Python client's tests cannot run with %s (%v: %s): make ensure-python installs httpx, pytest, pytest-asyncio, hatchling and build", py, err, out)
		}
		t.Skipf("the Python client's tests need httpx, pytest, pytest-asyncio, hatchling and build for %s (%v: %s): run make ensure-python", py, err, out)
	}

	// The binary, built as users run it; SERVER_BIN names one built
	// already (make build's bin/token-orchestrator).
	bin := os.Getenv("SERVER_BIN")
	if bin == "" {
		bin = filepath.Join(t.TempDir(), "token-orchestrator")
		build := exec.Command("go", "build", "-o", bin, "./cmd/token-orchestrator")
		build.Dir = filepath.Join("..", "..")
		out, err := build.CombinedOutput()
		require.NoError(t, err, "go build: %s", out)
	}

	// The server the tests use holds secrets under a random encryption key;
	// a second one has none, to see secrets refused.
	secretKey := make([]byte, 32)
	_, err := rand.Read(secretKey)
	require.NoError(t, err)
	url := startServer(t, bin, "SECRET_KEY="+base64.StdEncoding.EncodeToString(secretKey))
	noSecretsURL := startServer(t, bin, "SECRET_KEY=")

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tests := exec.CommandContext(ctx, py, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfEs", "tests")
	tests.Env = append(os.Environ(),
		"PYTHONPATH=src", "PYTHONDONTWRITEBYTECODE=1",
		"TO_URL="+url, "TO_URL_NO_SECRETS="+noSecretsURL,
		fmt.Sprintf("TO_LEASE_TTL=%g", leaseTTL.Seconds()))
	out, err := tests.CombinedOutput()
	t.Logf("pytest:\n%s", out)
	require.NoError(t, err, "the Python client's tests failed")
	summary := regexp.MustCompile(`(?m)^=*\s*(\d+) passed.*$`).FindStringSubmatch(string(out))
	require.NotNil(t, summary, "no count of passed tests")
	n, err := strconv.Atoi(summary[1])
	require.NoError(t, err)
	require.GreaterOrEqual(t, n, minTests, "tests were left out")
	require.NotRegexp(t, `skipped|deselected|xfail`, summary[0], "a test was skipped")
}

// startServer starts the binary on a free loopback port with a database of
// its own, short TTLs and the extra environment, stops it when the test
// ends, and returns its URL once it is ready.
func startServer(t *testing.T, bin string, env ...string) string {
	t.Helper()
	port, err := pgembed.FreePort()
	require.NoError(t, err)
	addr := fmt.Sprintf("127.0.0.1:%d", port)

	var logs bytes.Buffer
	server := exec.Command(bin, "serve")
	server.Env = append(os.Environ(),
		"DATABASE_URL="+testdb.New(t),
		"ADDR="+addr,
		"LEASE_TTL="+leaseTTL.String(),
		"KEY_TTL=1m",
		"SWEEP_INTERVAL=100ms",
		"DRAIN_DELAY=0s",
		"ADMIN_TOKEN=", "CLIENT_TOKEN=", "ADMIN_TOKEN_FILE=", "CLIENT_TOKEN_FILE=",
		"SECRET_KEY_FILE=", "SECRET_KEYS_OLD=", "SECRET_KEYS_OLD_FILE=",
	)
	server.Env = append(server.Env, env...)
	server.Stdout, server.Stderr = &logs, &logs
	require.NoError(t, server.Start())
	stopped := make(chan error, 1)
	go func() { stopped <- server.Wait() }()
	t.Cleanup(func() {
		_ = server.Process.Signal(syscall.SIGTERM)
		select {
		case <-stopped:
		case <-time.After(20 * time.Second):
			_ = server.Process.Kill()
			<-stopped
		}
		if t.Failed() {
			t.Logf("log of the server on %s:\n%s", addr, logs.String())
		}
	})

	url := "http://" + addr
	ready := func() bool {
		resp, err := http.Get(url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	require.Eventually(t, ready, 60*time.Second, 50*time.Millisecond, "the server on %s did not become ready; its log:\n%s", addr, &logs)
	return url
}
