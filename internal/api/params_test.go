package api_test

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/api"
	"github.com/tokenorchestrator/tokenorchestrator/internal/metrics"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

// routeURL fills in a route's path parameters with values of the right
// shape: the query is checked before any of them is looked at.
func routeURL(route string) string {
	return strings.NewReplacer("{id}", unknownID, "{pool}", "p", "{asset}", "app.js", "{name}", "n").Replace(route)
}

// Every route, walked from the router, refuses a query parameter it does
// not take (400 unknown_parameter, naming it, and the route's parameter it
// was close to) and a single-valued one given twice (400
// invalid_parameter); each answer is held to the document on the way. No
// database is needed: nothing reaches a handler.
func TestEveryRouteRefusesQueryParametersItDoesNotTake(t *testing.T) {
	t.Parallel()
	a := api.New(api.Config{Metrics: metrics.New(nil, slog.New(slog.DiscardHandler))})
	srv := httptest.NewServer(checkContract(t, a, nil))
	t.Cleanup(srv.Close)

	routes := 0
	err := chi.Walk(a.Routes(), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		routes++
		name := method + " " + route
		params, ok := a.QueryParams(name)
		require.True(t, ok, "%s declares what it takes in its query", name)
		url := srv.URL + routeURL(route)
		refused := func(query, code string, inDetail ...string) {
			t.Helper()
			r := do(t, method, url+"?"+query, "")
			requireProblem(t, r, http.StatusBadRequest, code)
			if method == http.MethodHead {
				return // no body to read
			}
			for _, s := range inDetail {
				require.Contains(t, r.str("detail"), s, "%s?%s", name, query)
			}
		}

		refused("bogus=1", "unknown_parameter", `unknown parameter "bogus"; `+name+" takes")
		r := do(t, method, url+"?bogus=1&zzz=2", "")
		if method != http.MethodHead {
			require.NotContains(t, r.str("detail"), "did you mean", "nothing is close to bogus")
			require.Contains(t, r.str("detail"), `unknown parameters "bogus", "zzz"`)
		}
		refused("pool=p;wait=1s", "invalid_parameter", "the query cannot be read")
		for param, repeatable := range params {
			// A letter too many, and the name in capitals.
			refused(param+param[len(param)-1:]+"=1", "unknown_parameter", `(did you mean "`+param+`"?)`)
			refused(strings.ToUpper(param)+"=1", "unknown_parameter", `(did you mean "`+param+`"?)`)
			if !repeatable {
				refused(param+"=1&"+param+"=2", "invalid_parameter", param+" is given 2 times")
			}
		}
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, 35, routes)
}

// What each route takes in its query is what the document lists for its
// operation, repeatable exactly where the document's parameter is an array.
func TestRoutesTakeTheQueryParametersOfTheDocument(t *testing.T) {
	t.Parallel()
	c := loadContract(t)
	a := api.New(api.Config{Metrics: metrics.New(nil, slog.New(slog.DiscardHandler))})
	for _, path := range c.doc.Paths.Keys() {
		item := c.doc.Paths.Value(path)
		for method, op := range item.Operations() {
			documented := map[string]bool{}
			for _, p := range append(item.Parameters, op.Parameters...) {
				if p.Value.In == "query" {
					documented[p.Value.Name] = p.Value.Schema.Value.Type.Is("array")
				}
			}
			taken, ok := a.QueryParams(method + " " + path)
			require.True(t, ok, "%s %s", method, path)
			require.Equal(t, documented, taken, "%s %s", method, path)
		}
	}
}

// The mistakes of a hurried user are refused, not served as some other
// request: a misspelt pool is no claim from the default pool, a misspelt
// label no claim of an unlabelled key, a misspelt cooldown no release
// without one, a pool given twice no claim from the first.
func TestMisspeltOrRepeatedParametersChangeNothing(t *testing.T) {
	t.Parallel()
	s := newServer(t, testdb.New(t), options{})
	require.Equal(t, http.StatusCreated, do(t, "POST", s.url+"/keys", "").status)
	require.Equal(t, http.StatusCreated, do(t, "POST", s.url+"/keys?pool=openai", `{"count": 2}`).status)
	for _, tc := range []struct{ query, code, detail string }{
		{"pol=openai", "unknown_parameter", `unknown parameter "pol" (did you mean "pool"?); GET /keys takes pool, wait, label (repeatable)`},
		{"pool=openai&labels=tier=paid", "unknown_parameter", `unknown parameter "labels" (did you mean "label"?)`},
		{"Pool=openai", "unknown_parameter", `unknown parameter "Pool" (did you mean "pool"?)`},
		{"pool=openai&wiat=30s", "unknown_parameter", `unknown parameter "wiat" (did you mean "wait"?)`},
		{"pool=p2&pool=p1", "invalid_parameter", "pool is given 2 times; give it once"},
		{"pool=openai&wait=1s&wait=2s", "invalid_parameter", "wait is given 2 times"},
		{"pool=openai;wait=1s", "invalid_parameter", "the query cannot be read"},
		{"pool=open%zzai", "invalid_parameter", "the query cannot be read"},
	} {
		r := do(t, "GET", s.url+"/keys?"+tc.query, "")
		requireProblem(t, r, http.StatusBadRequest, tc.code)
		require.Contains(t, r.str("detail"), tc.detail, tc.query)
	}
	counts, err := s.store.CountPools(t.Context())
	require.NoError(t, err)
	for _, c := range counts {
		require.Zero(t, c.Held, "nothing was claimed from pool %s", c.Pool)
	}

	held := do(t, "GET", s.url+"/keys?pool=openai", "")
	require.Equal(t, http.StatusOK, held.status, held.raw)
	release := s.url + "/keys/" + held.str("keyId") + "?lease=" + held.str("leaseToken")
	r := do(t, "PUT", release+"&coldown=30s", "")
	requireProblem(t, r, http.StatusBadRequest, "unknown_parameter")
	require.Contains(t, r.str("detail"), `unknown parameter "coldown" (did you mean "cooldown"?); PUT /keys/{id} takes lease, cooldown`)
	require.Equal(t, true, do(t, "GET", s.url+"/keys/"+held.str("keyId"), "").body["isBlocked"], "the key is still held")
	r = do(t, "PUT", release+"&cooldown=30s", "")
	require.Equal(t, http.StatusOK, r.status, r.raw)
	require.NotNil(t, r.body["coolingUntil"])

	// A repeatable parameter may be repeated.
	require.Equal(t, http.StatusCreated, do(t, "POST", s.url+"/keys", `{"pool": "l", "keys": [{"labels": {"a": "1", "b": "2"}}, {"labels": {"a": "1"}}]}`).status)
	r = do(t, "GET", s.url+"/keys?pool=l&label=a=1&label=b=2", "")
	require.Equal(t, http.StatusOK, r.status, r.raw)
	require.Equal(t, map[string]any{"a": "1", "b": "2"}, r.body["labels"])
}

// A caller without the route's token learns nothing from its query: it is
// refused for the token first.
func TestQueryIsCheckedAfterTheToken(t *testing.T) {
	t.Parallel()
	s := newServer(t, testdb.New(t), options{auth: strictAuth})
	requireProblem(t, do(t, "GET", s.url+"/stats?bogus=1", ""), http.StatusUnauthorized, "unauthorized")
	requireProblem(t, do(t, "GET", s.url+"/stats?bogus=1", "", bearer(clientToken)...), http.StatusForbidden, "forbidden")
	requireProblem(t, do(t, "GET", s.url+"/stats?bogus=1", "", bearer(adminToken)...), http.StatusBadRequest, "unknown_parameter")
}

// The suggestion is the route's parameter closest to the unknown name, if
// one is close enough to be a slip of the keyboard.
func TestClosestParameter(t *testing.T) {
	t.Parallel()
	claim := []string{"pool", "wait", "label"}
	for _, tc := range []struct {
		name   string
		params []string
		want   string
	}{
		{"pol", claim, "pool"},
		{"poool", claim, "pool"},
		{"POOL", claim, "pool"},
		{"labels", claim, "label"},
		{"lable", claim, "label"},
		{"wiat", claim, "wait"},
		{"waitMs", claim, "wait"},
		{"poolName", claim, "pool"},
		{"lease", claim, ""},
		{"x", claim, ""},
		{"bogus", claim, ""},
		{"coldown", []string{"lease", "cooldown"}, "cooldown"},
		{"cooldwn", []string{"lease", "cooldown"}, "cooldown"},
		{"leas", []string{"lease", "cooldown"}, "lease"},
		{"token", []string{"lease", "cooldown"}, ""},
		{"form", []string{"from", "to", "pool", "limit"}, "from"},
		{"too", []string{"from", "to", "pool", "limit"}, "to"},
		{"t", []string{"from", "to", "pool", "limit"}, "to"},
		{"ab", []string{"from", "to", "pool", "limit"}, ""},
		{"limt", []string{"from", "to", "pool", "limit"}, "limit"},
		{"minute", []string{"pool", "minutes"}, "minutes"},
		{"anything", nil, ""},
	} {
		require.Equal(t, tc.want, api.ClosestParameter(tc.name, tc.params...), "%s among %v", tc.name, tc.params)
	}
}

// An empty pool name is refused wherever a pool is named, in the query or
// in a body, and nothing is created or claimed: it is never read as the
// default pool.
func TestEmptyPoolNameIsRefusedEverywhere(t *testing.T) {
	t.Parallel()
	s := newServer(t, testdb.New(t), options{secrets: testKeyring(t)})
	require.Equal(t, http.StatusCreated, do(t, "POST", s.url+"/keys", "").status)
	for _, tc := range []struct{ method, path, body, code string }{
		{"POST", "/keys", `{"count": 1, "pool": ""}`, "invalid_body"},
		{"POST", "/keys", `{"pool": ""}`, "invalid_body"},
		{"POST", "/keys", `{"pool": "", "keys": [{"secret": "sk-empty-pool"}]}`, "invalid_body"},
		{"POST", "/keys?pool=default", `{"pool": ""}`, "invalid_body"},
		{"POST", "/keys?pool=", `{"count": 1}`, "invalid_parameter"},
		{"POST", "/keys?pool=", ``, "invalid_parameter"},
		{"GET", "/keys?pool=", ``, "invalid_parameter"},
		{"GET", "/keys?pool=&wait=1s", ``, "invalid_parameter"},
		{"HEAD", "/keys?pool=", ``, ""},
		{"GET", "/activity?pool=", ``, "invalid_parameter"},
		{"GET", "/activity/lease-durations?pool=", ``, "invalid_parameter"},
		{"GET", "/reports/leases?pool=", ``, "invalid_parameter"},
	} {
		r := do(t, tc.method, s.url+tc.path, tc.body)
		requireProblem(t, r, http.StatusBadRequest, tc.code)
		if tc.method != "HEAD" {
			require.Contains(t, r.str("detail"), "pool must not be empty", "%s %s %s", tc.method, tc.path, tc.body)
		}
	}
	counts, err := s.store.CountPools(t.Context())
	require.NoError(t, err)
	require.Len(t, counts, 1)
	require.Equal(t, int64(1), counts[0].Keys, "only the first key was created")
	require.Zero(t, counts[0].Held, "nothing was claimed")
}
