package faults

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

func TestMain(m *testing.M) {
	code := testdb.Main(m)
	if binaryDir != "" {
		os.RemoveAll(binaryDir)
	}
	os.Exit(code)
}

var (
	buildOnce sync.Once
	binary    string
	binaryDir string
	buildErr  error
)

// serverBinary builds the server once per test run.
func serverBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if binaryDir, buildErr = os.MkdirTemp("", "faults-bin-"); buildErr != nil {
			return
		}
		binary = filepath.Join(binaryDir, "token-orchestrator")
		out, err := exec.Command("go", "build", "-o", binary, "github.com/tokenorchestrator/tokenorchestrator/cmd/token-orchestrator").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("%w\n%s", err, out)
		}
	})
	require.NoError(t, buildErr, "build the server")
	return binary
}

// replica is one server process.
type replica struct {
	url  string
	cmd  *exec.Cmd
	log  *lockedBuffer
	done chan struct{}
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startReplica starts a server process on a free loopback port and waits
// until it is ready. env adds settings (NAME=value). A replica has at most
// 8 connections to the database unless env says otherwise: the tests of a
// run share one PostgreSQL of 100 connection slots, and three replicas at
// the default of 20 may hold 63 of them, in each of two tests at once.
func startReplica(t *testing.T, dbURL string, env ...string) *replica {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	r := &replica{url: "http://" + addr, log: &lockedBuffer{}, done: make(chan struct{})}
	r.cmd = exec.Command(serverBinary(t))
	// No drain delay: no load balancer has to learn that a replica stops.
	r.cmd.Env = append(os.Environ(), "DATABASE_URL="+dbURL, "ADDR="+addr, "LOG_LEVEL=info", "SHUTDOWN_TIMEOUT=5s", "DRAIN_DELAY=0", "DB_MAX_CONNS=8")
	r.cmd.Env = append(r.cmd.Env, env...)
	r.cmd.Stdout, r.cmd.Stderr = r.log, r.log
	require.NoError(t, r.cmd.Start())
	go func() { _ = r.cmd.Wait(); close(r.done) }()
	t.Cleanup(func() {
		r.stop()
		if t.Failed() {
			t.Logf("replica %s log:\n%s", r.url, r.log.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(r.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return r
			}
		}
		select {
		case <-r.done:
			t.Fatalf("replica exited at start:\n%s", r.log.String())
		default:
		}
		require.True(t, time.Now().Before(deadline), "replica not ready:\n%s", r.log.String())
		time.Sleep(50 * time.Millisecond)
	}
}

// kill ends the process at once, as a crash would: no shutdown, no resign,
// its leases left behind.
func (r *replica) kill() {
	_ = r.cmd.Process.Signal(syscall.SIGKILL)
	<-r.done
}

// stop shuts the process down gracefully.
func (r *replica) stop() {
	select {
	case <-r.done:
		return
	default:
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(15 * time.Second):
		r.kill()
	}
}

func urls(rs ...*replica) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.url
	}
	return out
}
