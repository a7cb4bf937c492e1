package server_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/config"
	"github.com/tokenorchestrator/tokenorchestrator/internal/server"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

// running is a server serving on loopback until the test stops it.
type running struct {
	srv  *server.Server
	url  string
	db   *pgxpool.Pool
	stop context.CancelFunc
	// done is closed when Serve has returned serveErr.
	done     chan struct{}
	serveErr error
}

// stopped waits for Serve to return, and returns its error.
func (r *running) stopped(t *testing.T) error {
	t.Helper()
	select {
	case <-r.done:
		return r.serveErr
	case <-time.After(safety):
		t.Fatalf("the server did not stop within %s", safety)
		return nil
	}
}

// serve starts a server with the binary's defaults, configure applied, on
// a database of the test's own. Its shutdown is the test's to trigger.
func serve(t *testing.T, configure func(*config.Config)) *running {
	t.Helper()
	cfg, err := config.Load(nil, func(string) string { return "" }, io.Discard)
	require.NoError(t, err)
	cfg.DatabaseURL = testdb.New(t)
	if configure != nil {
		configure(&cfg)
	}
	srv, err := server.New(context.Background(), cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	db, err := pgxpool.New(context.Background(), cfg.DatabaseURL)
	require.NoError(t, err)
	t.Cleanup(db.Close)
	ctx, stop := context.WithCancel(context.Background())
	r := &running{srv: srv, url: "http://" + l.Addr().String(), db: db, stop: stop, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.serveErr = srv.Serve(ctx, l)
	}()
	t.Cleanup(func() {
		stop()
		<-r.done
	})
	return r
}

// waitResult is what a client waiting for a key got.
type waitResult struct {
	status  int
	header  http.Header
	problem map[string]any
	err     error
}

// waitForKey asks for a key of the pool, waiting up to wait, in the
// background.
func waitForKey(url, pool, wait string) <-chan waitResult {
	out := make(chan waitResult, 1)
	go func() {
		resp, err := http.Get(url + "/keys?pool=" + pool + "&wait=" + wait)
		if err != nil {
			out <- waitResult{err: err}
			return
		}
		defer resp.Body.Close()
		r := waitResult{status: resp.StatusCode, header: resp.Header}
		raw, err := io.ReadAll(resp.Body)
		if err == nil {
			err = json.Unmarshal(raw, &r.problem)
		}
		r.err = err
		out <- r
	}()
	return out
}

// waitUntilWaiting returns once a client waits for a key of the pool on
// the server: the server registers its waiters in the database.
func waitUntilWaiting(t *testing.T, r *running, pool string) {
	t.Helper()
	deadline := time.Now().Add(safety)
	for {
		var waiting bool
		require.NoError(t, r.db.QueryRow(context.Background(),
			"SELECT EXISTS (SELECT 1 FROM pool_waiters WHERE pool = $1)", pool).Scan(&waiting))
		if waiting {
			return
		}
		require.True(t, time.Now().Before(deadline), "no client waits for a key of %s", pool)
		time.Sleep(10 * time.Millisecond)
	}
}

// requireShuttingDown checks the answer a waiting client gets from a
// server that shuts down: 503 with Retry-After and problem details, so that
// it retries, on another replica.
func requireShuttingDown(t *testing.T, r waitResult) {
	t.Helper()
	require.NoError(t, r.err, "the waiting client got an answer")
	require.Equal(t, http.StatusServiceUnavailable, r.status, "%v", r.problem)
	require.Equal(t, "application/problem+json", r.header.Get("Content-Type"))
	require.NotEmpty(t, r.header.Get("Retry-After"))
	require.Equal(t, "shutting_down", r.problem["code"], "%v", r.problem)
}

// A client waiting for a key (up to 60 s, longer than SHUTDOWN_TIMEOUT)
// when the server is told to stop is answered at once, 503 with
// Retry-After, instead of being cut off when SHUTDOWN_TIMEOUT runs out.
func TestShutdownAnswersWaitingClients(t *testing.T) {
	t.Parallel()
	r := serve(t, func(c *config.Config) { c.DrainDelay = 0 })
	holdEveryKey(t, r.url, "held")
	waiter := waitForKey(r.url, "held", "60s")
	waitUntilWaiting(t, r, "held")

	r.stop()
	select {
	case got := <-waiter:
		requireShuttingDown(t, got)
	case <-time.After(safety):
		t.Fatalf("the waiting client got no answer within %s of the shutdown", safety)
	}
	require.NoError(t, r.stopped(t))
}

// Told to stop, the server first fails readiness for the drain delay while
// it still serves, so that load balancers take it out before it closes its
// listener. Waiting clients are answered at once and new waits refused, 503
// with Retry-After: they could not finish before the server stops, and go
// to another replica instead. Other requests are served until the delay
// ends.
func TestShutdownDrainsBeforeStopping(t *testing.T) {
	t.Parallel()
	r := serve(t, func(c *config.Config) { c.DrainDelay = time.Hour })
	release := make(chan struct{})
	r.srv.EndDrainDelayOn(release)
	endDrain := sync.OnceFunc(func() { close(release) })
	defer endDrain()
	require.Equal(t, http.StatusOK, get(t, r.url+"/readyz").StatusCode)
	holdEveryKey(t, r.url, "held")
	waiter := waitForKey(r.url, "held", "60s")
	waitUntilWaiting(t, r, "held")

	r.stop()
	select {
	case got := <-waiter:
		requireShuttingDown(t, got)
	case <-time.After(safety):
		t.Fatalf("the waiting client got no answer within %s of the shutdown", safety)
	}
	// The drain delay has not ended: the server still serves.
	ready := get(t, r.url+"/readyz")
	require.Equal(t, http.StatusServiceUnavailable, ready.StatusCode)
	require.Equal(t, "not_ready", ready.problem["code"])
	require.Contains(t, ready.problem["detail"], "shutting down")
	requireShuttingDown(t, <-waitForKey(r.url, "held", "30s"))
	require.Equal(t, http.StatusOK, get(t, r.url+"/healthz").StatusCode, "the server is alive")
	require.Equal(t, "no_free_key", get(t, r.url+"/keys?pool=held").problem["code"], "requests that do not wait are served")

	select {
	case <-r.done:
		t.Fatalf("the server stopped before the drain delay ended: %v", r.serveErr)
	default:
	}
	endDrain()
	require.NoError(t, r.stopped(t))
}

// get sends a GET and reads the answer's JSON body.
func get(t *testing.T, url string) answer {
	t.Helper()
	return do(t, http.MethodGet, url, "")
}
