// Package proxy is a reverse proxy for one upstream HTTP API that lends
// every request a key of a Token Orchestrator pool: it claims a free key,
// sets the request's credential headers from the key's secret, forwards the
// request, streams the answer back, and releases the key once the answer's
// body has ended. A key the upstream rate-limited (an answer of 429 or 503)
// is released with a cooldown taken from the answer's Retry-After, so that
// no other request gets it before the upstream takes it again.
//
// The secret goes into the forwarded request's headers and nowhere else:
// never into an answer, a log line or a metric.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenorchestrator/tokenorchestrator/client"
)

// Defaults of Config.
const (
	// DefaultClaimWait: a request waits up to this long for a free key.
	DefaultClaimWait = 10 * time.Second
	// DefaultUpstreamTimeout is long because APIs that generate their
	// answer (language models) may take minutes before the first byte of
	// an answer that is not streamed.
	DefaultUpstreamTimeout = 5 * time.Minute
	// DefaultCooldown is how long a key rate-limited without a usable
	// Retry-After cools down.
	DefaultCooldown = 30 * time.Second
	// DefaultMaxCooldown caps a Retry-After: an upstream that asks for an
	// hour would otherwise take the key out of the pool for that long.
	DefaultMaxCooldown = 10 * time.Minute
	// DefaultReleaseTimeout bounds the call that releases a key.
	DefaultReleaseTimeout = 10 * time.Second
)

// MaxCooldown is the longest cooldown the server takes.
const MaxCooldown = 24 * time.Hour

// SecretPlaceholder is what a header value names the key's secret by.
const SecretPlaceholder = "{secret}"

// StrippedHeaders are the request headers that carry a caller's own
// credentials: they are removed before a request is forwarded, so that a
// caller never reaches the upstream as someone else, and never learns
// whether the upstream would have taken its credentials.
var StrippedHeaders = []string{"Authorization", "Proxy-Authorization", "Cookie", "X-Api-Key", "Api-Key"}

// Config configures a Proxy.
type Config struct {
	// Client claims and releases the keys. Required.
	Client *client.Client
	// Pool the keys come from. Defaults to the server's default pool.
	Pool string
	// Labels narrow the claims to keys that carry every one, each
	// written name=value. Defaults to none.
	Labels []string
	// Upstream is where requests go: its scheme and host, and a path
	// that is put before every request's path. Required.
	Upstream *url.URL
	// Headers are set on every forwarded request, SecretPlaceholder in a
	// value replaced with the key's secret; a request's own headers of
	// these names are removed first. Defaults to none: the keys then only
	// bound how many requests reach the upstream at once.
	Headers []Header
	// StripHeaders are request headers removed before forwarding besides
	// StrippedHeaders and the names of Headers. Defaults to none.
	StripHeaders []string
	// ClaimWait bounds how long a request waits for a free key before it
	// is answered 503. Defaults to DefaultClaimWait.
	ClaimWait time.Duration
	// UpstreamTimeout bounds the time from forwarding a request until the
	// upstream's answer has its headers; past it the request is answered
	// 504. The body that follows the headers is not bounded: an answer
	// may stream for as long as the upstream sends it. Defaults to
	// DefaultUpstreamTimeout.
	UpstreamTimeout time.Duration
	// DefaultCooldown is how long a key cools down after an answer of 429
	// or 503 without a Retry-After that can be read. Defaults to
	// DefaultCooldown.
	DefaultCooldown time.Duration
	// MaxCooldown caps the cooldown a Retry-After asks for, at most
	// MaxCooldown. Defaults to DefaultMaxCooldown.
	MaxCooldown time.Duration
	// ReleaseTimeout bounds the call that releases a key. Defaults to
	// DefaultReleaseTimeout.
	ReleaseTimeout time.Duration
	// Transport sends the requests upstream. Defaults to a clone of
	// http.DefaultTransport that keeps more idle connections to the
	// upstream, the only host it talks to.
	Transport http.RoundTripper
	// Registerer, when set, gets the proxy's Prometheus collectors.
	// Defaults to none: the metrics are kept but not exported.
	Registerer prometheus.Registerer
	// Logger gets a line for each request that fails and each key that
	// cannot be released. Defaults to slog.Default().
	Logger *slog.Logger
}

// Header is a header set on every forwarded request.
type Header struct {
	Name string
	// Value may hold SecretPlaceholder.
	Value string
}

// ParseHeader reads a header written as on the wire, "Name: value", e.g.
// "Authorization: Bearer {secret}".
func ParseHeader(s string) (Header, error) {
	name, value, ok := strings.Cut(s, ":")
	name = strings.TrimSpace(name)
	if !ok || name == "" {
		return Header{}, fmt.Errorf("header %q: want NAME: VALUE, e.g. 'Authorization: Bearer %s'", s, SecretPlaceholder)
	}
	if !validHeaderName(name) {
		return Header{}, fmt.Errorf("header %q: %q is not a valid header name", s, name)
	}
	value = strings.TrimSpace(value)
	if !validHeaderValue(strings.ReplaceAll(value, SecretPlaceholder, "")) {
		return Header{}, fmt.Errorf("header %q: the value holds a control character", s)
	}
	return Header{Name: textproto.CanonicalMIMEHeaderKey(name), Value: value}, nil
}

// usesSecret reports whether the header's value names the secret.
func (h Header) usesSecret() bool { return strings.Contains(h.Value, SecretPlaceholder) }

// Proxy is the reverse proxy, an http.Handler. It is safe for concurrent
// use.
type Proxy struct {
	cfg Config
	rp  *httputil.ReverseProxy
	// strip are the canonical names of the request headers removed before
	// forwarding.
	strip []string
	// needsSecret: a header uses the secret, so a key without one cannot
	// serve.
	needsSecret bool
	metrics     *metrics
	logger      *slog.Logger
}

// New returns a proxy, or an error naming every setting that is wrong.
func New(cfg Config) (*Proxy, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Pool, cfg.Registerer)
	if err != nil {
		return nil, err
	}
	p := &Proxy{cfg: cfg, metrics: m, logger: cfg.Logger}
	seen := map[string]bool{}
	for _, names := range [][]string{StrippedHeaders, cfg.StripHeaders} {
		for _, name := range names {
			if name = textproto.CanonicalMIMEHeaderKey(name); !seen[name] {
				seen[name] = true
				p.strip = append(p.strip, name)
			}
		}
	}
	for _, h := range cfg.Headers {
		if !seen[h.Name] {
			seen[h.Name] = true
			p.strip = append(p.strip, h.Name)
		}
		p.needsSecret = p.needsSecret || h.usesSecret()
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite:   p.rewrite,
		Transport: cfg.Transport,
		// Every write reaches the caller at once: server-sent events and
		// other streamed answers must not wait in a buffer.
		FlushInterval:  -1,
		ModifyResponse: p.modifyResponse,
		ErrorHandler:   p.errorHandler,
		ErrorLog:       slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	return p, nil
}

func (cfg Config) withDefaults() Config {
	if cfg.ClaimWait <= 0 {
		cfg.ClaimWait = DefaultClaimWait
	}
	if cfg.UpstreamTimeout <= 0 {
		cfg.UpstreamTimeout = DefaultUpstreamTimeout
	}
	if cfg.DefaultCooldown <= 0 {
		cfg.DefaultCooldown = DefaultCooldown
	}
	if cfg.MaxCooldown <= 0 {
		cfg.MaxCooldown = DefaultMaxCooldown
	}
	if cfg.ReleaseTimeout <= 0 {
		cfg.ReleaseTimeout = DefaultReleaseTimeout
	}
	if cfg.Transport == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		// Two idle connections, the default, would make every request
		// beyond the second open a connection of its own under load.
		t.MaxIdleConnsPerHost = 256
		t.MaxIdleConns = 256
		cfg.Transport = t
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return cfg
}

func (cfg Config) validate() error {
	var errs []error
	if cfg.Client == nil {
		errs = append(errs, errors.New("proxy: a client of the Token Orchestrator server is required"))
	}
	if cfg.Upstream == nil || (cfg.Upstream.Scheme != "http" && cfg.Upstream.Scheme != "https") || cfg.Upstream.Host == "" {
		errs = append(errs, errors.New("proxy: the upstream must be an http:// or https:// URL with a host"))
	}
	if cfg.DefaultCooldown > MaxCooldown {
		errs = append(errs, fmt.Errorf("proxy: the default cooldown is at most %s, got %s", MaxCooldown, cfg.DefaultCooldown))
	}
	if cfg.MaxCooldown > MaxCooldown {
		errs = append(errs, fmt.Errorf("proxy: the longest cooldown is at most %s, got %s", MaxCooldown, cfg.MaxCooldown))
	}
	if cfg.DefaultCooldown > cfg.MaxCooldown {
		errs = append(errs, fmt.Errorf("proxy: the default cooldown (%s) is longer than the longest (%s)", cfg.DefaultCooldown, cfg.MaxCooldown))
	}
	for _, h := range cfg.Headers {
		if !validHeaderName(h.Name) {
			errs = append(errs, fmt.Errorf("proxy: %q is not a valid header name", h.Name))
		}
	}
	return errors.Join(errs...)
}

// Outcomes of a request, the values of the outcome label.
const (
	// outcomeForwarded: the upstream answered, and not 429 or 503.
	outcomeForwarded = "forwarded"
	// outcomeRateLimited: the upstream answered 429 or 503; the key was
	// released with a cooldown.
	outcomeRateLimited = "rate_limited"
	// outcomeNoKey: no key became free within the claim's wait (503).
	outcomeNoKey = "no_key"
	// outcomeClaimFailed: the server refused the claim or could not be
	// reached (503).
	outcomeClaimFailed = "claim_failed"
	// outcomeUnusableSecret: the key claimed has no secret, or one that
	// cannot go into a header (500).
	outcomeUnusableSecret = "unusable_secret"
	// outcomeUpstreamError: the upstream could not be reached, or broke
	// off (502, or an answer cut short).
	outcomeUpstreamError = "upstream_error"
	// outcomeUpstreamTimeout: no answer within the upstream timeout (504).
	outcomeUpstreamTimeout = "upstream_timeout"
	// outcomeLeaseLost: the key's lease was lost while the request was
	// forwarded, and the request was broken off (503, or an answer cut
	// short).
	outcomeLeaseLost = "lease_lost"
	// outcomeCanceled: the caller went away first.
	outcomeCanceled = "canceled"
)

var outcomes = []string{outcomeForwarded, outcomeRateLimited, outcomeNoKey, outcomeClaimFailed, outcomeUnusableSecret,
	outcomeUpstreamError, outcomeUpstreamTimeout, outcomeLeaseLost, outcomeCanceled}

// Causes of a forwarded request's end other than its caller's.
var (
	errUpstreamTimeout = errors.New("no answer from the upstream in time")
	errLeaseLost       = errors.New("the key's lease was lost")
	errDone            = errors.New("done")
)

// exchange is one request on its way through the proxy, found by the
// ReverseProxy's hooks in the request's context.
type exchange struct {
	lease *client.Lease
	// caller is the caller's context: its end tells a caller that went
	// away from the proxy's own causes of an end.
	caller context.Context
	// headerTimer ends the request with errUpstreamTimeout unless the
	// answer's headers arrive first.
	headerTimer *time.Timer
	outcome     string
	// cooldown, when the upstream rate-limited the key.
	cooldown time.Duration
}

type exchangeKey struct{}

func exchangeOf(ctx context.Context) *exchange { return ctx.Value(exchangeKey{}).(*exchange) }

// ServeHTTP claims a key, forwards the request with it, streams the answer
// back, and releases the key once the answer's body has ended.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	p.metrics.inFlight.Inc()
	ex := &exchange{caller: r.Context(), outcome: outcomeForwarded}
	defer func() {
		if rec := recover(); rec != nil {
			// The ReverseProxy breaks off an answer that it cannot finish
			// (http.ErrAbortHandler); the key is released all the same.
			if ex.outcome == outcomeForwarded || ex.outcome == outcomeRateLimited {
				ex.outcome = p.brokenOff(ex)
			}
			p.finish(ex, start)
			panic(rec)
		}
		p.finish(ex, start)
	}()

	claimCtx, cancel := context.WithTimeout(r.Context(), p.cfg.ClaimWait)
	lease, err := p.cfg.Client.Claim(claimCtx, p.cfg.Pool, client.WithLabels(p.cfg.Labels...))
	cancel()
	p.metrics.claimDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		p.claimFailed(w, r, ex, err)
		return
	}
	ex.lease = lease
	if p.needsSecret {
		if why := unusableSecret(lease.Secret()); why != "" {
			ex.outcome = outcomeUnusableSecret
			p.logger.Error("proxy: the key claimed cannot serve", "pool", p.cfg.Pool, "key", lease.ID(), "why", why)
			writeProblem(w, problemUnusableSecret, fmt.Sprintf("A key of pool %q %s; the proxy's log names it.", p.cfg.Pool, why))
			return
		}
	}

	ctx, end := context.WithCancelCause(r.Context())
	defer end(errDone)
	ctx = context.WithValue(ctx, exchangeKey{}, ex)
	// A key whose lease is lost may be someone else's already: stop using
	// it at once.
	go func() {
		select {
		case <-lease.Lost():
			end(errLeaseLost)
		case <-ctx.Done():
		}
	}()
	ex.headerTimer = time.AfterFunc(p.cfg.UpstreamTimeout, func() { end(errUpstreamTimeout) })
	defer ex.headerTimer.Stop()
	p.rp.ServeHTTP(w, r.WithContext(ctx))
	if ex.outcome == outcomeForwarded && lease.Err() != nil {
		// The answer was cut short by the lease's loss.
		ex.outcome = outcomeLeaseLost
	}
}

// rewrite turns the caller's request into the upstream's: the upstream's
// address, no credentials of the caller, the key's.
func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	ex := exchangeOf(pr.In.Context())
	pr.SetURL(p.cfg.Upstream)
	for _, name := range p.strip {
		pr.Out.Header.Del(name)
	}
	secret := ex.lease.Secret()
	for _, h := range p.cfg.Headers {
		pr.Out.Header.Add(h.Name, strings.ReplaceAll(h.Value, SecretPlaceholder, secret))
	}
}

// modifyResponse notes the upstream's answer, and the cooldown it asks for.
func (p *Proxy) modifyResponse(resp *http.Response) error {
	ex := exchangeOf(resp.Request.Context())
	if !ex.headerTimer.Stop() {
		// The timeout fired as the headers came: the request's context is
		// ending, and the body would be cut short.
		return errUpstreamTimeout
	}
	p.metrics.upstreamResponses.WithLabelValues(statusLabel(resp.StatusCode)).Inc()
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		ex.outcome = outcomeRateLimited
		ex.cooldown = Cooldown(resp.Header, time.Now(), p.cfg.DefaultCooldown, p.cfg.MaxCooldown)
	}
	// An upstream that echoes the credential back in a header must not
	// hand it to the caller.
	if secret := ex.lease.Secret(); secret != "" {
		for name, values := range resp.Header {
			for _, v := range values {
				if strings.Contains(v, secret) {
					resp.Header.Del(name)
					p.logger.Warn("proxy: removed an answer header that holds the key's secret", "pool", p.cfg.Pool, "key", ex.lease.ID(), "header", name)
					break
				}
			}
		}
	}
	return nil
}

// errorHandler answers a request that got no answer from the upstream.
func (p *Proxy) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	ex := exchangeOf(r.Context())
	cause := context.Cause(r.Context())
	switch {
	case errors.Is(err, errUpstreamTimeout) || errors.Is(cause, errUpstreamTimeout) || isTimeout(err):
		ex.outcome = outcomeUpstreamTimeout
		p.logger.Warn("proxy: the upstream did not answer in time", "pool", p.cfg.Pool, "key", ex.lease.ID(),
			"method", r.Method, "path", r.URL.Path, "timeout", p.cfg.UpstreamTimeout)
		writeProblem(w, problemUpstreamTimeout, fmt.Sprintf("The upstream sent no answer within %s.", p.cfg.UpstreamTimeout))
	case errors.Is(cause, errLeaseLost):
		ex.outcome = outcomeLeaseLost
		p.logger.Warn("proxy: lease lost while forwarding", "pool", p.cfg.Pool, "key", ex.lease.ID(), "error", ex.lease.Err())
		writeProblem(w, problemLeaseLost, "")
	case ex.caller.Err() != nil:
		ex.outcome = outcomeCanceled
	default:
		ex.outcome = outcomeUpstreamError
		p.logger.Warn("proxy: the upstream could not be reached", "pool", p.cfg.Pool, "key", ex.lease.ID(),
			"method", r.Method, "path", r.URL.Path, "error", err)
		writeProblem(w, problemUpstreamError, "")
	}
}

// brokenOff tells why an answer under way was broken off.
func (p *Proxy) brokenOff(ex *exchange) string {
	switch {
	case ex.lease != nil && ex.lease.Err() != nil:
		p.logger.Warn("proxy: lease lost while an answer streamed; the answer was cut short", "pool", p.cfg.Pool,
			"key", ex.lease.ID(), "error", ex.lease.Err())
		return outcomeLeaseLost
	case ex.caller.Err() != nil:
		return outcomeCanceled
	}
	return outcomeUpstreamError
}

// claimFailed answers a request for which no key was claimed.
func (p *Proxy) claimFailed(w http.ResponseWriter, r *http.Request, ex *exchange, err error) {
	switch {
	case r.Context().Err() != nil:
		ex.outcome = outcomeCanceled
	case errors.Is(err, client.ErrNoKeyAvailable):
		ex.outcome = outcomeNoKey
		writeProblem(w, problemNoFreeKey, fmt.Sprintf("No key of pool %q became free within %s.", p.cfg.Pool, p.cfg.ClaimWait))
	case errors.Is(err, client.ErrUnknownPool):
		ex.outcome = outcomeClaimFailed
		p.logger.Error("proxy: the pool has no keys", "pool", p.cfg.Pool, "error", err)
		writeProblem(w, problemUnknownPool, fmt.Sprintf("Pool %q has no keys.", p.cfg.Pool))
	default:
		ex.outcome = outcomeClaimFailed
		p.logger.Error("proxy: claim failed", "pool", p.cfg.Pool, "error", err)
		writeProblem(w, problemClaimFailed, "")
	}
}

// finish releases the key, with the cooldown the upstream asked for, and
// counts the request.
func (p *Proxy) finish(ex *exchange, start time.Time) {
	if ex.lease != nil {
		ctx, cancel := context.WithTimeout(context.Background(), p.cfg.ReleaseTimeout)
		var err error
		if ex.cooldown > 0 {
			err = ex.lease.ReleaseWithCooldown(ctx, ex.cooldown)
		} else {
			err = ex.lease.Release(ctx)
		}
		cancel()
		switch {
		case err == nil:
		case ex.lease.Err() != nil:
			// Lost, and said so already.
		default:
			// The lease runs out on its own; a cooldown is lost.
			p.logger.Warn("proxy: release failed", "pool", p.cfg.Pool, "key", ex.lease.ID(), "cooldown", ex.cooldown, "error", err)
		}
	}
	p.metrics.inFlight.Dec()
	p.metrics.requests.WithLabelValues(ex.outcome).Inc()
	p.metrics.duration.WithLabelValues(ex.outcome).Observe(time.Since(start).Seconds())
}

// unusableSecret says why a secret cannot go into a header; "" when it can.
func unusableSecret(secret string) string {
	switch {
	case secret == "":
		return "has no secret"
	case !validHeaderValue(secret):
		return "has a secret that cannot go into a header (it holds a control character)"
	}
	return ""
}

// validHeaderName reports whether name is an HTTP token (RFC 9110).
func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for _, c := range []byte(name) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// validHeaderValue reports whether v holds no control character but tab.
func validHeaderValue(v string) bool {
	for _, c := range []byte(v) {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// statusLabel is the status code as a label value.
func statusLabel(code int) string {
	if code < 100 || code > 999 {
		return "other"
	}
	return fmt.Sprint(code)
}

// isTimeout reports whether err is a timeout of the network.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
