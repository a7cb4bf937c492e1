package api_test

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/api"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

const (
	adminToken  = "admin-token-0123456789abcdef"
	clientToken = "client-token-0123456789abcdef"
	// unknownID names no key.
	unknownID = "0b7a0e55-8f7e-4b8e-9a52-8d1b6c1f0d3e"
)

// strictAuth protects every route that may be protected.
var strictAuth = api.Auth{AdminToken: adminToken, ClientToken: clientToken}

func bearer(token string) []string { return []string{"Authorization", "Bearer " + token} }

// send is a request whose answer need not be JSON (metrics, the document).
func send(t *testing.T, method, url string, headers ...string) (int, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	require.NoError(t, err)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header
}

// requireDocumentedTokens calls every operation of the document on s, a
// server with both tokens and nothing public but what must be, with no
// token, a wrong one, the client's and the admin's. Each is refused or let
// through exactly as the operation's security in the document says.
func requireDocumentedTokens(t *testing.T, c *contractDoc, s *testServer) {
	t.Helper()
	for _, path := range c.doc.Paths.Keys() {
		for method, op := range c.doc.Paths.Value(path).Operations() {
			url := s.url + strings.ReplaceAll(path, "{id}", unknownID)
			name := method + " " + path
			security := c.doc.Security
			if op.Security != nil {
				security = *op.Security
			}
			public, clients := len(security) == 0, false
			for _, requirement := range security {
				_, forClients := requirement["clientToken"]
				clients = clients || forClients
			}

			status, header := send(t, method, url)
			wrongStatus, wrongHeader := send(t, method, url, bearer("not-"+adminToken)...)
			if public {
				require.NotEqual(t, http.StatusUnauthorized, status, name)
				require.NotEqual(t, http.StatusUnauthorized, wrongStatus, "%s: a public route ignores tokens", name)
			} else {
				require.Equal(t, http.StatusUnauthorized, status, name)
				require.Equal(t, `Bearer realm="token-orchestrator"`, header.Get("WWW-Authenticate"), name)
				if method != http.MethodHead {
					requireProblem(t, do(t, method, url, ""), http.StatusUnauthorized, "unauthorized")
				}
				require.Equal(t, http.StatusUnauthorized, wrongStatus, name)
				require.Equal(t, `Bearer realm="token-orchestrator", error="invalid_token"`, wrongHeader.Get("WWW-Authenticate"), name)
			}

			status, header = send(t, method, url, bearer(clientToken)...)
			if public || clients {
				require.NotContains(t, []int{401, 403}, status, "%s with the client token", name)
			} else {
				require.Equal(t, http.StatusForbidden, status, "%s with the client token", name)
				require.Equal(t, `Bearer realm="token-orchestrator", error="insufficient_scope"`, header.Get("WWW-Authenticate"), name)
				requireProblem(t, do(t, method, url, "", bearer(clientToken)...), http.StatusForbidden, "forbidden")
			}
			status, _ = send(t, method, url, bearer(adminToken)...)
			require.NotContains(t, []int{401, 403}, status, "%s: the admin token may call everything", name)
		}
	}
}

// Every operation asks for the token its security in openapi.yaml names:
// the router's roles and the document never disagree.
func TestEveryRouteAsksForItsDocumentedToken(t *testing.T) {
	t.Parallel()
	requireDocumentedTokens(t, loadContract(t), newServer(t, testdb.New(t), options{auth: strictAuth}))
}

// What each token may do, and that a refused call changes nothing.
func TestClientAndAdminTokens(t *testing.T) {
	t.Parallel()
	s := newServer(t, testdb.New(t), options{auth: strictAuth})
	admin, client := bearer(adminToken), bearer(clientToken)

	requireProblem(t, do(t, "POST", s.url+"/keys?pool=a", ""), 401, "unauthorized")
	requireProblem(t, do(t, "POST", s.url+"/keys?pool=a", "", client...), 403, "forbidden")
	created := do(t, "POST", s.url+"/keys?pool=a", "", admin...)
	require.Equal(t, http.StatusCreated, created.status, created.raw)
	id := created.str("keyId")

	requireProblem(t, do(t, "GET", s.url+"/keys?pool=a", ""), 401, "unauthorized")
	claimed := do(t, "GET", s.url+"/keys?pool=a", "", client...)
	require.Equal(t, http.StatusOK, claimed.status, claimed.raw)
	token := `"` + claimed.str("leaseToken") + `"`
	require.Equal(t, http.StatusOK, do(t, "GET", s.url+"/keys/"+id, "", client...).status)
	require.Equal(t, http.StatusOK, do(t, "HEAD", s.url+"/keys/"+id, "", client...).status)
	require.Equal(t, http.StatusOK, do(t, "HEAD", s.url+"/keys?pool=a", "", client...).status)
	requireProblem(t, do(t, "PUT", s.url+"/keepalive/"+id, "", "If-Match", token), 401, "unauthorized")
	require.Equal(t, http.StatusOK, do(t, "PUT", s.url+"/keepalive/"+id, "", append(client, "If-Match", token)...).status)
	require.Equal(t, http.StatusOK, do(t, "PUT", s.url+"/keys/"+id+"/keepalive", "", append(client, "If-Match", token)...).status)
	requireProblem(t, do(t, "PUT", s.url+"/keys/"+id, "", "If-Match", token), 401, "unauthorized")
	require.Equal(t, true, do(t, "GET", s.url+"/keys/"+id, "", client...).body["isBlocked"], "a refused release changes nothing")
	require.Equal(t, http.StatusOK, do(t, "PUT", s.url+"/keys/"+id, "", append(client, "If-Match", token)...).status)

	requireProblem(t, do(t, "DELETE", s.url+"/keys/"+id, "", client...), 403, "forbidden")
	require.Equal(t, http.StatusOK, do(t, "GET", s.url+"/keys/"+id, "", client...).status, "a refused delete changes nothing")
	requireProblem(t, do(t, "GET", s.url+"/stats", "", client...), 403, "forbidden")
	requireProblem(t, do(t, "GET", s.url+"/reports/leases", "", client...), 403, "forbidden")
	status, _ := send(t, "GET", s.url+"/metrics", client...)
	require.Equal(t, http.StatusForbidden, status)
	status, _ = send(t, "GET", s.url+"/metrics", admin...)
	require.Equal(t, http.StatusOK, status)

	// The admin token may do everything a client may.
	again := do(t, "GET", s.url+"/keys?pool=a", "", admin...)
	require.Equal(t, http.StatusOK, again.status, again.raw)
	require.Equal(t, http.StatusOK, do(t, "PUT", s.url+"/keys/"+id, "", admin...).status)
	require.Equal(t, http.StatusOK, do(t, "DELETE", s.url+"/keys/"+id, "", admin...).status)

	// The scheme's name is case-insensitive; the token is not, and no other
	// scheme or form is taken.
	require.Equal(t, http.StatusCreated, do(t, "POST", s.url+"/keys?pool=b", "", "Authorization", "bearer "+adminToken).status)
	for _, header := range []string{
		"Bearer " + strings.ToUpper(adminToken), "Bearer " + adminToken[:len(adminToken)-1], "Bearer " + adminToken + "x",
		"Basic " + adminToken, adminToken, "Bearer", "Bearer ", "Token " + adminToken,
	} {
		requireProblem(t, do(t, "GET", s.url+"/stats", "", "Authorization", header), 401, "unauthorized")
	}
	requireProblem(t, do(t, "GET", s.url+"/stats?access_token="+adminToken, ""), 401, "unauthorized")

	// Unknown routes and wrong methods answer as they do without tokens.
	requireProblem(t, do(t, "GET", s.url+"/nope", ""), 404, "route_not_found")
	requireProblem(t, do(t, "PATCH", s.url+"/keys", ""), 405, "method_not_allowed")
}

// With only the admin token set, it is the one token for every role.
func TestAdminTokenAlone(t *testing.T) {
	t.Parallel()
	s := newServer(t, testdb.New(t), options{auth: api.Auth{AdminToken: adminToken}})
	requireProblem(t, do(t, "GET", s.url+"/keys", ""), 401, "unauthorized")
	requireProblem(t, do(t, "GET", s.url+"/keys", "", bearer(clientToken)...), 401, "unauthorized")
	requireProblem(t, do(t, "GET", s.url+"/keys", "", bearer("")...), 401, "unauthorized")
	requireProblem(t, do(t, "GET", s.url+"/keys", "", bearer(adminToken)...), 404, "unknown_pool")
}

// Health and readiness are public by default, metrics protected; each is
// a switch.
func TestHealthAndMetricsSwitches(t *testing.T) {
	t.Parallel()
	dbURL := testdb.New(t)
	for _, tc := range []struct {
		name                        string
		auth                        api.Auth
		healthStatus, metricsStatus int
	}{
		{"defaults", api.Auth{AdminToken: adminToken, ClientToken: clientToken, PublicHealth: true}, 200, 401},
		{"all public", api.Auth{AdminToken: adminToken, ClientToken: clientToken, PublicHealth: true, PublicMetrics: true}, 200, 200},
		{"none public", strictAuth, 401, 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, dbURL, options{auth: tc.auth})
			for _, path := range []string{"/healthz", "/readyz"} {
				status, _ := send(t, "GET", s.url+path)
				require.Equal(t, tc.healthStatus, status, path)
				status, _ = send(t, "HEAD", s.url+path)
				require.Equal(t, tc.healthStatus, status, path)
				status, _ = send(t, "GET", s.url+path, bearer(clientToken)...)
				require.Equal(t, 200, status, path)
			}
			status, _ := send(t, "GET", s.url+"/metrics")
			require.Equal(t, tc.metricsStatus, status)
			status, _ = send(t, "GET", s.url+"/metrics", bearer(adminToken)...)
			require.Equal(t, 200, status)
			for _, path := range []string{"/openapi.yaml", "/docs"} {
				status, _ := send(t, "GET", s.url+path)
				require.Equal(t, 200, status, path)
			}
			requireProblem(t, do(t, "GET", s.url+"/keys", ""), 401, "unauthorized")
		})
	}
}

// syncBuffer collects logs written from the server's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Tokens, right or wrong, never reach the logs, even at debug level.
func TestTokensAreNeverLogged(t *testing.T) {
	t.Parallel()
	logs := &syncBuffer{}
	s := newServer(t, testdb.New(t), options{auth: strictAuth, logs: logs})
	const wrong = "wrong-token-fedcba9876543210"
	do(t, "POST", s.url+"/keys", "", bearer(adminToken)...)
	do(t, "GET", s.url+"/keys", "", bearer(clientToken)...)
	do(t, "GET", s.url+"/keys", "", bearer(wrong)...)
	do(t, "DELETE", s.url+"/keys/"+unknownID, "", bearer(clientToken)...)
	do(t, "GET", s.url+"/nope", "", bearer(adminToken)...)
	do(t, "GET", s.url+"/keys?wait=nonsense", "", bearer(adminToken)...)

	text := logs.String()
	require.Contains(t, text, "status=401", "the requests were logged")
	require.Contains(t, text, "status=403")
	for _, token := range []string{adminToken, clientToken, wrong} {
		require.NotContains(t, text, token)
	}
	require.NotContains(t, strings.ToLower(text), "authorization")
}

// The contract's security schemes are the two tokens.
func TestOpenAPIDocumentsBothTokens(t *testing.T) {
	t.Parallel()
	c := loadContract(t)
	for _, name := range []string{"adminToken", "clientToken"} {
		scheme := c.doc.Components.SecuritySchemes[name]
		require.NotNil(t, scheme, name)
		require.Equal(t, "http", scheme.Value.Type)
		require.Equal(t, "bearer", scheme.Value.Scheme)
	}
	require.Contains(t, c.doc.Security, openapi3.SecurityRequirement{}, "tokens are optional: a server without them asks for none")
}
