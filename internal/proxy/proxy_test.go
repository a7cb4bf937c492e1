package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/client"
	"github.com/tokenorchestrator/tokenorchestrator/internal/config"
	"github.com/tokenorchestrator/tokenorchestrator/internal/proxy"
	"github.com/tokenorchestrator/tokenorchestrator/internal/secrets"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/servertest"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }

// bundle is what a test of the proxy works with: a server of keys, a pool
// with one key, an upstream and the proxy in front of it.
type bundle struct {
	ctx      context.Context
	c        *client.Client
	pool     string
	key      client.Key
	secret   string
	proxyURL string
	registry *prometheus.Registry
	logs     *syncBuffer
}

// options adjust a test's bundle.
type options struct {
	server servertest.Options
	// noSecret makes the key without a secret.
	noSecret bool
	// upstream, when set, is the proxy's upstream; else the upstream
	// handler's server.
	upstream string
	config   func(*proxy.Config)
}

// setup starts a server with a pool of one key, the upstream, and the
// proxy in front of the upstream.
func setup(t *testing.T, upstream http.Handler, o options) *bundle {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	o.server.Configure = withEncryptionKey(t)
	c, err := client.New(servertest.Start(t, o.server).URL)
	require.NoError(t, err)
	b := &bundle{ctx: ctx, c: c, pool: "api", registry: prometheus.NewRegistry(), logs: &syncBuffer{}}
	if o.noSecret {
		b.key, err = c.CreateKey(ctx, b.pool)
	} else {
		b.secret = "sk-" + rand.Text()
		var keys []client.Key
		keys, err = c.ImportKeys(ctx, b.pool, []client.NewKey{{Secret: b.secret}})
		if err == nil {
			b.key = keys[0]
		}
	}
	require.NoError(t, err)

	target := o.upstream
	if target == "" {
		up := httptest.NewServer(upstream)
		t.Cleanup(up.Close)
		target = up.URL + "/base"
	}
	u, err := url.Parse(target)
	require.NoError(t, err)
	cfg := proxy.Config{
		Client: c, Pool: b.pool, Upstream: u,
		Headers:    []proxy.Header{{Name: "Authorization", Value: "Bearer {secret}"}, {Name: "X-Org", Value: "acme"}},
		ClaimWait:  2 * time.Second,
		Registerer: b.registry,
		Logger:     slog.New(slog.NewTextHandler(b.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if o.config != nil {
		o.config(&cfg)
	}
	p, err := proxy.New(cfg)
	require.NoError(t, err)
	front := httptest.NewServer(p)
	t.Cleanup(front.Close)
	b.proxyURL = front.URL
	t.Cleanup(func() {
		if b.secret != "" {
			require.NotContains(t, b.logs.String(), b.secret, "the secret is never logged")
		}
	})
	return b
}

// withEncryptionKey configures a server with a random encryption key, so
// that it takes secrets.
func withEncryptionKey(t testing.TB) func(*config.Config) {
	raw := make([]byte, secrets.KeySize)
	_, _ = rand.Read(raw)
	kr, err := secrets.New(raw)
	require.NoError(t, err)
	return func(cfg *config.Config) { cfg.Secrets = kr }
}

// answer is a response read whole.
type answer struct {
	status int
	header http.Header
	body   string
}

func (b *bundle) do(t *testing.T, req *http.Request) answer {
	t.Helper()
	resp, err := http.DefaultClient.Do(req.WithContext(b.ctx))
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	a := answer{status: resp.StatusCode, header: resp.Header, body: string(body)}
	if b.secret != "" {
		require.NotContains(t, a.body, b.secret, "the secret is never in an answer")
		for name, values := range a.header {
			for _, v := range values {
				require.NotContains(t, v, b.secret, "header %s", name)
			}
		}
	}
	return a
}

func (b *bundle) get(t *testing.T, path string) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, b.proxyURL+path, nil)
	require.NoError(t, err)
	return b.do(t, req)
}

// keyNow is the pool's key as the server has it.
func (b *bundle) keyNow(t *testing.T) client.Key {
	t.Helper()
	k, err := b.c.GetKey(b.ctx, b.key.ID)
	require.NoError(t, err)
	return k
}

// released waits until the key is released: the caller may read the end
// of an answer of known length before the proxy has released its key.
func (b *bundle) released(t *testing.T) client.Key {
	t.Helper()
	var k client.Key
	require.Eventually(t, func() bool { k = b.keyNow(t); return !k.IsBlocked }, 5*time.Second, 5*time.Millisecond,
		"the key is released")
	return k
}

// requireFree checks that the key is released without a cooldown.
func (b *bundle) requireFree(t *testing.T) {
	t.Helper()
	require.Nil(t, b.released(t).CoolingUntil, "the key does not cool down")
}

// outcomes are the counts of tokenorchestrator_proxy_requests_total.
func (b *bundle) outcomes(t *testing.T) map[string]float64 {
	t.Helper()
	counts := map[string]float64{}
	for _, o := range []string{"forwarded", "rate_limited", "no_key", "claim_failed", "unusable_secret",
		"upstream_error", "upstream_timeout", "lease_lost", "canceled"} {
		counts[o] = metricValue(t, b.registry, "tokenorchestrator_proxy_requests_total", map[string]string{"pool": b.pool, "outcome": o})
	}
	return counts
}

// requireOutcome checks that the one request so far was counted with this
// outcome. It is counted once the key is released, which may come after
// the caller has read the answer.
func (b *bundle) requireOutcome(t *testing.T, outcome string) {
	t.Helper()
	want := b.outcomes(t)
	for o := range want {
		want[o] = 0
	}
	want[outcome] = 1
	require.Eventually(t, func() bool {
		return metricValue(t, b.registry, "tokenorchestrator_proxy_requests_total", map[string]string{"outcome": outcome}) > 0
	}, 5*time.Second, 5*time.Millisecond, "a request is counted as %s", outcome)
	require.Equal(t, want, b.outcomes(t))
	require.Equal(t, 1.0, metricValue(t, b.registry, "tokenorchestrator_proxy_request_duration_seconds", map[string]string{"outcome": outcome}))
	require.Equal(t, 0.0, metricValue(t, b.registry, "tokenorchestrator_proxy_requests_in_flight", nil))
}

func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if want, ok := labels[l.GetName()]; ok && want != l.GetValue() {
					continue metrics
				}
			}
			return value(m)
		}
	}
	return 0
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}

// problemOf reads a problem details body.
func problemOf(t *testing.T, a answer) map[string]any {
	t.Helper()
	require.Equal(t, "application/problem+json", a.header.Get("Content-Type"), a.body)
	var p map[string]any
	require.NoError(t, json.Unmarshal([]byte(a.body), &p), a.body)
	require.EqualValues(t, a.status, p["status"])
	require.NotEmpty(t, p["title"])
	require.NotEmpty(t, p["detail"])
	require.Equal(t, "/problems/"+p["code"].(string), p["type"])
	return p
}

// A request reaches the upstream with the key's secret and none of the
// caller's credentials; the answer comes back whole, without the secret;
// the key is free again.
func TestForwardsWithTheKeysSecret(t *testing.T) {
	t.Parallel()
	var (
		mu  sync.Mutex
		got *http.Request
		in  string
	)
	b := setup(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		got, in = r.Clone(context.Background()), string(body)
		mu.Unlock()
		// An upstream that echoes the credential must not show it to the
		// caller.
		w.Header().Set("X-Echo", r.Header.Get("Authorization"))
		w.Header().Set("X-Upstream", "yes")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"ok":true}`)
	}), options{config: func(cfg *proxy.Config) { cfg.StripHeaders = []string{"X-Caller-Secret"} }})

	req, err := http.NewRequest(http.MethodPost, b.proxyURL+"/v1/chat?model=m1", strings.NewReader(`{"prompt":"hi"}`))
	require.NoError(t, err)
	for name, value := range map[string]string{
		"Authorization": "Bearer caller-token", "Proxy-Authorization": "Basic caller", "Cookie": "session=caller",
		"X-Api-Key": "caller-key", "Api-Key": "caller-key", "X-Caller-Secret": "caller", "X-Org": "caller-org",
		"X-Keep": "kept", "Content-Type": "application/json", "X-Forwarded-For": "10.1.2.3",
	} {
		req.Header.Set(name, value)
	}
	a := b.do(t, req)
	require.Equal(t, http.StatusCreated, a.status, a.body)
	require.Equal(t, `{"ok":true}`, a.body)
	require.Equal(t, "yes", a.header.Get("X-Upstream"))
	require.Empty(t, a.header.Values("X-Echo"), "a header holding the secret is removed")

	mu.Lock()
	defer mu.Unlock()
	require.NotNil(t, got, "the upstream got the request")
	require.Equal(t, http.MethodPost, got.Method)
	require.Equal(t, "/base/v1/chat", got.URL.Path)
	require.Equal(t, "model=m1", got.URL.RawQuery)
	require.Equal(t, `{"prompt":"hi"}`, in)
	require.Equal(t, []string{"Bearer " + b.secret}, got.Header.Values("Authorization"))
	require.Equal(t, []string{"acme"}, got.Header.Values("X-Org"), "a header of the proxy replaces the caller's")
	require.Equal(t, "kept", got.Header.Get("X-Keep"))
	for _, name := range []string{"Proxy-Authorization", "Cookie", "X-Api-Key", "Api-Key", "X-Caller-Secret", "X-Forwarded-For"} {
		require.Empty(t, got.Header.Values(name), "the caller's %s is stripped", name)
	}

	b.requireFree(t)
	b.requireOutcome(t, "forwarded")
	require.Equal(t, 1.0, metricValue(t, b.registry, "tokenorchestrator_proxy_upstream_responses_total", map[string]string{"code": "201"}))
	require.NotContains(t, b.logs.String(), "level=ERROR")
	// The upstream's echo was noticed, by name only.
	require.Contains(t, b.logs.String(), "header=X-Echo")
}

// An answer of 429 or 503 releases the key with a cooldown from its
// Retry-After: no claim takes the key before it has passed.
func TestRateLimitedKeyCoolsDown(t *testing.T) {
	t.Parallel()
	upstreamDate := time.Now().UTC().Truncate(time.Second).Add(-time.Hour)
	for _, tc := range []struct {
		name       string
		status     int
		retryAfter string
		date       time.Time
		want       time.Duration
	}{
		{name: "seconds", status: http.StatusTooManyRequests, retryAfter: "7", want: 7 * time.Second},
		{name: "absent", status: http.StatusTooManyRequests, want: 45 * time.Second},
		{name: "unreadable", status: http.StatusTooManyRequests, retryAfter: "soon", want: 45 * time.Second},
		// By the upstream's clock, an hour behind ours here.
		{name: "date", status: http.StatusTooManyRequests, retryAfter: upstreamDate.Add(20 * time.Second).Format(http.TimeFormat), date: upstreamDate, want: 20 * time.Second},
		{name: "capped", status: http.StatusTooManyRequests, retryAfter: "86400", want: 2 * time.Minute},
		{name: "unavailable", status: http.StatusServiceUnavailable, retryAfter: "9", want: 9 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				if !tc.date.IsZero() {
					w.Header().Set("Date", tc.date.Format(http.TimeFormat))
				}
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, `{"error":"slow down"}`)
			}), options{config: func(cfg *proxy.Config) {
				cfg.DefaultCooldown = 45 * time.Second
				cfg.MaxCooldown = 2 * time.Minute
			}})

			before := time.Now()
			a := b.get(t, "/v1/anything")
			after := time.Now()
			require.Equal(t, tc.status, a.status, "the caller gets the upstream's answer")
			require.Equal(t, `{"error":"slow down"}`, a.body)
			require.Equal(t, tc.retryAfter, a.header.Get("Retry-After"), "and its Retry-After")

			k := b.released(t)
			require.NotNil(t, k.CoolingUntil, "the key cools down")
			// Both clocks are this machine's.
			require.WithinRange(t, *k.CoolingUntil, before.Add(tc.want-time.Second), after.Add(tc.want+time.Second))
			_, err := b.c.ClaimKey(b.ctx, b.pool, 0)
			require.ErrorIs(t, err, client.ErrNoKeyAvailable, "no claim takes a cooling key")
			b.requireOutcome(t, "rate_limited")
		})
	}
}

// A streamed answer reaches the caller event by event, and the key stays
// leased, kept alive past its lease's length, until the answer ends.
func TestStreamsServerSentEvents(t *testing.T) {
	t.Parallel()
	// Short enough for a quick test, long enough that a keep-alive delayed
	// by a machine busy with the whole suite still comes in time: the
	// client keeps the lease alive a third of the way through, so it rides
	// out a stall of two thirds of this. With 600 ms, a run of the suite on
	// 2 cores lost the lease when keep-alives came up to 570 ms apart.
	leaseTTL := 2 * time.Second
	next := make(chan struct{})
	b := setup(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-next:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "data: two\n\n")
	}), options{server: servertest.Options{LeaseTTL: leaseTTL, SweepInterval: 20 * time.Millisecond}})

	req, err := http.NewRequestWithContext(b.ctx, http.MethodGet, b.proxyURL+"/v1/stream", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	events := bufio.NewReader(resp.Body)
	line, err := events.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "data: one\n", line, "the first event arrives while the upstream still streams")

	held := b.keyNow(t)
	require.True(t, held.IsBlocked, "the key is leased while the answer streams")
	// Wait, by the database's clock, until a lease nobody kept alive would
	// long have been taken back.
	mustHaveEnded := held.LeaseExpiresAt.Add(leaseTTL)
	for {
		k := b.keyNow(t)
		require.True(t, k.IsBlocked, "the lease ended while the answer streamed")
		if k.LastKeepAliveAt != nil && k.LastKeepAliveAt.After(mustHaveEnded) {
			break
		}
		select {
		case <-b.ctx.Done():
			t.Fatal("the lease was not kept alive")
		case <-time.After(20 * time.Millisecond):
		}
	}

	close(next)
	rest, err := io.ReadAll(events)
	require.NoError(t, err)
	require.Equal(t, "\ndata: two\n\n", string(rest))
	// The key is released before the answer's last chunk is sent.
	k := b.keyNow(t)
	require.False(t, k.IsBlocked, "the key is released once the answer has ended")
	require.Nil(t, k.CoolingUntil)
	require.EqualValues(t, 1, k.TimesAssigned)
	b.requireOutcome(t, "forwarded")
}

// An upstream that cannot be reached is answered 502, one that does not
// answer in time 504; the key is released either way, without cooldown.
func TestUpstreamFailures(t *testing.T) {
	t.Parallel()
	t.Run("down", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		down := "http://" + ln.Addr().String()
		require.NoError(t, ln.Close())
		b := setup(t, nil, options{upstream: down})

		a := b.get(t, "/v1/x")
		require.Equal(t, http.StatusBadGateway, a.status)
		require.Equal(t, "upstream_unreachable", problemOf(t, a)["code"])
		b.requireFree(t)
		b.requireOutcome(t, "upstream_error")
	})
	t.Run("slow", func(t *testing.T) {
		t.Parallel()
		b := setup(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			<-r.Context().Done()
		}), options{config: func(cfg *proxy.Config) { cfg.UpstreamTimeout = 200 * time.Millisecond }})

		start := time.Now()
		a := b.get(t, "/v1/x")
		require.Equal(t, http.StatusGatewayTimeout, a.status)
		require.Less(t, time.Since(start), 5*time.Second)
		require.Equal(t, "upstream_timeout", problemOf(t, a)["code"])
		b.requireFree(t)
		b.requireOutcome(t, "upstream_timeout")
	})
	t.Run("slow body is not timed out", func(t *testing.T) {
		t.Parallel()
		b := setup(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			time.Sleep(300 * time.Millisecond)
			_, _ = io.WriteString(w, "late")
		}), options{config: func(cfg *proxy.Config) { cfg.UpstreamTimeout = 100 * time.Millisecond }})

		a := b.get(t, "/v1/x")
		require.Equal(t, http.StatusOK, a.status)
		require.Equal(t, "late", a.body)
		b.requireOutcome(t, "forwarded")
	})
}

// With every key held, a request waits up to its bound and is answered
// 503 with Retry-After, without reaching the upstream.
func TestNoFreeKey(t *testing.T) {
	t.Parallel()
	var reached atomic.Int32
	b := setup(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached.Add(1) }),
		options{config: func(cfg *proxy.Config) { cfg.ClaimWait = 200 * time.Millisecond }})
	lease, err := b.c.Claim(b.ctx, b.pool)
	require.NoError(t, err)
	t.Cleanup(func() { _ = lease.Release(context.Background()) })

	start := time.Now()
	a := b.get(t, "/v1/x")
	require.Equal(t, http.StatusServiceUnavailable, a.status)
	require.GreaterOrEqual(t, time.Since(start), 150*time.Millisecond, "it waited")
	require.Equal(t, "1", a.header.Get("Retry-After"))
	p := problemOf(t, a)
	require.Equal(t, "no_free_key", p["code"])
	require.Contains(t, p["detail"], `pool "api"`)
	b.requireOutcome(t, "no_key")
	require.Zero(t, reached.Load(), "the upstream was not reached")
	require.Equal(t, 1.0, metricValue(t, b.registry, "tokenorchestrator_proxy_claim_duration_seconds", nil))
}

// A key without a secret cannot fill a header that asks for one: the
// request is answered 500 and the key released. A proxy whose headers
// ask for no secret forwards with such keys.
func TestKeyWithoutSecret(t *testing.T) {
	t.Parallel()
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "auth="+r.Header.Get("Authorization"))
	})
	b := setup(t, upstream, options{noSecret: true})
	a := b.get(t, "/v1/x")
	require.Equal(t, http.StatusInternalServerError, a.status)
	require.Equal(t, "unusable_secret", problemOf(t, a)["code"])
	b.requireFree(t)
	require.Contains(t, b.logs.String(), b.key.ID, "the log names the key")
	b.requireOutcome(t, "unusable_secret")

	limiter := setup(t, upstream, options{noSecret: true, config: func(cfg *proxy.Config) { cfg.Headers = nil }})
	a = limiter.get(t, "/v1/x")
	require.Equal(t, http.StatusOK, a.status)
	require.Equal(t, "auth=", a.body, "the caller's Authorization is stripped all the same")
}

// A lease lost while an answer streams breaks the answer off: the key may
// be someone else's already.
func TestLeaseLostBreaksOffTheAnswer(t *testing.T) {
	t.Parallel()
	b := setup(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}), options{server: servertest.Options{LeaseTTL: 300 * time.Millisecond, SweepInterval: 20 * time.Millisecond}})

	req, err := http.NewRequestWithContext(b.ctx, http.MethodGet, b.proxyURL+"/v1/stream", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	events := bufio.NewReader(resp.Body)
	line, err := events.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "data: one\n", line)

	// Someone else releases the key: the next keep-alive fails.
	_, err = b.c.ReleaseKey(b.ctx, b.key.ID, "")
	require.NoError(t, err)
	_, err = io.ReadAll(events)
	require.Error(t, err, "the answer is cut short, not ended as if whole")
	b.requireOutcome(t, "lease_lost")
	require.Contains(t, b.logs.String(), "lease lost")
}

func TestCooldown(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	const fallback, ceiling = 30 * time.Second, 10 * time.Minute
	for _, tc := range []struct {
		retryAfter, date string
		want             time.Duration
	}{
		{"", "", fallback},
		{"12", "", 12 * time.Second},
		{" 12 ", "", 12 * time.Second},
		{"0", "", 0},
		{"-5", "", fallback},
		{"1.5", "", fallback},
		{"soon", "", fallback},
		{"9999999999999999", "", ceiling},
		{"601", "", ceiling},
		{now.Add(90 * time.Second).Format(http.TimeFormat), "", 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), "", 0},
		// The upstream's clock runs an hour ahead: its Date is the base.
		{now.Add(time.Hour + 40*time.Second).Format(http.TimeFormat), now.Add(time.Hour).Format(http.TimeFormat), 40 * time.Second},
		{now.Add(time.Hour).Format(time.RFC850), "", ceiling},
	} {
		h := http.Header{}
		if tc.retryAfter != "" {
			h.Set("Retry-After", tc.retryAfter)
		}
		if tc.date != "" {
			h.Set("Date", tc.date)
		}
		require.Equal(t, tc.want, proxy.Cooldown(h, now, fallback, ceiling), "Retry-After %q, Date %q", tc.retryAfter, tc.date)
	}
}

func TestParseHeader(t *testing.T) {
	t.Parallel()
	h, err := proxy.ParseHeader("authorization:  Bearer {secret} ")
	require.NoError(t, err)
	require.Equal(t, proxy.Header{Name: "Authorization", Value: "Bearer {secret}"}, h)
	h, err = proxy.ParseHeader("x-api-key:{secret}")
	require.NoError(t, err)
	require.Equal(t, proxy.Header{Name: "X-Api-Key", Value: "{secret}"}, h)
	for _, bad := range []string{"Authorization", ": x", "Bad Name: x", "X-A: a\nb"} {
		_, err := proxy.ParseHeader(bad)
		require.Error(t, err, bad)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	t.Parallel()
	c, err := client.New("http://127.0.0.1:1")
	require.NoError(t, err)
	ftp, _ := url.Parse("ftp://example.com")
	_, err = proxy.New(proxy.Config{Upstream: ftp, DefaultCooldown: 2 * time.Hour, MaxCooldown: time.Hour})
	require.ErrorContains(t, err, "client")
	require.ErrorContains(t, err, "upstream")
	require.ErrorContains(t, err, "default cooldown")
	good, _ := url.Parse("https://example.com")
	_, err = proxy.New(proxy.Config{Client: c, Upstream: good, MaxCooldown: 25 * time.Hour})
	require.ErrorContains(t, err, "at most 24h")
	_, err = proxy.New(proxy.Config{Client: c, Upstream: good})
	require.NoError(t, err)
}

// syncBuffer is a log the proxy writes while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}
