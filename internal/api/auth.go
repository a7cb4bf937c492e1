package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
)

// Auth configures bearer tokens. With no token set the API asks for none.
type Auth struct {
	// AdminToken may call every route: create and delete keys, stats,
	// reports, metrics, and everything a client may.
	AdminToken string
	// ClientToken may lease, inspect, keep alive and release keys. Empty
	// while AdminToken is set: only the admin token may.
	ClientToken string
	// PublicHealth serves /healthz and /readyz without a token.
	PublicHealth bool
	// PublicMetrics serves /metrics without a token.
	PublicMetrics bool
}

// role is what a route asks of the caller; the router gives each route one.
type role int

const (
	// rolePublic: anyone.
	rolePublic role = iota
	// roleClient: the client or the admin token.
	roleClient
	// roleAdmin: the admin token only.
	roleAdmin
)

// authenticator checks bearer tokens. It keeps only their SHA-256 digests:
// comparing digests of equal length in constant time reveals neither the
// token nor its length through timing.
type authenticator struct {
	enabled       bool
	admin, client [sha256.Size]byte
	hasClient     bool
}

func newAuthenticator(cfg Auth) *authenticator {
	a := &authenticator{enabled: cfg.AdminToken != ""}
	a.admin = sha256.Sum256([]byte(cfg.AdminToken))
	if cfg.ClientToken != "" {
		a.client, a.hasClient = sha256.Sum256([]byte(cfg.ClientToken)), true
	}
	return a
}

// bearerToken returns the token of an "Authorization: Bearer <token>"
// header; ok is false when the header is missing or of another scheme.
func bearerToken(r *http.Request) (token string, present, ok bool) {
	header := r.Header.Get("Authorization")
	if header == "" {
		return "", false, false
	}
	scheme, token, found := strings.Cut(header, " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return "", true, false
	}
	token = strings.TrimSpace(token)
	return token, true, token != ""
}

// roleOf is the role the request's token grants: rolePublic for no token or
// a wrong one.
func (a *authenticator) roleOf(token string) role {
	digest := sha256.Sum256([]byte(token))
	// Both comparisons always run, so that timing does not tell which
	// token came close.
	isAdmin := subtle.ConstantTimeCompare(digest[:], a.admin[:])
	isClient := subtle.ConstantTimeCompare(digest[:], a.client[:]) & boolInt(a.hasClient)
	switch {
	case isAdmin == 1:
		return roleAdmin
	case isClient == 1:
		return roleClient
	default:
		return rolePublic
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// challenge is the WWW-Authenticate header of a refusal (RFC 6750).
func challenge(errorCode string) string {
	c := `Bearer realm="token-orchestrator"`
	if errorCode != "" {
		c += `, error="` + errorCode + `"`
	}
	return c
}

// require lets through the requests whose token grants at least want;
// others are answered 401 (no token, or a wrong one) or 403 (the client
// token on an admin route). The token is never logged, nor echoed.
func (a *API) require(want role) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		if !a.auth.enabled || want == rolePublic {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			token, present, ok := bearerToken(r)
			got := rolePublic
			if ok {
				got = a.auth.roleOf(token)
			}
			switch {
			case got >= want:
				next.ServeHTTP(w, r)
			case !present:
				w.Header().Set("WWW-Authenticate", challenge(""))
				writeError(w, r, a.logger, invalid(errUnauthorized, "%s", needs(want)+" in an Authorization: Bearer header"))
			case got == rolePublic:
				w.Header().Set("WWW-Authenticate", challenge("invalid_token"))
				writeError(w, r, a.logger, invalid(errUnauthorized, "the bearer token is not valid here; %s", needs(want)))
			default:
				w.Header().Set("WWW-Authenticate", challenge("insufficient_scope"))
				writeError(w, r, a.logger, invalid(errForbidden, "the client token may not %s %s; %s", r.Method, r.URL.Path, needs(want)))
			}
		})
	}
}

func needs(want role) string {
	if want == roleAdmin {
		return "this route needs the admin token"
	}
	return "this route needs the client or the admin token"
}
