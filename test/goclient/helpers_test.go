package goclient_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/client"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/servertest"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }

// newClient returns a client of the URL that retries quickly.
func newClient(t *testing.T, url string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(url, append([]client.Option{client.WithRetry(3, time.Millisecond, 5*time.Millisecond)}, opts...)...)
	require.NoError(t, err)
	return c
}

// testContext ends a little before the test's deadline, so that a test that
// waits too long fails with its own message.
func testContext(t *testing.T) context.Context {
	deadline, ok := t.Deadline()
	if !ok {
		return t.Context()
	}
	ctx, cancel := context.WithDeadline(t.Context(), deadline.Add(-5*time.Second))
	t.Cleanup(cancel)
	return ctx
}

// recordingProxy sits between a client and a replica and records what
// passes, calling onResponse (if set) with the number of each answer, and
// rewrite (if set) before the answer goes on to the client.
type recordingProxy struct {
	URL string

	mu         sync.Mutex
	requests   []*http.Request
	statuses   []int
	onResponse func(n int, status int)
	rewrite    func(n int, resp *http.Response)
}

func newRecordingProxy(t *testing.T, target string) *recordingProxy {
	t.Helper()
	u, err := url.Parse(target)
	require.NoError(t, err)
	p := &recordingProxy{}
	proxy := httputil.NewSingleHostReverseProxy(u)
	proxy.ModifyResponse = func(resp *http.Response) error {
		p.mu.Lock()
		p.requests = append(p.requests, resp.Request)
		p.statuses = append(p.statuses, resp.StatusCode)
		n, hook, rewrite := len(p.statuses), p.onResponse, p.rewrite
		p.mu.Unlock()
		if hook != nil {
			hook(n, resp.StatusCode)
		}
		if rewrite != nil {
			rewrite(n, resp)
		}
		return nil
	}
	srv := httptest.NewServer(proxy)
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

func (p *recordingProxy) recorded() ([]*http.Request, []int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*http.Request(nil), p.requests...), append([]int(nil), p.statuses...)
}

// loseAnswer makes the answer look like a 503 of a replica that could not
// reach its database: the server did its work, but the client never hears of
// it, as when a replica's commit went through just as its answer failed.
func loseAnswer(resp *http.Response) {
	body := `{"type":"/problems/database_unavailable","title":"Database unavailable","status":503,` +
		`"detail":"lost on the way","code":"database_unavailable"}`
	_ = resp.Body.Close()
	resp.StatusCode = http.StatusServiceUnavailable
	resp.Status = "503 Service Unavailable"
	resp.Header = http.Header{"Content-Type": {"application/problem+json"}, "Retry-After": {"1"}}
	resp.Body = io.NopCloser(strings.NewReader(body))
	resp.ContentLength = int64(len(body))
}

// claimOneKey starts a replica with one key and claims it.
func claimOneKey(t *testing.T, ctx context.Context, o servertest.Options) (*servertest.Replica, *client.Client, *client.Lease) {
	t.Helper()
	replica := servertest.Start(t, o)
	c := newClient(t, replica.URL)
	_, err := c.CreateKey(ctx, "")
	require.NoError(t, err)
	lease, err := c.Claim(ctx, "")
	require.NoError(t, err)
	return replica, c, lease
}

// waitForLoss waits until the lease is lost, failing the test if it is not
// before ctx ends.
func waitForLoss(t *testing.T, ctx context.Context, lease *client.Lease) {
	t.Helper()
	select {
	case <-lease.Lost():
	case <-ctx.Done():
		t.Fatalf("the lease of key %s was never reported lost", lease.ID())
	}
}

// countEvents counts the history rows of one kind of a pool.
func countEvents(t *testing.T, dbURL, pool, event string) int {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dbURL)
	require.NoError(t, err)
	defer conn.Close(t.Context())
	var n int
	require.NoError(t, conn.QueryRow(t.Context(),
		"SELECT count(*) FROM key_events WHERE pool = $1 AND event = $2", pool, event).Scan(&n))
	return n
}
