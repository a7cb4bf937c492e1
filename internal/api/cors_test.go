package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

// A page of an allowed origin may call a server that asks for tokens: the
// preflight for a JSON request with an Authorization header needs no token
// and succeeds; from any other origin it fails. Refusals of the actual
// request carry the CORS headers, so that the page can read them.
func TestCORSWithTokens(t *testing.T) {
	t.Parallel()
	const page = "https://app.example.com"
	s := newServer(t, testdb.New(t), options{corsOrigins: []string{page}, auth: strictAuth})

	for _, r := range []struct{ method, path string }{{"POST", "/keys"}, {"GET", "/keys"}, {"PUT", "/keys/" + unknownID}, {"DELETE", "/keys/" + unknownID}} {
		preflight := do(t, "OPTIONS", s.url+r.path, "", "Origin", page,
			"Access-Control-Request-Method", r.method, "Access-Control-Request-Headers", "authorization, content-type")
		require.Equal(t, http.StatusOK, preflight.status, preflight.raw)
		require.Equal(t, page, preflight.header.Get("Access-Control-Allow-Origin"))
		require.Contains(t, preflight.header.Get("Access-Control-Allow-Methods"), r.method)
		allowed := strings.ToLower(preflight.header.Get("Access-Control-Allow-Headers"))
		require.Contains(t, allowed, "authorization")
		require.Contains(t, allowed, "content-type")
		require.Contains(t, preflight.header.Values("Vary"), "Origin")

		refused := do(t, "OPTIONS", s.url+r.path, "", "Origin", "https://evil.example.com",
			"Access-Control-Request-Method", r.method, "Access-Control-Request-Headers", "authorization, content-type")
		requireProblem(t, refused, http.StatusForbidden, "origin_not_allowed")
		require.Empty(t, refused.header.Get("Access-Control-Allow-Origin"))
		require.Empty(t, refused.header.Get("Access-Control-Allow-Headers"))
	}

	created := do(t, "POST", s.url+"/keys", `{"pool": "web"}`, append(bearer(adminToken), "Origin", page)...)
	require.Equal(t, http.StatusCreated, created.status, created.raw)
	require.Equal(t, page, created.header.Get("Access-Control-Allow-Origin"))

	unauthorized := do(t, "GET", s.url+"/keys?pool=web", "", "Origin", page)
	requireProblem(t, unauthorized, http.StatusUnauthorized, "unauthorized")
	require.Equal(t, page, unauthorized.header.Get("Access-Control-Allow-Origin"))
	require.Contains(t, unauthorized.header.Get("Access-Control-Expose-Headers"), "WWW-Authenticate")

	// From another origin the answer has no CORS headers: the browser keeps
	// it from the page, token or not.
	other := do(t, "GET", s.url+"/keys?pool=web", "", append(bearer(clientToken), "Origin", "https://evil.example.com")...)
	require.Equal(t, http.StatusOK, other.status, other.raw)
	require.Empty(t, other.header.Get("Access-Control-Allow-Origin"))
}
