// Package typescript_test runs the TypeScript client's tests (test/, built
// into dist/ by npm run build) against the real server binary, started on a
// free loopback port with a database of its own and short TTLs.
package typescript_test

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

// minTests is how many tests test/client.test.ts has: fewer passing means
// some did not run.
const minTests = 28

// leaseTTL is short, so that a lease kept alive past it is quick to see.
const leaseTTL = time.Second

func TestTypeScriptClient(t *testing.T) {
	t.Parallel()
	node, err := exec.LookPath("node")
	if err == nil {
		_, err = os.Stat(filepath.Join("dist", "test", "client.test.js"))
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("the TypeScript client's tests cannot run (%v): make test builds them with npm ci and npm run build", err)
		}
		t.Skipf("the TypeScript client's tests are not built (%v): run make test/typescript", err)
	}

	// The binary, built as users run it.
	bin := servertest.BuildBinary(t, filepath.Join("..", ".."))

	// The server the tests use holds secrets under a random encryption key;
	// a second one has none, to see secrets refused.
	secretKey := make([]byte, 32)
	_, err = rand.Read(secretKey)
	require.NoError(t, err)
	url := servertest.StartBinary(t, bin, leaseTTL, "SECRET_KEY="+base64.StdEncoding.EncodeToString(secretKey))
	noSecretsURL := servertest.StartBinary(t, bin, leaseTTL, "SECRET_KEY=")

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tests := exec.CommandContext(ctx, node, "--test", "--test-reporter=tap", filepath.Join("dist", "test", "client.test.js"))
	tests.Env = append(os.Environ(), "TO_URL="+url, "TO_URL_NO_SECRETS="+noSecretsURL,
		fmt.Sprintf("TO_LEASE_TTL_MS=%d", leaseTTL.Milliseconds()))
	out, err := tests.CombinedOutput()
	t.Logf("node --test:\n%s", out)
	require.NoError(t, err, "the TypeScript client's tests failed")
	require.Contains(t, string(out), "# fail 0")
	// A suite skipped as a whole counts no skipped test: count the passes.
	passed := regexp.MustCompile(`(?m)^# pass (\d+)$`).FindStringSubmatch(string(out))
	require.NotNil(t, passed, "no count of passed tests")
	n, err := strconv.Atoi(passed[1])
	require.NoError(t, err)
	require.GreaterOrEqual(t, n, minTests, "tests were skipped")
	require.Contains(t, string(out), "# skipped 0", "a test was skipped")
}
