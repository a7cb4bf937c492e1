package servertest

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/tokenorchestrator/tokenorchestrator/internal/pgembed"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

// BuildBinary builds the server binary as users run it, into the test's
// temporary directory; root is the module's root relative to the test's
// package. SERVER_BIN, when set, names one built already (make build's
// bin/token-orchestrator) and nothing is built.
func BuildBinary(t testing.TB, root string) string {
	t.Helper()
	if bin := os.Getenv("SERVER_BIN"); bin != "" {
		return bin
	}
	bin := filepath.Join(t.TempDir(), "token-orchestrator")
	build := exec.Command("go", "build", "-o", bin, "./cmd/token-orchestrator")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v: %s", err, out)
	}
	return bin
}

// StartBinary starts the binary on a free loopback port with a database of
// its own, the given lease length, keys that live a minute, a background
// job every 100ms, no tokens and the extra environment; it stops it when
// the test ends (logging its output if the test failed) and returns its
// URL once it is ready. The tests of the clients in other languages talk to
// servers started this way.
func StartBinary(t testing.TB, bin string, leaseTTL time.Duration, env ...string) string {
	t.Helper()
	port, err := pgembed.FreePort()
	if err != nil {
		t.Fatalf("a free port: %v", err)
	}
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
	if err := server.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	stopped := make(chan struct{})
	var waitErr error // set before stopped is closed
	go func() { waitErr = server.Wait(); close(stopped) }()
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
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get(url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return url
			}
		}
		select {
		case <-stopped:
			t.Fatalf("the server on %s stopped before it was ready (%v); its log:\n%s", addr, waitErr, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server on %s did not become ready; its log:\n%s", addr, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
