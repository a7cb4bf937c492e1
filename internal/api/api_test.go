package api_test

import (
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }

var timePattern = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`)

func requireTime(t *testing.T, value any) {
	t.Helper()
	s, ok := value.(string)
	require.True(t, ok, "a time is a string, got %v", value)
	require.Regexp(t, timePattern, s)
}

func TestCreateKeys(t *testing.T) {
	t.Parallel()
	s := newServer(t, testdb.New(t), options{})

	one := do(t, "POST", s.url+"/keys", "")
	require.Equal(t, http.StatusCreated, one.status, one.raw)
	id := one.str("keyId")
	require.Regexp(t, `^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`, id)
	require.Equal(t, "/keys/"+id, one.header.Get("Location"))
	require.Equal(t, "default", one.body["pool"])
	require.Equal(t, false, one.body["isBlocked"])
	require.Nil(t, one.body["blockedAt"])
	require.Nil(t, one.body["leaseExpiresAt"])
	require.Nil(t, one.body["lastKeepAliveAt"])
	require.EqualValues(t, 0, one.body["timesAssigned"])
	require.NotContains(t, one.body, "leaseToken")
	requireTime(t, one.body["createdAt"])
	requireTime(t, one.body["expiresAt"])

	batch := do(t, "POST", s.url+"/keys?pool=batch", `{"count": 3}`)
	require.Equal(t, http.StatusCreated, batch.status, batch.raw)
	keys := batch.body["keys"].([]any)
	require.Len(t, keys, 3)
	for _, k := range keys {
		require.Equal(t, "batch", k.(map[string]any)["pool"])
	}
	inBody := do(t, "POST", s.url+"/keys", `{"count": 1, "pool": "body-pool"}`)
	require.Equal(t, http.StatusCreated, inBody.status, inBody.raw)
	require.Equal(t, "body-pool", inBody.body["keys"].([]any)[0].(map[string]any)["pool"])
	require.Equal(t, http.StatusOK, do(t, "GET", s.url+"/keys?pool=body-pool", "").status)

	max := do(t, "POST", s.url+"/keys?pool=big", `{"count": 10000}`)
	require.Equal(t, http.StatusCreated, max.status)
	require.Len(t, max.body["keys"], 10000)
}

func TestCreateKeysRefusesBadInput(t *testing.T) {
	t.Parallel()
	s := newServer(t, testdb.New(t), options{})
	for _, tc := range []struct {
		name, query, body string
		headers           []string
		status            int
		code              string
	}{
		{"count zero", "", `{"count": 0}`, nil, 400, "invalid_body"},
		{"count negative", "", `{"count": -4}`, nil, 400, "invalid_body"},
		{"count too large", "", `{"count": 10001}`, nil, 400, "invalid_body"},
		{"count fraction", "", `{"count": 2.5}`, nil, 400, "invalid_body"},
		{"count string", "", `{"count": "3"}`, nil, 400, "invalid_body"},
		{"malformed JSON", "", `{"count": `, nil, 400, "invalid_body"},
		{"not an object", "", `[1, 2]`, nil, 400, "invalid_body"},
		{"unknown field", "", `{"cnt": 2}`, nil, 400, "invalid_body"},
		{"two objects", "", `{"count": 1} {"count": 2}`, nil, 400, "invalid_body"},
		{"oversized", "", `{"pool": "` + strings.Repeat("a", 100<<10) + `"}`, nil, 413, "body_too_large"},
		{"not JSON", "", `count=2`, []string{"Content-Type", "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"},
		{"bad pool", "?pool=no%20spaces", "", nil, 400, "invalid_parameter"},
		{"empty pool", "?pool=", "", nil, 400, "invalid_parameter"},
		{"long pool", "?pool=" + strings.Repeat("p", 65), "", nil, 400, "invalid_parameter"},
		{"pools disagree", "?pool=a", `{"pool": "b"}`, nil, 400, "invalid_parameter"},
		{"secret too long", "", `{"keys": [{"secret": "` + strings.Repeat("s", 4097) + `"}]}`, nil, 400, "invalid_body"},
		{"empty secret", "", `{"keys": [{"secret": ""}]}`, nil, 400, "invalid_body"},
		{"bad label", "", `{"keys": [{"labels": {"tier": "has space"}}]}`, nil, 400, "invalid_body"},
		{"count and keys", "", `{"count": 1, "keys": [{}]}`, nil, 400, "invalid_body"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, "POST", s.url+"/keys"+tc.query, tc.body, tc.headers...)
			requireProblem(t, r, tc.status, tc.code)
		})
	}
	// None of that created a key.
	counts, err := s.store.CountPools(t.Context())
	require.NoError(t, err)
	require.Empty(t, counts)
}

func TestClaimKey(t *testing.T) {
	t.Parallel()
	s := newServer(t, testdb.New(t), options{leaseTTL: time.Minute})
	created := do(t, "POST", s.url+"/keys?pool=p", "")

	got := do(t, "GET", s.url+"/keys?pool=p", "")
	require.Equal(t, http.StatusOK, got.status, got.raw)
	require.Equal(t, created.str("keyId"), got.str("keyId"))
	require.Equal(t, true, got.body["isBlocked"])
	require.Regexp(t, `^\d+$`, got.str("leaseToken"))
	require.Equal(t, `"`+got.str("leaseToken")+`"`, got.header.Get("ETag"))
	requireTime(t, got.body["blockedAt"])
	requireTime(t, got.body["leaseExpiresAt"])
	require.EqualValues(t, 1, got.body["timesAssigned"])

	requireProblem(t, do(t, "GET", s.url+"/keys?pool=p", ""), 404, "no_free_key")
	requireProblem(t, do(t, "GET", s.url+"/keys", ""), 404, "unknown_pool")

	// The token is for the holder only.
	info := do(t, "GET", s.url+"/keys/"+got.str("keyId"), "")
	require.Equal(t, http.StatusOK, info.status)
	require.NotContains(t, info.body, "leaseToken")
	require.Equal(t, true, info.body["isBlocked"])
	require.Equal(t, got.body["leaseExpiresAt"], info.body["leaseExpiresAt"])

	for _, bad := range []string{"wait=61s", "wait=abc", "wait=-1s", "pool=b%21d"} {
		requireProblem(t, do(t, "GET", s.url+"/keys?"+bad, ""), 400, "invalid_parameter")
	}
}

func TestClaimKeyWaitsForAKey(t *testing.T) {
	t.Parallel()
	s := newServer(t, testdb.New(t), options{})
	do(t, "POST", s.url+"/keys?pool=w", "")
	held := do(t, "GET", s.url+"/keys?pool=w", "")
	require.Equal(t, http.StatusOK, held.status)

	requireProblem(t, do(t, "GET", s.url+"/keys?pool=w&wait=150ms", ""), 404, "no_free_key")

	released := make(chan struct{})
	go func() {
		defer close(released)
		time.Sleep(200 * time.Millisecond)
		req, _ := http.NewRequest(http.MethodPut, s.url+"/keys/"+held.str("keyId"), nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
	}()
	waited := do(t, "GET", s.url+"/keys?pool=w&wait=10", "")
	require.Equal(t, http.StatusOK, waited.status, waited.raw)
	require.Equal(t, held.str("keyId"), waited.str("keyId"))
	require.NotEqual(t, held.str("leaseToken"), waited.str("leaseToken"))
	<-released
}

// HEAD /keys must never claim a key, as a router that answers HEAD with the
// GET handler would.
func TestHeadKeysNeverClaims(t *testing.T) {
	t.Parallel()
	s := newServer(t, testdb.New(t), options{})
	created := do(t, "POST", s.url+"/keys?pool=h", `{"count": 2}`)
	require.Equal(t, http.StatusCreated, created.status)

	for range 5 {
		r := do(t, "HEAD", s.url+"/keys?pool=h", "")
		require.Equal(t, http.StatusOK, r.status)
		require.Equal(t, "h", r.header.Get("X-Pool"))
		require.Equal(t, "2", r.header.Get("X-Pool-Keys"))
		require.Equal(t, "2", r.header.Get("X-Pool-Free"))
		require.Equal(t, "0", r.header.Get("X-Pool-Blocked"))
		require.Equal(t, "true", r.header.Get("X-Pool-Available"))
	}
	for _, k := range created.body["keys"].([]any) {
		info := do(t, "GET", s.url+"/keys/"+k.(map[string]any)["keyId"].(string), "")
		require.Equal(t, false, info.body["isBlocked"])
		require.EqualValues(t, 0, info.body["timesAssigned"])
	}
	do(t, "GET", s.url+"/keys?pool=h", "")
	do(t, "GET", s.url+"/keys?pool=h", "")
	r := do(t, "HEAD", s.url+"/keys?pool=h", "")
	require.Equal(t, "0", r.header.Get("X-Pool-Free"))
	require.Equal(t, "2", r.header.Get("X-Pool-Blocked"))
	require.Equal(t, "false", r.header.Get("X-Pool-Available"))
	empty := do(t, "HEAD", s.url+"/keys?pool=nothing", "")
	require.Equal(t, http.StatusOK, empty.status)
	require.Equal(t, "0", empty.header.Get("X-Pool-Keys"))
}

func TestKeyInfo(t *testing.T) {
	t.Parallel()
	s := newServer(t, testdb.New(t), options{})
	created := do(t, "POST", s.url+"/keys", "")
	id := created.str("keyId")

	info := do(t, "GET", s.url+"/keys/"+id, "")
	require.Equal(t, http.StatusOK, info.status)
	for _, field := range []string{"keyId", "pool", "isBlocked", "blockedAt", "createdAt", "expiresAt", "leaseExpiresAt", "lastKeepAliveAt", "timesAssigned"} {
		require.Contains(t, info.body, field)
	}
	head := do(t, "HEAD", s.url+"/keys/"+id, "")
	require.Equal(t, http.StatusOK, head.status)
	require.Equal(t, "free", head.header.Get("X-Key-Status"))
	require.Equal(t, info.str("createdAt"), head.header.Get("X-Key-Created-At"))
	require.Equal(t, info.str("expiresAt"), head.header.Get("X-Key-Expires-At"))
	require.Empty(t, head.header.Get("X-Key-Blocked-At"))

	got := do(t, "GET", s.url+"/keys", "")
	head = do(t, "HEAD", s.url+"/keys/"+id, "")
	require.Equal(t, "blocked", head.header.Get("X-Key-Status"))
	require.Equal(t, got.str("blockedAt"), head.header.Get("X-Key-Blocked-At"))
	require.Equal(t, got.str("leaseExpiresAt"), head.header.Get("X-Key-Lease-Expires-At"))
	require.Equal(t, "1", head.header.Get("X-Key-Times-Assigned"))

	// A malformed id is simply an unknown key.
	for _, bad := range []string{"00000000-0000-4000-8000-000000000000", "not-a-uuid", "123", "{" + id + "}",
		strings.ToUpper(id[:35]) + "x", "urn:uuid:" + id, strings.Repeat("a", 300)} {
		requireProblem(t, do(t, "GET", s.url+"/keys/"+bad, ""), 404, "key_not_found")
		requireProblem(t, do(t, "HEAD", s.url+"/keys/"+bad, ""), 404, "")
		requireProblem(t, do(t, "PUT", s.url+"/keys/"+bad, ""), 404, "key_not_found")
		requireProblem(t, do(t, "DELETE", s.url+"/keys/"+bad, ""), 404, "key_not_found")
		requireProblem(t, do(t, "PUT", s.url+"/keepalive/"+bad, ""), 404, "key_not_found")
	}
}

func TestReleaseAndKeepAliveWithLeaseTokens(t *testing.T) {
	t.Parallel()
	s := newServer(t, testdb.New(t), options{leaseTTL: time.Minute})
	do(t, "POST", s.url+"/keys", "")
	got := do(t, "GET", s.url+"/keys", "")
	id, token := got.str("keyId"), got.str("leaseToken")

	// Both keep-alive routes, with the token in If-Match or in the query.
	for _, path := range []string{"/keepalive/" + id, "/keys/" + id + "/keepalive"} {
		kept := do(t, "PUT", s.url+path, "", "If-Match", `"`+token+`"`)
		require.Equal(t, http.StatusOK, kept.status, kept.raw)
		require.Equal(t, true, kept.body["isBlocked"])
		requireTime(t, kept.body["lastKeepAliveAt"])
		kept = do(t, "PUT", s.url+path+"?lease="+token, "")
		require.Equal(t, http.StatusOK, kept.status, kept.raw)
	}

	before := do(t, "GET", s.url+"/keys/"+id, "")
	for _, stale := range [][]string{{"If-Match", `"999999"`}, {"If-Match", `"garbage"`}, {"If-Match", "12"}} {
		requireProblem(t, do(t, "PUT", s.url+"/keepalive/"+id, "", stale...), 409, "lease_mismatch")
		requireProblem(t, do(t, "PUT", s.url+"/keys/"+id, "", stale...), 409, "lease_mismatch")
	}
	requireProblem(t, do(t, "PUT", s.url+"/keys/"+id+"?lease=999999", ""), 409, "lease_mismatch")
	requireProblem(t, do(t, "PUT", s.url+"/keys/"+id+"?lease=1", "", "If-Match", `"2"`), 400, "invalid_parameter")
	after := do(t, "GET", s.url+"/keys/"+id, "")
	require.Equal(t, before.body, after.body, "refused calls change nothing")

	released := do(t, "PUT", s.url+"/keys/"+id, "", "If-Match", `"`+token+`"`)
	require.Equal(t, http.StatusOK, released.status, released.raw)
	require.Equal(t, false, released.body["isBlocked"])
	require.Nil(t, released.body["leaseExpiresAt"])
	// Idempotent on a free key.
	again := do(t, "PUT", s.url+"/keys/"+id, "")
	require.Equal(t, http.StatusOK, again.status)
	require.Equal(t, false, again.body["isBlocked"])
	// The ended lease cannot be kept alive.
	requireProblem(t, do(t, "PUT", s.url+"/keepalive/"+id, "", "If-Match", `"`+token+`"`), 409, "lease_mismatch")
	// Without a token, a keep-alive acts on the key as it is.
	require.Equal(t, http.StatusOK, do(t, "PUT", s.url+"/keepalive/"+id, "").status)
}

func TestDeleteKey(t *testing.T) {
	t.Parallel()
	s := newServer(t, testdb.New(t), options{})
	id := do(t, "POST", s.url+"/keys", "").str("keyId")
	deleted := do(t, "DELETE", s.url+"/keys/"+id, "")
	require.Equal(t, http.StatusOK, deleted.status, deleted.raw)
	require.Equal(t, id, deleted.str("keyId"))
	require.Equal(t, true, deleted.body["deleted"])
	requireProblem(t, do(t, "DELETE", s.url+"/keys/"+id, ""), 404, "key_not_found")
	requireProblem(t, do(t, "GET", s.url+"/keys/"+id, ""), 404, "key_not_found")
	requireProblem(t, do(t, "GET", s.url+"/keys", ""), 404, "unknown_pool")
}

func TestUnknownRoutesAndMethods(t *testing.T) {
	t.Parallel()
	s := newServer(t, testdb.New(t), options{})
	requireProblem(t, do(t, "GET", s.url+"/nope", ""), 404, "route_not_found")
	requireProblem(t, do(t, "GET", s.url+"/keys/a/b/c", ""), 404, "route_not_found")
	// A method no route knows, on a path no route knows: still an unknown
	// route, not a 405 that could list no method.
	requireProblem(t, do(t, "FOO", s.url+"/nope", ""), 404, "route_not_found")
	for _, tc := range []struct{ method, path, allow string }{
		{"PATCH", "/keys", "GET, HEAD, POST"},
		{"DELETE", "/keys", "GET, HEAD, POST"},
		{"POST", "/keys/0b7a0e55-8f7e-4b8e-9a52-8d1b6c1f0d3e", "GET, HEAD, PUT, DELETE"},
		{"GET", "/keepalive/0b7a0e55-8f7e-4b8e-9a52-8d1b6c1f0d3e", "PUT"},
		{"POST", "/keys/0b7a0e55-8f7e-4b8e-9a52-8d1b6c1f0d3e/keepalive", "PUT"},
		{"POST", "/healthz", "GET, HEAD"},
		{"FOO", "/keys", "GET, HEAD, POST"},
	} {
		r := do(t, tc.method, s.url+tc.path, "")
		requireProblem(t, r, 405, "method_not_allowed")
		require.Equal(t, tc.allow, r.header.Get("Allow"), "%s %s", tc.method, tc.path)
	}
}

func TestHealthReadinessAndMetrics(t *testing.T) {
	t.Parallel()
	s := newServer(t, testdb.New(t), options{})
	require.Equal(t, "ok", do(t, "GET", s.url+"/healthz", "").str("status"))
	require.Equal(t, "ready", do(t, "GET", s.url+"/readyz", "").str("status"))

	do(t, "POST", s.url+"/keys?pool=m", `{"count": 3}`)
	do(t, "GET", s.url+"/keys?pool=m", "")
	resp, err := http.Get(s.url + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	raw := new(strings.Builder)
	_, err = io.Copy(raw, resp.Body)
	require.NoError(t, err)
	text := raw.String()
	require.Contains(t, text, `tokenorchestrator_pool_keys{pool="m",state="blocked"} 1`)
	require.Contains(t, text, `tokenorchestrator_pool_keys{pool="m",state="free"} 2`)
	require.Contains(t, text, `tokenorchestrator_http_requests_total{code="200",method="GET",route="/keys"} 1`)
	require.Contains(t, text, `tokenorchestrator_http_request_duration_seconds_bucket{method="POST",route="/keys"`)
}

// An unreachable database answers 503 with Retry-After, promptly and with a
// JSON body; it never hangs.
func TestUnreachableDatabase(t *testing.T) {
	t.Parallel()
	// Nothing listens on port 1.
	s := newServer(t, "postgres://postgres@127.0.0.1:1/none?sslmode=disable", options{dbTimeout: 500 * time.Millisecond})
	for _, tc := range []struct{ method, path string }{
		{"POST", "/keys"}, {"GET", "/keys"}, {"GET", "/keys/0b7a0e55-8f7e-4b8e-9a52-8d1b6c1f0d3e"},
		{"PUT", "/keys/0b7a0e55-8f7e-4b8e-9a52-8d1b6c1f0d3e"}, {"DELETE", "/keys/0b7a0e55-8f7e-4b8e-9a52-8d1b6c1f0d3e"},
		{"PUT", "/keepalive/0b7a0e55-8f7e-4b8e-9a52-8d1b6c1f0d3e"}, {"HEAD", "/keys"},
	} {
		r := do(t, tc.method, s.url+tc.path, "")
		requireProblem(t, r, 503, "database_unavailable")
		require.Equal(t, "1", r.header.Get("Retry-After"), "%s %s", tc.method, tc.path)
	}
	requireProblem(t, do(t, "GET", s.url+"/readyz", ""), 503, "not_ready")
	require.Equal(t, http.StatusOK, do(t, "GET", s.url+"/healthz", "").status, "liveness does not depend on the database")
}

func TestCORS(t *testing.T) {
	t.Parallel()
	s := newServer(t, testdb.New(t), options{corsOrigins: []string{"https://app.example.com"}})
	preflight := do(t, "OPTIONS", s.url+"/keys", "",
		"Origin", "https://app.example.com", "Access-Control-Request-Method", "POST",
		"Access-Control-Request-Headers", "content-type")
	require.Equal(t, http.StatusOK, preflight.status)
	require.Equal(t, "https://app.example.com", preflight.header.Get("Access-Control-Allow-Origin"))
	require.Contains(t, preflight.header.Get("Access-Control-Allow-Methods"), "POST")
	require.Contains(t, strings.ToLower(preflight.header.Get("Access-Control-Allow-Headers")), "content-type")

	refused := do(t, "OPTIONS", s.url+"/keys", "", "Origin", "https://evil.example.com", "Access-Control-Request-Method", "POST")
	requireProblem(t, refused, 403, "origin_not_allowed")
	require.Empty(t, refused.header.Get("Access-Control-Allow-Origin"))

	created := do(t, "POST", s.url+"/keys", `{}`, "Origin", "https://app.example.com")
	require.Equal(t, http.StatusCreated, created.status)
	require.Equal(t, "https://app.example.com", created.header.Get("Access-Control-Allow-Origin"))
	require.Contains(t, created.header.Get("Access-Control-Expose-Headers"), "Location")
	other := do(t, "GET", s.url+"/healthz", "", "Origin", "https://evil.example.com")
	require.Empty(t, other.header.Get("Access-Control-Allow-Origin"))
}
