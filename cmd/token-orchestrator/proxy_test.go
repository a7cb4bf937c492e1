package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/servertest"
)

// runningProxy is a proxy command serving in the test.
type runningProxy struct {
	url, metrics string
	stderr       *syncBuffer
	stop         context.CancelFunc
	// done is closed when the command has returned code.
	done chan struct{}
	code int
}

// wait waits until the command returns, and returns its exit code.
func (p *runningProxy) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(30 * time.Second):
		t.Fatalf("the proxy did not stop: %s", p.stderr)
		return 0
	}
}

// httpClient gives up on an answer that does not end in time, so that a
// test fails instead of hanging.
var httpClient = &http.Client{Timeout: 30 * time.Second}

// startProxy runs the proxy command until the test stops it, and waits
// until it listens.
func startProxy(t *testing.T, env map[string]string, args ...string) *runningProxy {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	p := &runningProxy{stderr: &syncBuffer{}, stop: stop, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		p.code = proxyUntil(ctx, append([]string{"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"}, args...),
			io.Discard, p.stderr, func(name string) string { return env[name] })
	}()
	t.Cleanup(func() {
		stop()
		p.wait(t)
	})
	listening := regexp.MustCompile(`msg="proxy listening" addr=(\S+) .* metrics=(\S+)`)
	require.Eventually(t, func() bool {
		m := listening.FindStringSubmatch(p.stderr.String())
		if m != nil {
			p.url, p.metrics = m[1], m[2]
		}
		return m != nil
	}, 10*time.Second, 5*time.Millisecond, "the proxy listens: %s", p.stderr)
	return p
}

func TestProxyCommand(t *testing.T) {
	t.Parallel()
	server := secretsServer(t, servertest.Options{})
	c, key, secret := importKey(t, server, "api")
	var (
		mu   sync.Mutex
		auth []string
	)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auth = append(auth, r.Header.Get("Authorization")+" "+r.Header.Get("X-Api-Key"))
		mu.Unlock()
		if r.URL.Path == "/v1/limited" {
			w.Header().Set("Retry-After", "30")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: "+r.URL.Path+"\n\n")
	}))
	t.Cleanup(upstream.Close)
	env := map[string]string{"TOKEN_ORCHESTRATOR_SERVER": server}
	p := startProxy(t, env, "--pool", "api", "--upstream", upstream.URL, "--header", "X-Api-Key: {secret}",
		"--header", "Authorization: Bearer {secret}", "--wait", "1s")

	req, err := http.NewRequest(http.MethodGet, p.url+"/v1/models", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer mine")
	resp, err := httpClient.Do(req)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "data: /v1/models\n\n", string(body))

	resp, err = httpClient.Get(p.url + "/v1/limited")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	require.Eventually(t, func() bool {
		info, err := c.GetKey(context.Background(), key.ID)
		require.NoError(t, err)
		return !info.IsBlocked && info.CoolingUntil != nil
	}, 5*time.Second, 5*time.Millisecond, "the rate-limited key cools down")

	// The only key cools down: no key within --wait.
	resp, err = httpClient.Get(p.url + "/v1/models")
	require.NoError(t, err)
	problem, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	require.Equal(t, "1", resp.Header.Get("Retry-After"))
	require.Contains(t, string(problem), `"code":"no_free_key"`)

	mu.Lock()
	require.Equal(t, []string{"Bearer " + secret + " " + secret, "Bearer " + secret + " " + secret}, auth)
	mu.Unlock()

	// The metrics are served apart; nothing the proxy forwards reaches
	// them.
	resp, err = httpClient.Get(p.metrics)
	require.NoError(t, err)
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	for _, line := range []string{
		`tokenorchestrator_proxy_requests_total{outcome="forwarded",pool="api"} 1`,
		`tokenorchestrator_proxy_requests_total{outcome="rate_limited",pool="api"} 1`,
		`tokenorchestrator_proxy_requests_total{outcome="no_key",pool="api"} 1`,
		`tokenorchestrator_proxy_upstream_responses_total{code="429",pool="api"} 1`,
		`tokenorchestrator_proxy_request_duration_seconds_count{outcome="forwarded",pool="api"} 1`,
	} {
		require.Contains(t, string(metrics), line+"\n")
	}
	require.NotContains(t, string(metrics), secret)

	p.stop()
	require.Equal(t, exitOK, p.wait(t))
	require.Contains(t, p.stderr.String(), "proxy shutting down")
	require.NotContains(t, p.stderr.String(), secret, "the secret is never logged")
}

// A request still under way when the shutdown timeout has passed is
// broken off, and its key released.
func TestProxyShutdownReleasesKeys(t *testing.T) {
	t.Parallel()
	server := secretsServer(t, servertest.Options{})
	c, key, _ := importKey(t, server, "")
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	t.Cleanup(upstream.Close)
	p := startProxy(t, map[string]string{"TOKEN_ORCHESTRATOR_SERVER": server}, "--upstream", upstream.URL,
		"--header", "Authorization: Bearer {secret}", "--shutdown-timeout", "200ms")

	resp, err := httpClient.Get(p.url + "/events")
	require.NoError(t, err)
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "data: one\n", line)
	info, err := c.GetKey(context.Background(), key.ID)
	require.NoError(t, err)
	require.True(t, info.IsBlocked)

	p.stop()
	require.Equal(t, exitOK, p.wait(t))
	require.Contains(t, p.stderr.String(), "breaking them off")
	info, err = c.GetKey(context.Background(), key.ID)
	require.NoError(t, err)
	require.False(t, info.IsBlocked, "the key is released before the proxy exits")
}

func TestProxyUsage(t *testing.T) {
	t.Parallel()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { taken.Close() })
	env := map[string]string{"TOKEN_ORCHESTRATOR_SERVER": "http://127.0.0.1:1"}
	for _, tc := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{nil, exitUsage, "--upstream is required"},
		{[]string{"--upstream", "api.example.com"}, exitUsage, "expected an http:// or https:// URL"},
		{[]string{"--upstream", "https://api.example.com", "extra"}, exitUsage, "unexpected arguments: extra"},
		{[]string{"--upstream", "https://api.example.com", "--header", "Authorization"}, exitUsage, "want NAME: VALUE"},
		{[]string{"--upstream", "https://api.example.com", "--log-level", "loud"}, exitUsage, "--log-level"},
		{[]string{"--upstream", "https://api.example.com", "--default-cooldown", "1h"}, exitUsage, "longer than the longest"},
		{[]string{"--upstream", "https://api.example.com", "--max-cooldown", "48h"}, exitUsage, "at most 24h"},
		{[]string{"--upstream", "https://api.example.com", "--upstrem-timeout", "1s"}, exitUsage, `Did you mean "--upstream-timeout"?`},
		{[]string{"--upstream", "https://api.example.com", "--listen", taken.Addr().String()}, exitFailed, "address already in use"},
	} {
		r := run(t, func(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
			return proxyUntil(context.Background(), args, stdout, stderr, getenv)
		}, env, tc.args...)
		require.Equal(t, tc.code, r.code, "proxy %v: %s", tc.args, r.stderr)
		require.Contains(t, r.stderr, tc.stderr, "proxy %v", tc.args)
		require.Empty(t, r.stdout, "proxy %v", tc.args)
	}
	require.True(t, strings.HasPrefix(run(t, runProxy, env, "-h").stdout, "Usage: token-orchestrator proxy"))
}
