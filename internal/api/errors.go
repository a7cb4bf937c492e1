package api

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/tokenorchestrator/tokenorchestrator/internal/claim"
	"github.com/tokenorchestrator/tokenorchestrator/internal/lease"
	"github.com/tokenorchestrator/tokenorchestrator/internal/reports"
	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
)

// Errors the HTTP layer raises itself, about the request. Handlers wrap them
// with a detail through invalid().
var (
	errInvalidBody      = errors.New("invalid request body")
	errBodyTooLarge     = errors.New("request body too large")
	errInvalidParameter = errors.New("invalid parameter")
	errUnknownParameter = errors.New("unknown parameter")
	errUnsupportedMedia = errors.New("unsupported media type")
	errRouteNotFound    = errors.New("route not found")
	errMethodNotAllowed = errors.New("method not allowed")
	errOriginNotAllowed = errors.New("origin not allowed")
	errUnauthorized     = errors.New("unauthorized")
	errForbidden        = errors.New("forbidden")
	errServiceNotReady  = errors.New("service not ready")
	errInternal         = errors.New("internal error")
)

// errInvalidIdempotencyKey: a claim's Idempotency-Key header is empty, too
// long, not printable ASCII, or given twice.
var errInvalidIdempotencyKey = errors.New("invalid idempotency key")

// errorTable is the one place that maps an error to its HTTP status, its
// stable machine-readable code and its title. Errors are matched with
// errors.Is, in order; anything unmatched is a 500 whose cause is logged and
// never shown to the client.
var errorTable = []struct {
	err    error
	status int
	code   string
	title  string
	// detail, when set, replaces the error's own text: the error may carry
	// internal causes that clients must not see.
	detail string
}{
	{err: lease.ErrKeyNotFound, status: http.StatusNotFound, code: "key_not_found", title: "Key not found",
		detail: "No live key has this id."},
	{err: lease.ErrNoFreeKey, status: http.StatusNotFound, code: "no_free_key", title: "No free key",
		detail: "Every key of the pool is held or cooling down."},
	{err: lease.ErrUnknownPool, status: http.StatusNotFound, code: "unknown_pool", title: "Unknown pool"},
	{err: lease.ErrLeaseMismatch, status: http.StatusConflict, code: "lease_mismatch", title: "Lease token does not match",
		detail: "The lease token given is not the key's current lease: the lease has ended. Nothing was changed."},
	{err: lease.ErrIdempotencyKeyReused, status: http.StatusConflict, code: "idempotency_key_reused", title: "Idempotency key already used",
		detail: "A key was claimed under this Idempotency-Key and that lease has ended (released, run out, or its key deleted). Nothing was claimed; send a new Idempotency-Key to claim a key."},
	// Before ErrUnavailable: a standby that cannot be reached is both.
	{err: store.ErrReportsUnavailable, status: http.StatusServiceUnavailable, code: "reports_unavailable", title: "Report database unavailable",
		detail: "Reports read from a standby that cannot be read now, or that replays further behind the primary than REPORT_MAX_LAG allows. Keys and claims are not affected; retry shortly."},
	{err: lease.ErrUnavailable, status: http.StatusServiceUnavailable, code: "database_unavailable", title: "Database unavailable",
		detail: "The database could not be reached in time. Nothing was changed; retry shortly."},
	{err: claim.ErrClosed, status: http.StatusServiceUnavailable, code: "shutting_down", title: "Shutting down",
		detail: "This server is shutting down and no longer waits for keys, and none was free. Nothing was changed; retry, and another server will answer."},
	{err: claim.ErrTooManyWaiters, status: http.StatusServiceUnavailable, code: "too_many_waiters", title: "Too many waiting clients",
		detail: "This replica already has as many clients waiting for a key as it takes. Nothing was changed; retry shortly, or ask without wait."},
	{err: claim.ErrTooManyPools, status: http.StatusServiceUnavailable, code: "too_many_waited_pools", title: "Too many pools waited on",
		detail: "Clients of this replica already wait on as many pools as it takes, and not on this one. Nothing was changed; retry shortly, or ask without wait."},
	{err: lease.ErrNoEncryptionKey, status: http.StatusBadRequest, code: "secrets_not_configured", title: "Secrets are not configured",
		detail: "Keys with secrets need an encryption key (SECRET_KEY or SECRET_KEY_FILE), and this server has none. Nothing was stored."},
	// The details of duplicates name the key of the request.
	{err: lease.ErrDuplicateSecret, status: http.StatusConflict, code: "duplicate_secret", title: "Duplicate secret"},
	{err: lease.ErrDuplicateName, status: http.StatusConflict, code: "duplicate_name", title: "Duplicate key name"},
	// Before ErrLeaseTokenRequired, which it wraps.
	{err: lease.ErrSeatLeaseRequired, status: http.StatusPreconditionRequired, code: "lease_token_required", title: "Lease token required",
		detail: "The key has several seats, each with its own lease: a release names the lease with its token (If-Match or ?lease=). Nothing was changed."},
	{err: lease.ErrInvalidSeats, status: http.StatusBadRequest, code: "invalid_body", title: "Invalid request body"},
	{err: lease.ErrLeaseTokenRequired, status: http.StatusPreconditionRequired, code: "lease_token_required", title: "Lease token required",
		detail: "The key's pool requires the lease token (If-Match or ?lease=) for releases and keep-alives. Nothing was changed."},
	{err: lease.ErrPoolNotEmpty, status: http.StatusConflict, code: "pool_not_empty", title: "Pool has keys",
		detail: "The pool still has keys. Delete them first, or ask for them to be deleted with ?deleteKeys=true. Nothing was changed."},
	{err: lease.ErrSecretUnavailable, status: http.StatusInternalServerError, code: "secret_unavailable", title: "Secret unavailable",
		detail: "The key's secret is sealed under an encryption key this server is not configured with. Nothing was claimed; the request id identifies the key in the logs."},
	{err: errServiceNotReady, status: http.StatusServiceUnavailable, code: "not_ready", title: "Not ready"},
	{err: errInvalidBody, status: http.StatusBadRequest, code: "invalid_body", title: "Invalid request body"},
	{err: errBodyTooLarge, status: http.StatusRequestEntityTooLarge, code: "body_too_large", title: "Request body too large"},
	{err: errInvalidParameter, status: http.StatusBadRequest, code: "invalid_parameter", title: "Invalid parameter"},
	{err: errUnknownParameter, status: http.StatusBadRequest, code: "unknown_parameter", title: "Unknown parameter"},
	{err: errInvalidIdempotencyKey, status: http.StatusBadRequest, code: "invalid_idempotency_key", title: "Invalid Idempotency-Key"},
	{err: reports.ErrInvalidParams, status: http.StatusBadRequest, code: "invalid_report_parameters", title: "Invalid report parameters"},
	{err: errUnsupportedMedia, status: http.StatusUnsupportedMediaType, code: "unsupported_media_type", title: "Unsupported media type"},
	{err: errRouteNotFound, status: http.StatusNotFound, code: "route_not_found", title: "Route not found"},
	{err: errMethodNotAllowed, status: http.StatusMethodNotAllowed, code: "method_not_allowed", title: "Method not allowed"},
	{err: errOriginNotAllowed, status: http.StatusForbidden, code: "origin_not_allowed", title: "Origin not allowed"},
	{err: errUnauthorized, status: http.StatusUnauthorized, code: "unauthorized", title: "Authentication required"},
	{err: errForbidden, status: http.StatusForbidden, code: "forbidden", title: "Not allowed with this token"},
	{err: errInternal, status: http.StatusInternalServerError, code: "internal_error", title: "Internal error",
		detail: "The server failed to answer; the request id identifies it in the logs."},
}

// retryAfterSeconds is sent with every 503.
const retryAfterSeconds = "1"

// requestError is a request-level error with a detail for the client.
type requestError struct {
	kind   error
	detail string
}

func (e *requestError) Error() string { return e.kind.Error() + ": " + e.detail }
func (e *requestError) Unwrap() error { return e.kind }

// invalid returns an error of the given kind whose detail the client sees.
func invalid(kind error, format string, args ...any) error {
	return &requestError{kind: kind, detail: fmt.Sprintf(format, args...)}
}

// problem is an RFC 9457 problem details body.
type problem struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail"`
	Code      string `json:"code"`
	Instance  string `json:"instance,omitempty"`
	RequestID string `json:"requestId,omitempty"`
}

// problemFor looks the error up in errorTable. The second result is false
// for errors the table does not know, which are internal.
func problemFor(err error) (problem, bool) {
	for _, row := range errorTable {
		if !errors.Is(err, row.err) {
			continue
		}
		p := problem{Type: "/problems/" + row.code, Title: row.title, Status: row.status, Code: row.code, Detail: row.detail}
		if p.Detail == "" {
			var reqErr *requestError
			if errors.As(err, &reqErr) {
				p.Detail = reqErr.detail
			} else {
				p.Detail = err.Error()
			}
		}
		return p, !errors.Is(row.err, errInternal)
	}
	p, _ := problemFor(errInternal)
	return p, false
}
