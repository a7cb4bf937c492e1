package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/go-chi/chi/v5"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/api"
	"github.com/tokenorchestrator/tokenorchestrator/internal/metrics"
	"github.com/tokenorchestrator/tokenorchestrator/internal/reports"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

// The document, loaded and checked once per test binary.
var contract = sync.OnceValues(func() (*contractDoc, error) {
	doc, err := openapi3.NewLoader().LoadFromData(api.OpenAPIDocument)
	if err != nil {
		return nil, fmt.Errorf("load openapi.yaml: %w", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("openapi.yaml is not a valid OpenAPI document: %w", err)
	}
	router, err := legacy.NewRouter(doc)
	if err != nil {
		return nil, err
	}
	return &contractDoc{doc: doc, router: router}, nil
})

type contractDoc struct {
	doc    *openapi3.T
	router routers.Router
}

func loadContract(t testing.TB) *contractDoc {
	t.Helper()
	c, err := contract()
	require.NoError(t, err)
	return c
}

// answer is an operation of the document and a status it answered with.
type answer struct {
	operation string
	status    int
}

func (a answer) String() string { return fmt.Sprintf("%s %d", a.operation, a.status) }

// answersSeen collects the answers a server gave.
type answersSeen struct {
	mu  sync.Mutex
	set map[answer]bool
}

func (s *answersSeen) add(a answer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.set == nil {
		s.set = map[answer]bool{}
	}
	s.set[a] = true
}

// checkContract serves through next and checks every answer against the
// document: its status is one the operation documents, its headers and body
// match what the document says of that status, and a request the server
// accepted is one the document allows. Every test that uses newServer is
// thereby a test of the document.
func checkContract(t *testing.T, next http.Handler, seen *answersSeen) http.Handler {
	c := loadContract(t)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reqBody, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("read the request body: %v", err)
		}
		r.Body = io.NopCloser(bytes.NewReader(reqBody))
		rec := httptest.NewRecorder()
		next.ServeHTTP(rec, r)
		resp := rec.Result()
		if r.Context().Err() != nil {
			return // the client left: nothing was answered
		}

		// Checked before the client gets the answer, so that a test sees
		// every answer it received already recorded.
		r.Body = io.NopCloser(bytes.NewReader(reqBody))
		operation, err := c.check(r, resp.StatusCode, resp.Header, rec.Body.Bytes())
		if err != nil {
			t.Errorf("%s %s answered %d, which does not match openapi.yaml: %v", r.Method, r.URL, resp.StatusCode, err)
		}
		if seen != nil {
			seen.add(answer{operation, resp.StatusCode})
		}

		for name, values := range resp.Header {
			w.Header()[name] = values
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(rec.Body.Bytes())
	})
}

// check validates one exchange and names the operation it belongs to.
func (c *contractDoc) check(r *http.Request, status int, header http.Header, body []byte) (string, error) {
	return c.checkExchange(r, status, header, body, true)
}

// checkExchange is check; when checkRequest is false, a request the server
// accepted is not held to the document, only the answer is (the server may
// be more lenient than the document, as with random requests).
func (c *contractDoc) checkExchange(r *http.Request, status int, header http.Header, body []byte, checkRequest bool) (string, error) {
	ctx := context.Background()
	route, pathParams, err := c.router.FindRoute(r)
	for _, value := range pathParams {
		// The router matches /keys to /keys/{id} with an empty id; path
		// parameters are never empty, so that is no match.
		if value == "" {
			err = routers.ErrPathNotFound
		}
	}
	if err != nil {
		// No operation of the document: an unknown path, a method the path
		// does not take, or a CORS preflight. Errors still answer with
		// problem details, and 405 says what is allowed.
		if status < 400 {
			if r.Method == http.MethodOptions {
				return "preflight", nil
			}
			return "", fmt.Errorf("no operation in the document, yet answered %d", status)
		}
		if status == http.StatusMethodNotAllowed && header.Get("Allow") == "" {
			return "", fmt.Errorf("405 without Allow")
		}
		return "", c.checkProblem(header, body)
	}
	// Which token a route asks for is checked by TestEveryRouteAsksForItsDocumentedToken.
	options := &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true, AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}
	input := &openapi3filter.RequestValidationInput{Request: r, PathParams: pathParams, Route: route, Options: options}
	if status < 300 && checkRequest {
		if err := openapi3filter.ValidateRequest(ctx, input); err != nil {
			return route.Operation.OperationID, fmt.Errorf("the server accepted a request the document refuses: %w", err)
		}
	}
	if r.Method == http.MethodHead {
		// The validator skips answers to HEAD altogether; as a GET it checks
		// the status and headers, and no body is documented to check. (The
		// handlers may write one: net/http drops it, and do() checks that
		// none arrives.)
		asGet := r.Clone(ctx)
		asGet.Method = http.MethodGet
		input = &openapi3filter.RequestValidationInput{Request: asGet, PathParams: pathParams, Route: route, Options: options}
	}
	resp := &openapi3filter.ResponseValidationInput{RequestValidationInput: input, Status: status, Header: header, Options: options}
	resp.SetBodyBytes(body)
	return route.Operation.OperationID, openapi3filter.ValidateResponse(ctx, resp)
}

func (c *contractDoc) checkProblem(header http.Header, body []byte) error {
	if ct := header.Get("Content-Type"); ct != "application/problem+json" {
		return fmt.Errorf("Content-Type is %q, not application/problem+json", ct)
	}
	var value any
	if err := json.Unmarshal(body, &value); err != nil {
		return fmt.Errorf("the body is not JSON: %w", err)
	}
	return c.doc.Components.Schemas["Problem"].Value.VisitJSON(value)
}

// Every route of the router is in the document, and the document has no
// operation that the router does not serve.
func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	t.Parallel()
	c := loadContract(t)
	a := api.New(api.Config{Metrics: metrics.New(nil, slog.New(slog.DiscardHandler))})
	routed := map[string]bool{}
	err := chi.Walk(a.Routes(), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		routed[method+" "+route] = true
		item := c.doc.Paths.Value(route)
		require.NotNil(t, item, "route %s is not in openapi.yaml", route)
		require.NotNil(t, item.GetOperation(method), "%s %s is not in openapi.yaml", method, route)
		return nil
	})
	require.NoError(t, err)
	for _, path := range c.doc.Paths.Keys() {
		for method := range c.doc.Paths.Value(path).Operations() {
			require.True(t, routed[method+" "+path], "openapi.yaml documents %s %s, which the router does not serve", method, path)
		}
	}
	require.Len(t, routed, 35)
}

// The document lists exactly the error codes of the API's error table.
func TestOpenAPIDocumentsEveryErrorCode(t *testing.T) {
	t.Parallel()
	c := loadContract(t)
	var documented []string
	for _, code := range c.doc.Components.Schemas["Problem"].Value.Properties["code"].Value.Enum {
		documented = append(documented, code.(string))
	}
	require.ElementsMatch(t, api.ErrorCodes(), documented)
}

// Each report is documented with the parameters it takes and rows whose
// members are the catalogue's columns, in order.
func TestOpenAPIDocumentsEveryReport(t *testing.T) {
	t.Parallel()
	c := loadContract(t)
	var names []string
	for _, name := range c.doc.Components.Schemas["ReportName"].Value.Enum {
		names = append(names, name.(string))
	}
	require.Equal(t, reports.Names(), names)
	for _, rep := range reports.All {
		item := c.doc.Paths.Value("/reports/" + rep.Name)
		require.NotNil(t, item, rep.Name)
		op := item.Get
		require.NotNil(t, op, rep.Name)

		var params []string
		for _, p := range op.Parameters {
			params = append(params, p.Value.In+" "+p.Value.Name)
		}
		want := []string{"query from", "query to", "query pool"}
		if rep.PerLease {
			want = append(want, "query limit")
		}
		require.Equal(t, want, params, rep.Name)

		doc := op.Responses.Status(http.StatusOK).Value.Content.Get("application/json").Schema.Value
		require.Equal(t, []any{rep.Name}, doc.Properties["report"].Value.Enum, rep.Name)
		require.Equal(t, rep.PerLease, doc.Properties["limit"] != nil, rep.Name)
		require.Equal(t, rep.PerLease, doc.Properties["truncated"] != nil, rep.Name)
		row := doc.Properties["rows"].Value.Items.Value
		var columns []string
		for _, col := range rep.Columns {
			columns = append(columns, col.JSON)
		}
		require.Equal(t, columns, row.Required, rep.Name)
		require.Len(t, row.Properties, len(columns), rep.Name)
	}
}

// A broad set of requests gives every answer the document promises, each
// checked against it as it passes.
func TestAnswersMatchTheOpenAPIDocument(t *testing.T) {
	t.Parallel()
	c := loadContract(t)
	seen := &answersSeen{}
	s := newServer(t, testdb.New(t), options{contractSeen: seen, secrets: testKeyring(t)})
	requireDocumentedTokens(t, c, newServer(t, testdb.New(t), options{contractSeen: seen, auth: strictAuth}))
	down := newServer(t, "postgres://postgres@127.0.0.1:1/none?sslmode=disable", options{dbTimeout: 300 * time.Millisecond, contractSeen: seen})

	const unknownID = "0b7a0e55-8f7e-4b8e-9a52-8d1b6c1f0d3e"
	id := do(t, "POST", s.url+"/keys?pool=c", "").str("keyId")
	do(t, "POST", s.url+"/keys", `{"count": 2, "pool": "c"}`)
	do(t, "POST", s.url+"/keys", `{"count": 0}`)
	do(t, "POST", s.url+"/keys", `{"pool": "`+strings.Repeat("p", 70<<10)+`"}`)
	do(t, "POST", s.url+"/keys", `count=1`, "Content-Type", "text/plain")
	do(t, "HEAD", s.url+"/keys?pool=c", "")
	do(t, "HEAD", s.url+"/keys?pool=", "")
	held := do(t, "GET", s.url+"/keys?pool=c&wait=1s", "")
	token := held.str("leaseToken")
	do(t, "GET", s.url+"/keys?pool=empty", "")
	do(t, "GET", s.url+"/keys?wait=forever", "")
	// An idempotent claim, its repeat, a repeat once its lease has ended, a
	// malformed idempotency key.
	idempotent := do(t, "GET", s.url+"/keys?pool=c", "", "Idempotency-Key", "contract")
	do(t, "GET", s.url+"/keys?pool=c&wait=1s", "", "Idempotency-Key", "contract")
	do(t, "PUT", s.url+"/keys/"+idempotent.str("keyId"), "", "If-Match", `"`+idempotent.str("leaseToken")+`"`)
	do(t, "GET", s.url+"/keys?pool=c", "", "Idempotency-Key", "contract")
	do(t, "GET", s.url+"/keys?pool=c", "", "Idempotency-Key", "caf\u00e9")
	do(t, "GET", s.url+"/keys/"+held.str("keyId"), "")
	do(t, "HEAD", s.url+"/keys/"+held.str("keyId"), "")
	do(t, "HEAD", s.url+"/keys/"+id, "")
	do(t, "GET", s.url+"/keys/not-a-key", "")
	do(t, "HEAD", s.url+"/keys/"+unknownID, "")
	for _, path := range []string{"/keys/" + held.str("keyId") + "/keepalive", "/keepalive/" + held.str("keyId")} {
		do(t, "PUT", s.url+path, "", "If-Match", `"`+token+`"`)
		do(t, "PUT", s.url+path+"?lease="+token, "")
		do(t, "PUT", s.url+path, "", "If-Match", `"999999"`)
		do(t, "PUT", s.url+path+"?lease=", "")
		do(t, "PUT", strings.Replace(s.url+path, held.str("keyId"), unknownID, 1), "")
	}
	do(t, "PUT", s.url+"/keys/"+held.str("keyId"), "", "If-Match", `"999999"`)
	do(t, "PUT", s.url+"/keys/"+held.str("keyId")+"?lease=1", "", "If-Match", `"2"`)
	do(t, "PUT", s.url+"/keys/"+held.str("keyId"), "", "If-Match", `"`+token+`"`)
	do(t, "PUT", s.url+"/keys/"+unknownID, "")
	// Keys with secrets and labels: created, a duplicate refused, claimed by
	// label, read with and without the lease's token, released with a
	// cooldown (and with bad ones).
	do(t, "POST", s.url+"/keys", `{"pool": "s", "keys": [{"secret": "sk-contract", "labels": {"tier": "paid"}}, {"labels": {"tier": "free"}}]}`)
	do(t, "POST", s.url+"/keys", `{"pool": "s", "keys": [{"secret": "sk-contract"}]}`)
	do(t, "POST", s.url+"/keys", `{"pool": "s", "count": 1, "keys": [{}]}`)
	do(t, "GET", s.url+"/keys?pool=s&label=tier", "")
	paid := do(t, "GET", s.url+"/keys?pool=s&label=tier=paid", "")
	do(t, "GET", s.url+"/keys/"+paid.str("keyId")+"?lease="+paid.str("leaseToken"), "")
	do(t, "GET", s.url+"/keys/"+paid.str("keyId")+"?lease=999999", "")
	do(t, "GET", s.url+"/keys/"+paid.str("keyId")+"?lease=", "")
	do(t, "PUT", s.url+"/keys/"+paid.str("keyId")+"?cooldown=25h", "")
	do(t, "PUT", s.url+"/keys/"+paid.str("keyId"), `{"cooldown": "`+strings.Repeat("1", 70<<10)+`"}`)
	do(t, "PUT", s.url+"/keys/"+paid.str("keyId"), "cooldown=1s", "Content-Type", "text/plain")
	do(t, "PUT", s.url+"/keys/"+paid.str("keyId"), `{"cooldown": "30s"}`, "If-Match", `"`+paid.str("leaseToken")+`"`)
	do(t, "GET", s.url+"/keys/"+paid.str("keyId"), "")
	// Pools and policies: a policy that requires lease tokens, keys found
	// and deleted by name, a pool deleted with and without its keys.
	do(t, "PUT", s.url+"/pools/strict", `{"requireLeaseToken": true, "leaseTTL": "1m"}`)
	do(t, "PUT", s.url+"/pools/strict", `{"leaseTTL": "never"}`)
	do(t, "PUT", s.url+"/pools/strict", `{"leaseTTL": "`+strings.Repeat("1", 70<<10)+`"}`)
	do(t, "PUT", s.url+"/pools/strict", `leaseTTL=1m`, "Content-Type", "text/plain")
	do(t, "POST", s.url+"/keys", `{"pool": "strict", "keys": [{"secret": "sk-strict-0123456789", "name": "first"}]}`)
	strict := do(t, "GET", s.url+"/keys?pool=strict", "")
	for _, path := range []string{"/keys/" + strict.str("keyId") + "/keepalive", "/keepalive/" + strict.str("keyId"), "/keys/" + strict.str("keyId")} {
		do(t, "PUT", s.url+path, "")
	}
	do(t, "GET", s.url+"/pools/strict/keys/first", "")
	do(t, "GET", s.url+"/pools/strict/keys/first?lease=999999", "")
	do(t, "GET", s.url+"/pools/strict/keys/nobody", "")
	do(t, "GET", s.url+"/pools/bad!pool/keys/first", "")
	do(t, "GET", s.url+"/pools", "")
	do(t, "GET", s.url+"/pools/strict", "")
	do(t, "GET", s.url+"/pools/nowhere", "")
	do(t, "GET", s.url+"/pools/bad!pool", "")
	do(t, "DELETE", s.url+"/pools/strict", "")
	do(t, "DELETE", s.url+"/pools/strict?deleteKeys=maybe", "")
	do(t, "DELETE", s.url+"/pools/strict/keys/first", "")
	do(t, "DELETE", s.url+"/pools/strict/keys/first", "")
	do(t, "DELETE", s.url+"/pools/bad!pool/keys/first", "")
	do(t, "DELETE", s.url+"/pools/strict?deleteKeys=true", "")
	do(t, "DELETE", s.url+"/pools/strict", "")
	for _, r := range []struct{ method, path, body string }{
		{"GET", "/pools", ""}, {"GET", "/pools/strict", ""}, {"PUT", "/pools/strict", `{"maxWait": "1s"}`},
		{"DELETE", "/pools/strict", ""}, {"GET", "/pools/strict/keys/first", ""}, {"DELETE", "/pools/strict/keys/first", ""},
	} {
		do(t, r.method, down.url+r.path, r.body)
	}
	do(t, "DELETE", s.url+"/keys/"+id, "")
	do(t, "DELETE", s.url+"/keys/"+id, "")
	do(t, "GET", s.url+"/keys/a/b", "")
	do(t, "PATCH", s.url+"/keys", "")
	for _, url := range []string{s.url, down.url} {
		do(t, "GET", url+"/healthz", "")
		do(t, "HEAD", url+"/healthz", "")
		do(t, "GET", url+"/readyz", "")
		do(t, "HEAD", url+"/readyz", "")
	}
	do(t, "GET", s.url+"/stats", "")
	do(t, "GET", s.url+"/reports", "")
	for _, name := range reports.Names() {
		do(t, "GET", s.url+"/reports/"+name+"?pool=c", "")
		do(t, "GET", s.url+"/reports/"+name, "")
		do(t, "GET", s.url+"/reports/"+name+"?from=yesterday", "")
		do(t, "GET", s.url+"/reports/"+name+"?from=2020-01-01T00:00:00Z", "")
		do(t, "GET", down.url+"/reports/"+name, "")
	}
	do(t, "GET", down.url+"/stats", "")
	// A key of two seats held by two leases: its pool's utilisation is the
	// share of its seat-time held, not held seats per key (1.96 before).
	do(t, "PUT", s.url+"/pools/seated", `{"seats": 2}`)
	do(t, "POST", s.url+"/keys?pool=seated", "")
	do(t, "GET", s.url+"/keys?pool=seated", "")
	do(t, "GET", s.url+"/keys?pool=seated", "")
	time.Sleep(100 * time.Millisecond)
	seated := do(t, "GET", s.url+"/reports/utilisation?pool=seated", "")
	require.Equal(t, http.StatusOK, seated.status, seated.raw)
	seatedRows, _ := seated.body["rows"].([]any)
	require.Len(t, seatedRows, 1, seated.raw)
	row := seatedRows[0].(map[string]any)
	require.LessOrEqual(t, row["utilisation"], 1.0, seated.raw)
	require.InEpsilon(t, 2*row["keySeconds"].(float64), row["seatSeconds"], 1e-9, "two seats all along: %s", seated.raw)
	for _, path := range []string{"/metrics", "/openapi.yaml", "/docs"} {
		resp, err := http.Get(s.url + path)
		require.NoError(t, err)
		resp.Body.Close()
	}
	// Counts and reports: answers, bad ranges, an unreachable database.
	do(t, "GET", s.url+"/stats", "")
	do(t, "GET", down.url+"/stats", "")
	do(t, "GET", s.url+"/reports", "")
	for _, report := range []string{"leases", "lease-activity", "lease-durations", "key-activity", "utilisation", "key-cooldowns"} {
		do(t, "GET", s.url+"/reports/"+report+"?pool=c", "")
		do(t, "GET", s.url+"/reports/"+report+"?from=2026-11-02T00:00:00Z&to=2026-11-01T00:00:00Z", "")
		do(t, "GET", down.url+"/reports/"+report, "")
	}
	// The dashboard: its page and files, and what it reads.
	for _, path := range []string{"/", "/ui/app.js", "/ui/style.css", "/ui/favicon.svg", "/ui/nope.js"} {
		resp, err := http.Get(s.url + path)
		require.NoError(t, err)
		resp.Body.Close()
	}
	for _, path := range []string{"/pools/c/keys?limit=0", "/activity?minutes=0", "/activity/lease-durations?minutes=1441"} {
		do(t, "GET", s.url+path, "")
		do(t, "GET", down.url+strings.Split(path, "?")[0], "")
	}
	do(t, "GET", s.url+"/pools/c/keys?limit=1", "")
	do(t, "GET", s.url+"/activity?pool=c&minutes=5", "")
	do(t, "GET", s.url+"/activity/lease-durations?pool=c", "")
	for _, r := range []struct{ method, path string }{
		{"POST", "/keys"}, {"GET", "/keys"}, {"HEAD", "/keys"}, {"GET", "/keys/" + unknownID},
		{"HEAD", "/keys/" + unknownID}, {"DELETE", "/keys/" + unknownID}, {"PUT", "/keys/" + unknownID},
		{"PUT", "/keys/" + unknownID + "/keepalive"}, {"PUT", "/keepalive/" + unknownID},
	} {
		do(t, r.method, down.url+r.path, "")
	}
	// A query parameter that the operation does not take, on every route;
	// an empty pool name in a body, a claim on a pool without keys.
	for _, path := range c.doc.Paths.Keys() {
		for method := range c.doc.Paths.Value(path).Operations() {
			do(t, method, s.url+routeURL(path)+"?bogus=1", "")
		}
	}
	do(t, "POST", s.url+"/keys", `{"count": 1, "pool": ""}`)
	do(t, "GET", s.url+"/keys?pool=nowhere&wait=30s", "")

	var documented []answer
	for _, path := range c.doc.Paths.Keys() {
		for _, op := range c.doc.Paths.Value(path).Operations() {
			for status := range op.Responses.Map() {
				var code int
				_, err := fmt.Sscan(status, &code)
				require.NoError(t, err)
				documented = append(documented, answer{op.OperationID, code})
			}
		}
	}
	seen.mu.Lock()
	defer seen.mu.Unlock()
	for _, a := range documented {
		require.True(t, seen.set[a], "no request got the documented answer %s; seen: %v", a, seen.set)
	}
	require.True(t, seen.set[answer{"", http.StatusNotFound}], "unknown route")
	require.True(t, seen.set[answer{"", http.StatusMethodNotAllowed}], "wrong method")
	require.Greater(t, len(documented), 40)
}

// The document and its reference page are served; the page names every
// operation and loads nothing from elsewhere.
func TestOpenAPIDocumentAndReferenceAreServed(t *testing.T) {
	t.Parallel()
	c := loadContract(t)
	s := newServer(t, testdb.New(t), options{})

	get := func(path, contentType string) []byte {
		resp, err := http.Get(s.url + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Equal(t, contentType, resp.Header.Get("Content-Type"))
		return raw
	}
	require.Equal(t, api.OpenAPIDocument, get("/openapi.yaml", "application/yaml"))
	page := string(get("/docs", "text/html; charset=utf-8"))
	for _, path := range c.doc.Paths.Keys() {
		for method, op := range c.doc.Paths.Value(path).Operations() {
			require.Contains(t, page, `id="`+op.OperationID+`"`)
			require.Contains(t, page, `<span class="method `+method+`">`+method+`</span><span class="path">`+path+`</span>`)
		}
	}
	for name := range c.doc.Components.Schemas {
		require.Contains(t, page, `id="schema-`+name+`"`)
	}
	require.NotContains(t, page, `href="#schema-"`, "every link names a schema")
	for _, outside := range []string{"<script", `src="`, `href="http`, "@import", "url("} {
		require.NotContains(t, page, outside)
	}
}
