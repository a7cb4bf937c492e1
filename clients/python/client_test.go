// Package python_test runs the Python client's tests (tests/, with pytest)
// against the real server binary, started on a free loopback port with a
// database of its own and short TTLs.
package python_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/servertest"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }

// minTests is how many tests tests/ has at least: fewer passing means some
// did not run.
const minTests = 52

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
	bin := servertest.BuildBinary(t, filepath.Join("..", ".."))

	// The server the tests use holds secrets under a random encryption key;
	// a second one has none, to see secrets refused.
	secretKey := make([]byte, 32)
	_, err := rand.Read(secretKey)
	require.NoError(t, err)
	url := servertest.StartBinary(t, bin, leaseTTL, "SECRET_KEY="+base64.StdEncoding.EncodeToString(secretKey))
	noSecretsURL := servertest.StartBinary(t, bin, leaseTTL, "SECRET_KEY=")

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
