package proxy

import (
	"encoding/json"
	"net/http"
)

// problem is an RFC 9457 problem details body, as the server writes them,
// with a stable machine-readable code.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Code   string `json:"code"`
}

// The answers the proxy gives itself, one per code. A detail given to
// writeProblem replaces the one here; neither ever holds a secret or the
// cause of an internal failure, which only the log tells.
var (
	problemNoFreeKey = problem{Status: http.StatusServiceUnavailable, Code: "no_free_key", Title: "No free key",
		Detail: "Every key of the pool is held or cooling down."}
	problemUnknownPool = problem{Status: http.StatusServiceUnavailable, Code: "unknown_pool", Title: "Unknown pool",
		Detail: "The proxy's pool has no keys."}
	problemClaimFailed = problem{Status: http.StatusServiceUnavailable, Code: "claim_failed", Title: "No key could be claimed",
		Detail: "Token Orchestrator refused the claim or could not be reached; the proxy's log says why."}
	problemUnusableSecret = problem{Status: http.StatusInternalServerError, Code: "unusable_secret", Title: "Key without a usable secret",
		Detail: "The key claimed has no secret that can go into a header; the proxy's log names it."}
	problemUpstreamError = problem{Status: http.StatusBadGateway, Code: "upstream_unreachable", Title: "Upstream unreachable",
		Detail: "The upstream could not be reached, or broke off before it answered; the proxy's log says why."}
	problemUpstreamTimeout = problem{Status: http.StatusGatewayTimeout, Code: "upstream_timeout", Title: "Upstream timeout"}
	problemLeaseLost       = problem{Status: http.StatusServiceUnavailable, Code: "lease_lost", Title: "Lease lost",
		Detail: "The key's lease was lost while the request was forwarded, so the request was broken off; it may have reached the upstream."}
)

// retryAfterSeconds is sent with every 503 of the proxy's own.
const retryAfterSeconds = "1"

// writeProblem answers with p, detail replacing its own when given.
func writeProblem(w http.ResponseWriter, p problem, detail string) {
	if detail != "" {
		p.Detail = detail
	}
	p.Type = "/problems/" + p.Code
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Cache-Control", "no-store")
	if p.Status == http.StatusServiceUnavailable {
		h.Set("Retry-After", retryAfterSeconds)
	}
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}
