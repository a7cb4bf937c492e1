package api

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5/middleware"

	"github.com/tokenorchestrator/tokenorchestrator/internal/lease"
	"github.com/tokenorchestrator/tokenorchestrator/internal/reports"
	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
)

// formatTime writes a time as the whole API does (reports.TimeFormat).
func formatTime(t time.Time) string { return reports.FormatTime(t) }

func formatTimePtr(t *time.Time) *string {
	if t == nil {
		return nil
	}
	s := formatTime(*t)
	return &s
}

// keyBody is a key as the API shows it. Its JSON names predate the words
// claim and held and stay for existing clients: see "Words" in docs/api.md.
type keyBody struct {
	KeyID     string  `json:"keyId"`
	Pool      string  `json:"pool"`
	IsBlocked bool    `json:"isBlocked"`
	BlockedAt *string `json:"blockedAt"`
	CreatedAt string  `json:"createdAt"`
	// ExpiresAt is null for a key that lives until deleted.
	ExpiresAt       *string `json:"expiresAt"`
	LeaseExpiresAt  *string `json:"leaseExpiresAt"`
	LastKeepAliveAt *string `json:"lastKeepAliveAt"`
	TimesAssigned   int64   `json:"timesAssigned"`
	// Seats is how many leases may hold the key at once.
	Seats int `json:"seats"`
	// SeatsHeld is how many are held; only where the key is read as a
	// whole (GET /keys/{id} without a token, by name, in a list).
	SeatsHeld *int `json:"seatsHeld,omitempty"`
	// Name of the key, unique in its pool; null for none.
	Name *string `json:"name"`
	// SecretHint is the last four characters of the key's secret; null
	// for a key without one.
	SecretHint *string `json:"secretHint"`
	// Labels of the key; left out for a key without any.
	Labels map[string]string `json:"labels,omitempty"`
	// CoolingUntil is set while the key cools down after a release with a
	// cooldown: no claim takes it before then.
	CoolingUntil *string `json:"coolingUntil"`
	// LeaseToken is shown only to the client that just claimed the key.
	LeaseToken string `json:"leaseToken,omitempty"`
	// Secret is shown only to the holder of the current lease: in the
	// claim's answer and in GET /keys/{id} with its token.
	Secret *string `json:"secret,omitempty"`
}

func newKeyBody(k lease.Key) keyBody {
	return keyBody{
		KeyID:           k.ID.String(),
		Pool:            k.Pool,
		IsBlocked:       k.Held(),
		BlockedAt:       formatTimePtr(k.ClaimedAt),
		CreatedAt:       formatTime(k.CreatedAt),
		ExpiresAt:       formatTimePtr(k.ExpiresAt),
		Name:            k.Name,
		SecretHint:      k.SecretHint,
		LeaseExpiresAt:  formatTimePtr(k.LeaseExpiresAt),
		LastKeepAliveAt: formatTimePtr(k.LastKeepAliveAt),
		TimesAssigned:   k.TimesClaimed,
		Seats:           k.Seats,
		SeatsHeld:       k.SeatsHeld,
		Labels:          k.Labels,
		CoolingUntil:    formatTimePtr(k.CoolingUntil),
	}
}

// withSecret adds the key's secret, for the holder's eyes only. The store
// sets it only where it may be shown.
func (b keyBody) withSecret(k lease.Key) keyBody {
	b.Secret = k.Secret
	return b
}

// withLease adds the lease token, for the holder's eyes only.
func (b keyBody) withLease(k lease.Key) keyBody {
	if k.LeaseToken != nil {
		b.LeaseToken = formatLeaseToken(*k.LeaseToken)
	}
	return b
}

func formatLeaseToken(token int64) string { return strconv.FormatInt(token, 10) }

// writeJSON writes body as the response. API answers are never cached: they
// describe state that changes from one moment to the next.
func writeJSON(w http.ResponseWriter, status int, body any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

// writeError answers with the problem details of err. It is the one place
// where errors become responses.
func writeError(w http.ResponseWriter, r *http.Request, logger *slog.Logger, err error) {
	p, known := problemFor(err)
	p.Instance = r.URL.Path
	p.RequestID = middleware.GetReqID(r.Context())
	if !known {
		logger.ErrorContext(r.Context(), "request failed", "error", err, "method", r.Method, "path", r.URL.Path, "request_id", p.RequestID)
	}
	h := w.Header()
	if p.Status == http.StatusServiceUnavailable {
		h.Set("Retry-After", retryAfterSeconds)
		// A readiness probe logs its own cause, and a shutdown answers every
		// waiting client with a 503: only the others are worth a warning.
		switch {
		case errors.Is(err, store.ErrReportsUnavailable):
			logger.WarnContext(r.Context(), "report database unavailable", "error", err, "method", r.Method, "path", r.URL.Path, "request_id", p.RequestID)
		case p.Code != "not_ready" && p.Code != "shutting_down":
			logger.WarnContext(r.Context(), "service unavailable", "code", p.Code, "error", err, "method", r.Method, "path", r.URL.Path, "request_id", p.RequestID)
		}
	}
	h.Set("Content-Type", "application/problem+json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}
