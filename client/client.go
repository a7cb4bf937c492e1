// Package client is the Go client of Token Orchestrator, the lease server
// for pools of API keys.
//
// Claim claims a key and keeps the lease alive in the background until
// Release; the other methods are one call each to one endpoint of the HTTP
// API: keys (CreateKeys, ImportKeys, ClaimKey, GetKey, ...), pools and
// their policies (PutPool, GetPool, ListPools, DeletePool). Answers of 503
// (the server could not reach its database and changed nothing) are retried
// with exponential backoff; a claim is repeated safely only with an
// idempotency key, which Claim always sends, and is then also repeated when
// its connection failed before an answer came. Error answers are *APIError
// values that match one of the Err variables (ErrNoKeyAvailable,
// ErrUnknownPool, ErrNotFound, ErrLeaseLost, ...) with errors.Is.
//
// The package depends on the standard library only, and is a module of its
// own (go get github.com/tokenorchestrator/tokenorchestrator/client) so
// that a program that imports it gets none of the server's dependencies.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client talks to one Token Orchestrator server (or a load balancer in front
// of several replicas). It is safe for concurrent use.
type Client struct {
	base       *url.URL
	httpClient *http.Client
	token      string
	retry      retryPolicy
}

// retryPolicy says how answers of 503 are retried: after MinBackoff, then
// twice as long each time up to MaxBackoff, at most Attempts tries in all.
type retryPolicy struct {
	attempts               int
	minBackoff, maxBackoff time.Duration
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sends the requests through hc instead of a client of its
// own. Its Timeout, if any, also bounds waiting for a free key.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.httpClient = hc } }

// WithToken sends token as a bearer token (Authorization: Bearer <token>)
// with every request.
func WithToken(token string) Option { return func(c *Client) { c.token = token } }

// WithRetry sets how answers of 503 are retried: at most attempts tries in
// all (1 disables retries), waiting minBackoff after the first, twice as long
// after each further one, never more than maxBackoff. A Retry-After from the
// server is honoured up to maxBackoff. The default is 5 tries from 100ms to
// 5s. Claims with an idempotency key (every claim of Claim) are retried the
// same way when the connection failed (refused, cut) before an answer came.
// A Lease's keep-alives are not: the lease tries them again itself until it
// ends.
func WithRetry(attempts int, minBackoff, maxBackoff time.Duration) Option {
	return func(c *Client) {
		c.retry = retryPolicy{attempts: max(attempts, 1), minBackoff: minBackoff, maxBackoff: max(maxBackoff, minBackoff)}
	}
}

// New returns a client of the server at baseURL, e.g. "http://127.0.0.1:8080".
func New(baseURL string, opts ...Option) (*Client, error) {
	base, err := url.Parse(strings.TrimSuffix(baseURL, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("client: server URL must be http:// or https:// with a host, got %q", baseURL)
	}
	c := &Client{
		base:       base,
		httpClient: &http.Client{},
		retry:      retryPolicy{attempts: 5, minBackoff: 100 * time.Millisecond, maxBackoff: 5 * time.Second},
	}
	for _, opt := range opts {
		opt(c)
	}
	return c, nil
}

// request is one call to the API.
type request struct {
	method string
	path   string
	query  url.Values
	body   any
	// leaseToken, when set, is sent as If-Match: "<token>".
	leaseToken string
	// accept is the media type asked for; JSON when empty.
	accept string
	// idempotencyKey, when set, is sent as Idempotency-Key, the same on
	// every retry.
	idempotencyKey string
	// attempts, when set, overrides the retry policy's number of tries.
	attempts int
}

// response is an answer with its body read.
type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends the request, retrying while the server answers 503, and turns
// an error answer into an *APIError. A request with an idempotency key is
// also sent again when its connection failed before an answer came: the
// server answers the repeat with what it did for the first.
func (c *Client) do(ctx context.Context, req request) (response, error) {
	var body []byte
	if req.body != nil {
		var err error
		if body, err = json.Marshal(req.body); err != nil {
			return response{}, fmt.Errorf("client: encode request body: %w", err)
		}
	}
	attempts := c.retry.attempts
	if req.attempts > 0 {
		attempts = req.attempts
	}
	backoff := c.retry.minBackoff
	for attempt := 1; ; attempt++ {
		resp, err := c.send(ctx, req, body)
		if err != nil {
			if req.idempotencyKey == "" || attempt >= attempts || !answerLost(ctx, err) {
				return response{}, err
			}
			if serr := sleep(ctx, jitter(backoff)); serr != nil {
				return response{}, fmt.Errorf("%w (gave up waiting to retry: %w)", err, serr)
			}
			backoff = min(2*backoff, c.retry.maxBackoff)
			continue
		}
		if resp.status < 400 {
			return resp, nil
		}
		apiErr := decodeProblem(resp)
		if apiErr.Status != http.StatusServiceUnavailable || attempt >= attempts {
			return response{}, apiErr
		}
		// The server changed nothing: the same request may be sent again.
		delay := min(max(jitter(backoff), apiErr.RetryAfter), c.retry.maxBackoff)
		if err := sleep(ctx, delay); err != nil {
			return response{}, fmt.Errorf("%w (gave up waiting to retry: %w)", apiErr, err)
		}
		backoff = min(2*backoff, c.retry.maxBackoff)
	}
}

// send makes one attempt.
func (c *Client) send(ctx context.Context, req request, body []byte) (response, error) {
	u := *c.base
	u.Path = c.base.Path + req.path
	u.RawQuery = req.query.Encode()
	var reader io.Reader
	if body != nil {
		reader = bytes.NewReader(body)
	}
	httpReq, err := http.NewRequestWithContext(ctx, req.method, u.String(), reader)
	if err != nil {
		return response{}, fmt.Errorf("client: %w", err)
	}
	accept := req.accept
	if accept == "" {
		accept = "application/json"
	}
	httpReq.Header.Set("Accept", accept+", application/problem+json")
	if body != nil {
		httpReq.Header.Set("Content-Type", "application/json")
	}
	if req.leaseToken != "" {
		httpReq.Header.Set("If-Match", `"`+req.leaseToken+`"`)
	}
	if req.idempotencyKey != "" {
		httpReq.Header.Set("Idempotency-Key", req.idempotencyKey)
	}
	if c.token != "" {
		httpReq.Header.Set("Authorization", "Bearer "+c.token)
	}
	httpResp, err := c.httpClient.Do(httpReq)
	if err != nil {
		return response{}, fmt.Errorf("client: %s %s: %w", req.method, req.path, err)
	}
	defer httpResp.Body.Close()
	raw, err := io.ReadAll(httpResp.Body)
	if err != nil {
		return response{}, fmt.Errorf("client: %s %s: read answer: %w", req.method, req.path, err)
	}
	return response{status: httpResp.StatusCode, header: httpResp.Header, body: raw}, nil
}

// answerLost tells whether err, from send, is a connection that failed
// (refused, cut, reset) rather than ctx ending or the HTTP client's
// Timeout, which bounds waiting and is not retried.
func answerLost(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	netErr, ok := errors.AsType[net.Error](err)
	return !ok || !netErr.Timeout()
}

// decodeProblem reads an error answer. A body that is not problem details
// (e.g. from a proxy in front of the server) still gives the status.
func decodeProblem(resp response) *APIError {
	var p struct {
		Title     string `json:"title"`
		Detail    string `json:"detail"`
		Code      string `json:"code"`
		RequestID string `json:"requestId"`
	}
	_ = json.Unmarshal(resp.body, &p)
	e := &APIError{Status: resp.status, Code: p.Code, Title: p.Title, Detail: p.Detail, RequestID: p.RequestID}
	if seconds, err := strconv.Atoi(resp.header.Get("Retry-After")); err == nil && seconds > 0 {
		e.RetryAfter = time.Duration(seconds) * time.Second
	}
	return e
}

// decode reads a JSON answer into dst.
func decode[T any](resp response) (T, error) {
	var v T
	if err := json.Unmarshal(resp.body, &v); err != nil {
		return v, fmt.Errorf("client: the server's answer is not the JSON expected: %w", err)
	}
	return v, nil
}

// jitter spreads retries of many clients over [d/2, d).
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2)
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
