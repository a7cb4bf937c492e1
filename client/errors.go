package client

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Errors to test for with errors.Is. Every error the server answers with is
// an *APIError, which matches the one of these that describes it.
var (
	// ErrNoKeyAvailable: the pool has keys and every one is held or cooling
	// down (404 no_free_key); one may be free later.
	ErrNoKeyAvailable = errors.New("no key available")
	// ErrUnknownPool: the pool has neither keys nor a policy, so no key will
	// come by waiting: check the pool's name (404 unknown_pool). Claim never
	// waits on it.
	ErrUnknownPool = errors.New("unknown pool")
	// ErrNotFound: no live key has this id (or name); it was deleted or its
	// life ran out (404 key_not_found).
	ErrNotFound = errors.New("not found")
	// ErrLeaseLost: the lease token is not the key's current lease any more,
	// so the key may already be someone else's (409 lease_mismatch).
	ErrLeaseLost = errors.New("lease lost")
	// ErrLeaseTokenRequired: the key's pool requires the lease token for
	// releases and keep-alives, and the call gave none; nothing was changed
	// (428 lease_token_required).
	ErrLeaseTokenRequired = errors.New("lease token required")
	// ErrIdempotencyKeyReused: a key was claimed under this idempotency key,
	// and that lease has ended since; nothing was claimed (409
	// idempotency_key_reused). A new claim needs a new idempotency key.
	ErrIdempotencyKeyReused = errors.New("idempotency key reused")
	// ErrUnavailable: the server could not reach its database and changed
	// nothing; it was still the answer after every retry (503).
	ErrUnavailable = errors.New("service unavailable")
	// ErrDuplicateSecret: a key of the pool already carries a secret of an
	// import, or the import lists one twice; nothing was created (409
	// duplicate_secret).
	ErrDuplicateSecret = errors.New("duplicate secret")
	// ErrDuplicateName: a key of the pool already has a name of an import,
	// or the import lists one twice; nothing was created (409
	// duplicate_name).
	ErrDuplicateName = errors.New("duplicate key name")
	// ErrPoolNotEmpty: the pool to delete still has keys, and the call did
	// not ask to delete them too; nothing was changed (409
	// pool_not_empty).
	ErrPoolNotEmpty = errors.New("pool not empty")
	// ErrSecretsNotConfigured: the server has no encryption key, so it
	// takes no secrets; nothing was created (400 secrets_not_configured).
	ErrSecretsNotConfigured = errors.New("secrets not configured on the server")
)

// APIError is an error answer of the server: an RFC 9457 problem details
// body with the server's stable error code.
type APIError struct {
	// Status is the HTTP status code.
	Status int
	// Code is the server's machine-readable error code, e.g. "no_free_key".
	// It is empty when the answer had no body, as answers to HEAD have none.
	Code   string
	Title  string
	Detail string
	// RequestID identifies the request in the server's logs.
	RequestID string
	// RetryAfter is the server's Retry-After, zero when it sent none.
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	msg := e.Title
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	if e.Code != "" {
		return fmt.Sprintf("%s (%d %s)", msg, e.Status, e.Code)
	}
	return fmt.Sprintf("%s (%d)", msg, e.Status)
}

// codes are the sentinel errors that one error code of the server stands
// for, and nothing else.
var codes = map[error]string{
	ErrNoKeyAvailable:       "no_free_key",
	ErrUnknownPool:          "unknown_pool",
	ErrIdempotencyKeyReused: "idempotency_key_reused",
	ErrDuplicateSecret:      "duplicate_secret",
	ErrDuplicateName:        "duplicate_name",
	ErrSecretsNotConfigured: "secrets_not_configured",
	ErrLeaseTokenRequired:   "lease_token_required",
	ErrPoolNotEmpty:         "pool_not_empty",
}

// Is matches the sentinel errors by the server's error code, or by the
// status alone when the answer had no body to carry a code.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Status == http.StatusNotFound && e.Code != "no_free_key" && e.Code != "unknown_pool"
	case ErrLeaseLost:
		// A 409 without a code (no problem body) is taken for the
		// conflict that calls about a key meet most.
		return e.Code == "lease_mismatch" || (e.Status == http.StatusConflict && e.Code == "")
	case ErrUnavailable:
		return e.Status == http.StatusServiceUnavailable
	}
	code, ok := codes[target]
	return ok && e.Code == code
}
