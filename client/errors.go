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
	// ErrUnknownPool: the pool has no keys, so no key will come by waiting:
	// check the pool's name (404 unknown_pool). Claim never waits on it.
	ErrUnknownPool = errors.New("unknown pool")
	// ErrNotFound: no live key has this id; it was deleted or its life ran
	// out (404).
	ErrNotFound = errors.New("not found")
	// ErrLeaseLost: the lease token is not the key's current lease any more,
	// so the key may already be someone else's (409 lease_mismatch).
	ErrLeaseLost = errors.New("lease lost")
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

// Is matches the sentinel errors by the server's error code, or by the
// status alone when the answer had no body to carry a code.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrNoKeyAvailable:
		return e.Code == "no_free_key"
	case ErrUnknownPool:
		return e.Code == "unknown_pool"
	case ErrNotFound:
		return e.Status == http.StatusNotFound && e.Code != "no_free_key" && e.Code != "unknown_pool"
	case ErrLeaseLost:
		return e.Status == http.StatusConflict && e.Code != "idempotency_key_reused" && e.Code != "duplicate_secret"
	case ErrDuplicateSecret:
		return e.Code == "duplicate_secret"
	case ErrSecretsNotConfigured:
		return e.Code == "secrets_not_configured"
	case ErrIdempotencyKeyReused:
		return e.Code == "idempotency_key_reused"
	case ErrUnavailable:
		return e.Status == http.StatusServiceUnavailable
	}
	return false
}
