package client_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/client"
	"github.com/tokenorchestrator/tokenorchestrator/internal/servertest"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testdb"
)

// serverURL is a replica that the examples talk to.
var serverURL string

func TestMain(m *testing.M) {
	var err error
	if serverURL, err = servertest.StartShared(servertest.Options{}); err != nil {
		fmt.Fprintln(os.Stderr, "start the replica of the examples:", err)
		os.Exit(1)
	}
	os.Exit(testdb.Main(m))
}

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
// passes, calling onResponse (if set) with the number of each answer.
type recordingProxy struct {
	URL string

	mu         sync.Mutex
	requests   []*http.Request
	statuses   []int
	onResponse func(n int, status int)
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
		n, hook := len(p.statuses), p.onResponse
		p.mu.Unlock()
		if hook != nil {
			hook(n, resp.StatusCode)
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

// leaseOneKey starts a replica with one key and leases it.
func leaseOneKey(t *testing.T, ctx context.Context, o servertest.Options) (*servertest.Replica, *client.Client, *client.Lease) {
	t.Helper()
	replica := servertest.Start(t, o)
	c := newClient(t, replica.URL)
	_, err := c.CreateKey(ctx, "")
	require.NoError(t, err)
	lease, err := c.Acquire(ctx, "")
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
