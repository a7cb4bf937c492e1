package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tokenorchestrator/tokenorchestrator/client"
	"github.com/tokenorchestrator/tokenorchestrator/internal/proxy"
)

const proxyHelp = `Usage: token-orchestrator proxy --upstream URL [--header 'NAME: VALUE' ...] [flags]

Serve a reverse proxy for one upstream HTTP API that lends every request a
key of a pool: claim a free key (waiting up to --wait; none: 503 with
Retry-After), set the --header headers with {secret} replaced by the key's
secret, forward the request, stream the answer back as it comes (server-sent
events too), and release the key when the answer's body has ended. The
lease is kept alive while a long answer streams.

The caller's own credentials never reach the upstream: the headers
Authorization, Proxy-Authorization, Cookie, X-Api-Key and Api-Key, those
named by --header and by --strip-header are removed from every request.
The secret never appears in an answer, a log line or a metric.

When the upstream answers 429 or 503, the key is released with a cooldown:
the answer's Retry-After (seconds or an HTTP date), --default-cooldown
when it has none, at most --max-cooldown. The answer itself goes to the
caller unchanged. An upstream that cannot be reached is answered 502, one
that sends no answer within --upstream-timeout 504; both, and the proxy's
own 503s, have a JSON problem body (application/problem+json) with a code.

Every request is forwarded: the proxy's metrics (Prometheus, e.g.
tokenorchestrator_proxy_requests_total{pool,outcome}) are served on a
listener of their own, --metrics-listen, at /metrics (and /healthz).
Anyone who can reach --listen uses the pool's keys: keep it on a loopback
address or a private network.

Example:
  token-orchestrator proxy --listen 127.0.0.1:8090 --pool openai \
      --upstream https://api.openai.com --header 'Authorization: Bearer {secret}'
  curl http://127.0.0.1:8090/v1/models

SIGINT or SIGTERM stops the proxy: it takes no new requests and waits up to
--shutdown-timeout for those under way, then breaks them off and releases
their keys.`

// defaultProxyListen is a loopback address: a proxy that anyone could
// reach would lend the pool's credentials to anyone.
const defaultProxyListen = "127.0.0.1:8090"

// proxyFlags are the flags of proxy, parsed.
type proxyFlags struct {
	fs              *flag.FlagSet
	listen          *string
	metricsListen   *string
	pool            *string
	upstream        *string
	headers         *[]string
	strip           *[]string
	labels          *[]string
	wait            *time.Duration
	upstreamTimeout *time.Duration
	defaultCooldown *time.Duration
	maxCooldown     *time.Duration
	shutdownTimeout *time.Duration
	logLevel        *string
}

func newProxyFlags(stderr io.Writer, getenv func(string) string) proxyFlags {
	fs := newFlagSet("token-orchestrator proxy", proxyHelp, stderr)
	f := proxyFlags{fs: fs}
	f.listen = fs.String("listen", defaultProxyListen, "the address the proxy serves on")
	f.metricsListen = fs.String("metrics-listen", "", "serve the proxy's Prometheus metrics at /metrics on this address (default: not served)")
	f.pool = fs.String("pool", "", "the pool (default: the server's default pool)")
	f.upstream = fs.String("upstream", "", "the upstream's URL, e.g. https://api.example.com; a path in it comes before every request's (required)")
	f.headers = repeatedFlag(fs, "header", "'NAME: VALUE' set on every forwarded request, {secret} replaced by the key's secret; repeatable")
	f.strip = repeatedFlag(fs, "strip-header", "a further request header to remove before forwarding; repeatable")
	f.labels = labelsFlag(fs)
	f.wait = fs.Duration("wait", proxy.DefaultClaimWait, "how long a request waits for a free key before it is answered 503")
	f.upstreamTimeout = fs.Duration("upstream-timeout", proxy.DefaultUpstreamTimeout, "answer 504 when the upstream's answer has not begun within this long (a streamed body is not bounded)")
	f.defaultCooldown = fs.Duration("default-cooldown", proxy.DefaultCooldown, "the cooldown of a key answered 429 or 503 without a Retry-After")
	f.maxCooldown = fs.Duration("max-cooldown", proxy.DefaultMaxCooldown, "the longest cooldown a Retry-After gives a key (at most 24h)")
	f.shutdownTimeout = fs.Duration("shutdown-timeout", 30*time.Second, "on SIGINT or SIGTERM, how long requests under way may take to finish")
	f.logLevel = fs.String("log-level", "info", "the least level logged: debug, info, warn or error")
	// --server and --token; proxyClient reads them.
	clientFlags(fs, getenv)
	return f
}

// repeatedFlag adds a flag that may be given several times.
func repeatedFlag(fs *flag.FlagSet, name, usage string) *[]string {
	var values []string
	fs.Func(name, usage, func(v string) error {
		values = append(values, v)
		return nil
	})
	return &values
}

func proxyWords() words { return words{flags: newProxyFlags(io.Discard, noEnv).fs} }

// runProxy serves the proxy until SIGINT or SIGTERM.
func runProxy(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return proxyUntil(ctx, args, stdout, stderr, getenv)
}

// proxyUntil serves the proxy until ctx ends.
func proxyUntil(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	f := newProxyFlags(stderr, getenv)
	fs := f.fs
	positional, err := parseFlags(fs, args, stdout)
	if err != nil {
		return parseError(err)
	}
	if len(positional) > 0 {
		return usageError(fs, "unexpected arguments: %s", strings.Join(positional, " "))
	}
	if *f.upstream == "" {
		return usageError(fs, "--upstream is required")
	}
	upstream, err := url.Parse(*f.upstream)
	if err != nil || (upstream.Scheme != "http" && upstream.Scheme != "https") || upstream.Host == "" {
		return badValue(fs, "--upstream %q: expected an http:// or https:// URL with a host", *f.upstream)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*f.logLevel)); err != nil {
		return badValue(fs, "--log-level %q: expected debug, info, warn or error", *f.logLevel)
	}
	var headers []proxy.Header
	for _, h := range *f.headers {
		header, err := proxy.ParseHeader(h)
		if err != nil {
			return badValue(fs, "--header: %v", err)
		}
		headers = append(headers, header)
	}
	// The connections to the server are reused by every request, as are
	// those to the upstream; the default keeps only two idle.
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 256
	c, err := proxyClient(fs, &http.Client{Transport: transport})
	if err != nil {
		return usageError(fs, "--server: %v", err)
	}

	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	p, err := proxy.New(proxy.Config{
		Client: c, Pool: *f.pool, Labels: *f.labels, Upstream: upstream,
		Headers: headers, StripHeaders: *f.strip,
		ClaimWait: *f.wait, UpstreamTimeout: *f.upstreamTimeout,
		DefaultCooldown: *f.defaultCooldown, MaxCooldown: *f.maxCooldown,
		Registerer: registry, Logger: logger,
	})
	if err != nil {
		return badValue(fs, "%v", err)
	}

	ln, err := net.Listen("tcp", *f.listen)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		return exitFailed
	}
	var metricsLn net.Listener
	if *f.metricsListen != "" {
		if metricsLn, err = net.Listen("tcp", *f.metricsListen); err != nil {
			ln.Close()
			fmt.Fprintf(stderr, "%s: --metrics-listen: %v\n", fs.Name(), err)
			return exitFailed
		}
	}
	checkPool(ctx, c, *f.pool, logger)

	// Requests run under base: cancelling it breaks off those that outlast
	// the shutdown timeout, and their keys are released.
	base, breakOff := context.WithCancel(context.Background())
	defer breakOff()
	srv := &http.Server{
		Handler:           p,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return base },
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 2)
	go func() { served <- srv.Serve(ln) }()
	var metricsSrv *http.Server
	attrs := []any{"addr", "http://" + ln.Addr().String(), "upstream", upstream.Redacted(), "pool", poolName(*f.pool)}
	if metricsLn != nil {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(registry, promhttp.HandlerOpts{}))
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"status":"ok"}`+"\n")
		})
		metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { served <- metricsSrv.Serve(metricsLn) }()
		attrs = append(attrs, "metrics", "http://"+metricsLn.Addr().String()+"/metrics")
	}
	logger.Info("proxy listening", attrs...)

	code := exitOK
	select {
	case <-ctx.Done():
	case err := <-served:
		logger.Error("proxy stopped", "error", err)
		code = exitFailed
	}
	logger.Info("proxy shutting down", "timeout", *f.shutdownTimeout)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), *f.shutdownTimeout)
	defer cancel()
	if metricsSrv != nil {
		_ = metricsSrv.Shutdown(shutdownCtx)
	}
	if err := srv.Shutdown(shutdownCtx); err != nil {
		logger.Warn("requests still under way after the shutdown timeout: breaking them off", "error", err)
		breakOff()
		// They release their keys as they end.
		releaseCtx, cancel := context.WithTimeout(context.Background(), proxy.DefaultReleaseTimeout)
		defer cancel()
		_ = srv.Shutdown(releaseCtx)
	}
	return code
}

// checkPool warns when the proxy could not serve now: the server cannot be
// reached, or the pool has no keys. Either may change, so neither stops it.
func checkPool(ctx context.Context, c *client.Client, pool string, logger *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	status, err := c.PoolStatus(ctx, pool)
	switch {
	case err != nil:
		logger.Warn("Token Orchestrator does not answer; requests get 503 until it does", "error", err)
	case status.Keys == 0:
		logger.Warn("the pool has no keys; requests get 503 until it has", "pool", poolName(pool))
	}
}

func poolName(pool string) string {
	if pool == "" {
		return "default"
	}
	return pool
}

// proxyClient is the client that clientFlags describes, sending its
// requests through hc.
func proxyClient(fs *flag.FlagSet, hc *http.Client) (*client.Client, error) {
	opts := []client.Option{client.WithHTTPClient(hc)}
	if token := fs.Lookup("token").Value.String(); token != "" {
		opts = append(opts, client.WithToken(token))
	}
	return client.New(fs.Lookup("server").Value.String(), opts...)
}
