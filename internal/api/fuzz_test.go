package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/api"
	"github.com/tokenorchestrator/tokenorchestrator/internal/claim"
	"github.com/tokenorchestrator/tokenorchestrator/internal/metrics"
	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
	"github.com/tokenorchestrator/tokenorchestrator/internal/wakeup"
)

// fuzzOrigin is the one origin the fuzzed server lets call from a browser.
const fuzzOrigin = "https://app.example.com"

// FuzzHandler sends the API, over a real database, requests of any method,
// path, query, headers and body, with no token, either token or a wrong
// one. Whatever arrives, the answer is never a 5xx (the database is there)
// and never a panic; it is JSON (problem details for errors) with the few
// documented exceptions (the metrics, the document, its page, the
// dashboard's page and files); and every
// answer of a documented operation matches openapi.yaml: its status, its
// headers and its body. The seeds in
// testdata/fuzz/FuzzHandler run with every go test; go test
// -fuzz=FuzzHandler ./internal/api/ looks for more.
//
// Requests that net/http itself refuses before any handler runs (a
// malformed request line or header) are skipped: they never reach the API.
func FuzzHandler(f *testing.F) {
	c := loadContract(f)
	handler := fuzzedAPI(f)
	credentials := []string{
		"",
		"Authorization: Bearer " + clientToken + "\r\n",
		"Authorization: Bearer " + adminToken + "\r\n",
		"Authorization: Bearer not-" + adminToken + "\r\n",
	}

	// A body larger than the API reads; kept out of testdata for its size.
	f.Add("POST", "/keys", "Content-Type: application/json\n", append([]byte(`{"pool": "`), bytes.Repeat([]byte("p"), 70<<10)...), uint8(2))

	f.Fuzz(func(t *testing.T, method, target, headers string, body []byte, credential uint8) {
		headers = strings.ReplaceAll(strings.ReplaceAll(headers, "\r\n", "\n"), "\n", "\r\n")
		if headers != "" && !strings.HasSuffix(headers, "\r\n") {
			headers += "\r\n"
		}
		raw := method + " " + target + " HTTP/1.1\r\nHost: fuzz.example\r\n" +
			credentials[int(credential)%len(credentials)] + headers +
			"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + string(body)
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil {
			t.Skip("net/http refuses the request before any handler:", err)
		}
		reqBody, err := io.ReadAll(req.Body)
		if err != nil {
			t.Skip("net/http cannot read the body:", err)
		}
		req.Body = io.NopCloser(bytes.NewReader(reqBody))
		req.RemoteAddr = "192.0.2.1:1234"

		// A wait for a key may last a minute; the fuzzer does not.
		limit := 10 * time.Second
		if req.URL.Query().Has("wait") {
			limit = 300 * time.Millisecond
		}
		ctx, cancel := context.WithTimeout(context.Background(), limit)
		defer cancel()
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req.WithContext(ctx))
		if ctx.Err() != nil {
			require.True(t, req.URL.Query().Has("wait"), "%s %s took longer than %s without waiting for a key", req.Method, req.URL, limit)
			return // a wait the fuzzer gave up on: nobody is there to answer
		}

		resp := rec.Result()
		answer := rec.Body.Bytes()
		where := req.Method + " " + req.URL.String()
		require.Less(t, resp.StatusCode, 500, "%s: %s", where, answer)
		contentType := resp.Header.Get("Content-Type")
		if resp.StatusCode >= 400 {
			require.Equal(t, "application/problem+json", contentType, where)
		} else if !servesAFile(req, resp.StatusCode) {
			require.Equal(t, "application/json", contentType, "%s: %s", where, answer)
		}
		if req.Method != http.MethodHead && contentType != "" && strings.HasSuffix(contentType, "json") {
			// net/http drops what a handler writes for HEAD.
			require.True(t, json.Valid(answer), "%s answered %d with a body that is not JSON: %q", where, resp.StatusCode, answer)
		}
		if resp.StatusCode >= 400 && req.Method != http.MethodHead {
			var p map[string]any
			require.NoError(t, json.Unmarshal(answer, &p), where)
			require.NotEmpty(t, p["code"], "%s: %s", where, answer)
			require.EqualValues(t, resp.StatusCode, p["status"], where)
		}
		if resp.StatusCode == http.StatusMethodNotAllowed {
			require.NotEmpty(t, resp.Header.Get("Allow"), where)
		}

		// Answers of documented operations match the document. (The server
		// may take more than the document promises it takes, e.g. wait=1e1.)
		// (The document's router also takes /reports/ for /reports and //
		// for /; the API does not, and answers 404 as for any unknown path.)
		route, _, err := c.router.FindRoute(req)
		if err == nil && route != nil && pathTemplate(route.Path).MatchString(req.URL.Path) {
			req.Body = io.NopCloser(bytes.NewReader(reqBody))
			_, err := c.checkExchange(req, resp.StatusCode, resp.Header, answer, false)
			require.NoError(t, err, "%s answered %d: %s", where, resp.StatusCode, answer)
		}
	})
}

// pathTemplate matches the paths of a path of the document exactly: one
// non-empty segment for each parameter.
func pathTemplate(path string) *regexp.Regexp {
	pattern := regexp.MustCompile(`\\\{[^/]+\\\}`).ReplaceAllString(regexp.QuoteMeta(path), `[^/]+`)
	return regexp.MustCompile("^" + pattern + "$")
}

// servesAFile: the answers that are not JSON by design.
func servesAFile(r *http.Request, status int) bool {
	if status != http.StatusOK || r.Method != http.MethodGet {
		return false
	}
	switch r.URL.Path {
	case "/metrics", "/openapi.yaml", "/docs", "/",
		"": // a request target such as "a:" has no path; the router takes it for /
		return true
	}
	return strings.HasPrefix(r.URL.Path, "/ui/")
}

// fuzzedAPI is the handler as a replica builds it, with both tokens, CORS
// for one origin, and its own database.
func fuzzedAPI(f *testing.F) http.Handler {
	cfg, err := pgxpool.ParseConfig(testdb.New(f))
	require.NoError(f, err)
	cfg.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(f, err)
	f.Cleanup(pool.Close)
	logger := slog.New(slog.DiscardHandler)
	st := store.New(pool, store.Config{KeyTTL: time.Hour, LeaseTTL: time.Hour, QueryTimeout: 30 * time.Second})
	f.Cleanup(st.Close)
	waiters := wakeup.New(st, wakeup.Config{Poll: 50 * time.Millisecond, Logger: logger})
	m := metrics.New(st.CountPools, logger)
	return api.New(api.Config{
		Store: st, Logger: logger, Metrics: m, Claims: claim.New(claim.Config{Store: st, Waiters: waiters, Metrics: m}),
		CORSOrigins: []string{fuzzOrigin},
		Auth:        api.Auth{AdminToken: adminToken, ClientToken: clientToken, PublicHealth: true},
		Ready:       func(ctx context.Context) error { return st.Ping(ctx) },
	})
}
