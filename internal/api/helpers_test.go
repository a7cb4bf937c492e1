package api_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"

	"github.com/tokenorchestrator/tokenorchestrator/internal/api"
	"github.com/tokenorchestrator/tokenorchestrator/internal/claim"
	"github.com/tokenorchestrator/tokenorchestrator/internal/metrics"
	"github.com/tokenorchestrator/tokenorchestrator/internal/secrets"
	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
	"github.com/tokenorchestrator/tokenorchestrator/internal/sweeper"
	"github.com/tokenorchestrator/tokenorchestrator/internal/telemetry"
	"github.com/tokenorchestrator/tokenorchestrator/internal/wakeup"
)

type options struct {
	keyTTL, leaseTTL, sweep time.Duration
	dbTimeout               time.Duration
	corsOrigins             []string
	// poll is how often the first waiter polls without a notification.
	poll time.Duration
	// maxWaiters and maxWaitedPools cap the replica's waiting clients and
	// the pools they wait on; zero keeps the defaults.
	maxWaiters, maxWaitedPools int
	// contractSeen, when set, collects the answers the server gave.
	contractSeen *answersSeen
	// auth sets the bearer tokens; none by default.
	auth api.Auth
	// logs, when set, receives the server's logs from debug level up.
	logs io.Writer
	// tracer, when set, traces requests, statements and batches.
	tracer trace.TracerProvider
	// metricsMaxPools caps the pool label values; zero keeps the default.
	metricsMaxPools int
	// secrets, when set, seals the secrets of keys.
	secrets *secrets.Keyring
}

// testServer is one replica: API, store and (optionally) background job
// over a database that other replicas may share.
type testServer struct {
	url     string
	metrics *metrics.Metrics
	store   *store.Store
	pool    *pgxpool.Pool
	waiters *wakeup.Hub
}

func newServer(t *testing.T, dbURL string, o options) *testServer {
	t.Helper()
	if o.keyTTL == 0 {
		o.keyTTL = time.Hour
	}
	if o.leaseTTL == 0 {
		o.leaseTTL = time.Hour
	}
	cfg, err := pgxpool.ParseConfig(dbURL)
	require.NoError(t, err)
	cfg.MaxConns = 16
	cfg.ConnConfig.ConnectTimeout = 2 * time.Second
	if o.tracer != nil {
		cfg.ConnConfig.Tracer = store.NewTracer(o.tracer)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if o.logs != nil {
		logger = slog.New(telemetry.NewLogHandler(slog.NewTextHandler(o.logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	}
	var st *store.Store
	m := metrics.NewWithConfig(metrics.Config{
		Counts:   func(ctx context.Context) ([]store.PoolCounts, error) { return st.CountPools(ctx) },
		Logger:   logger,
		MaxPools: o.metricsMaxPools,
	})
	st = store.New(pool, store.Config{KeyTTL: o.keyTTL, LeaseTTL: o.leaseTTL, QueryTimeout: o.dbTimeout,
		OnLeasesEnded: m.ObserveLeasesEnded, TracerProvider: o.tracer, Secrets: o.secrets})
	m.WatchPool("primary", pool)
	if o.sweep > 0 {
		sw := sweeper.New(st, sweeper.Config{Interval: o.sweep, Logger: logger, OnPass: m.ObserveSweep, TracerProvider: o.tracer})
		require.NoError(t, sw.Start(context.Background()))
		t.Cleanup(sw.Stop)
	}
	t.Cleanup(st.Close)
	waiters := wakeup.New(st, wakeup.Config{Poll: o.poll, MaxWaiters: o.maxWaiters, MaxPools: o.maxWaitedPools, Logger: logger})
	require.NoError(t, waiters.Start(context.Background()))
	t.Cleanup(waiters.Stop)
	m.WatchWaiters(waiters.Waiters)
	handler := api.New(api.Config{
		Store: st, Logger: logger, Metrics: m, CORSOrigins: o.corsOrigins, Auth: o.auth,
		Claims:         claim.New(claim.Config{Store: st, Waiters: waiters, Metrics: m}),
		Ready:          func(ctx context.Context) error { return st.Ping(ctx) },
		TracerProvider: o.tracer,
	})
	srv := httptest.NewServer(checkContract(t, handler, o.contractSeen))
	t.Cleanup(srv.Close)
	return &testServer{url: srv.URL, metrics: m, store: st, pool: pool, waiters: waiters}
}

// reply is a response with its body read and, unless it is a HEAD, decoded.
type reply struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (r reply) str(field string) string {
	s, _ := r.body[field].(string)
	return s
}

// do sends a request and checks what every answer must be: JSON, with a
// problem-details body for errors.
func do(t *testing.T, method, url, body string, headers ...string) reply {
	t.Helper()
	var reader io.Reader
	if body != "" {
		reader = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, reader)
	require.NoError(t, err)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	r := reply{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	contentType := resp.Header.Get("Content-Type")
	if resp.StatusCode >= 400 {
		require.Equal(t, "application/problem+json", contentType, "error answers are problem details")
	} else {
		require.Equal(t, "application/json", strings.Split(contentType, ";")[0], "answers are JSON")
	}
	if method == http.MethodHead {
		require.Empty(t, raw, "HEAD answers have no body")
		return r
	}
	require.NoError(t, json.Unmarshal(raw, &r.body), "body is a JSON object: %s", raw)
	if resp.StatusCode >= 400 {
		for _, field := range []string{"type", "title", "detail", "code"} {
			require.NotEmpty(t, r.body[field], "problem details have %s: %s", field, raw)
		}
		require.EqualValues(t, resp.StatusCode, r.body["status"])
	}
	return r
}

// requireProblem checks an error answer's status and code.
func requireProblem(t *testing.T, r reply, status int, code string) {
	t.Helper()
	require.Equal(t, status, r.status, r.raw)
	if r.body != nil {
		require.Equal(t, code, r.str("code"), r.raw)
	}
}

// testKeyring returns a keyring with a random encryption key.
func testKeyring(t *testing.T) *secrets.Keyring {
	t.Helper()
	raw := make([]byte, secrets.KeySize)
	_, err := rand.Read(raw)
	require.NoError(t, err)
	kr, err := secrets.New(raw)
	require.NoError(t, err)
	return kr
}
