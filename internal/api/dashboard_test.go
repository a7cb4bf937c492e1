package api_test

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/dashboard"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

// A pool's keys come a page at a time in id order, each page starting after
// the last id of the one before, until a page says there is no next one.
// Other pools' keys, keys whose life has ended and lease tokens never show.
func TestPoolKeysArePagedByID(t *testing.T) {
	t.Parallel()
	s := newServer(t, testdb.New(t), options{})
	var want []string
	for _, k := range do(t, "POST", s.url+"/keys?pool=p", `{"count": 7}`).body["keys"].([]any) {
		want = append(want, k.(map[string]any)["keyId"].(string))
	}
	slices.Sort(want)
	do(t, "POST", s.url+"/keys?pool=q", `{"count": 2}`)
	gone := do(t, "POST", s.url+"/keys?pool=p", "").str("keyId")
	_, err := s.pool.Exec(context.Background(), "UPDATE keys SET expires_at = now() - interval '1 second' WHERE id = $1", gone)
	require.NoError(t, err)
	held := do(t, "GET", s.url+"/keys?pool=p", "")
	require.Equal(t, http.StatusOK, held.status, held.raw)

	var got []string
	after := ""
	for page := 0; ; page++ {
		require.Less(t, page, 3, "7 keys in pages of 3 take 3 pages")
		path := "/pools/p/keys?limit=3"
		if after != "" {
			path += "&after=" + after
		}
		r := do(t, "GET", s.url+path, "")
		require.Equal(t, http.StatusOK, r.status, r.raw)
		require.Equal(t, "p", r.str("pool"))
		keys := r.body["keys"].([]any)
		require.LessOrEqual(t, len(keys), 3)
		for _, raw := range keys {
			k := raw.(map[string]any)
			require.Equal(t, "p", k["pool"])
			require.NotContains(t, k, "leaseToken")
			require.Equal(t, k["keyId"] == held.str("keyId"), k["isBlocked"], "only the key claimed above is held")
			got = append(got, k["keyId"].(string))
		}
		if r.body["nextAfter"] == nil {
			require.Len(t, keys, 1, "the last page holds the seventh key")
			break
		}
		require.Len(t, keys, 3, "a page followed by another is full")
		after = r.str("nextAfter")
		require.Equal(t, got[len(got)-1], after, "the next page starts after the last key of this one")
	}
	require.Equal(t, want, got, "every live key of the pool, once, in id order")

	whole := do(t, "GET", s.url+"/pools/p/keys?limit=7", "")
	require.Len(t, whole.body["keys"], 7)
	require.Nil(t, whole.body["nextAfter"], "a page that holds the rest has no next one")
	empty := do(t, "GET", s.url+"/pools/none/keys", "")
	require.Equal(t, http.StatusOK, empty.status, empty.raw)
	require.Empty(t, empty.body["keys"])
	require.Nil(t, empty.body["nextAfter"])
	require.Len(t, do(t, "GET", s.url+"/pools/q/keys", "").body["keys"], 2, "the default page size holds both")
}

// Bad parameters of the dashboard's reads answer 400 with a message naming
// the problem, before any query: the server's database is unreachable, so
// any request that reached it would answer 503.
func TestDashboardReadsRefuseBadParameters(t *testing.T) {
	t.Parallel()
	s := newServer(t, "postgres://postgres@127.0.0.1:1/none?sslmode=disable", options{dbTimeout: 500 * time.Millisecond})
	for _, tc := range []struct{ path, detail string }{
		{"/pools/p/keys?limit=0", "limit must be a whole number from 1 to 500"},
		{"/pools/p/keys?limit=501", "limit must be a whole number from 1 to 500"},
		{"/pools/p/keys?limit=ten", "limit must be a whole number"},
		{"/pools/p/keys?after=nope", "after must be a key id"},
		{"/pools/p/keys?after={0b7a0e55-8f7e-4b8e-9a52-8d1b6c1f0d3e}", "after must be a key id"},

		{"/pools/p/keys?limit=1&limit=2", "limit is given 2 times"},
		{"/pools/bad!pool/keys", "pool must be 1 to 64 letters"},
		{"/activity?minutes=0", "minutes must be a whole number from 1 to 1440"},
		{"/activity?minutes=1441", "minutes must be a whole number from 1 to 1440"},
		{"/activity?pool=", "pool must not be empty"},
		{"/activity?pool=a/b", "pool must be 1 to 64 letters"},

		{"/activity/lease-durations?minutes=-5", "minutes must be a whole number from 1 to 1440"},
		{"/activity/lease-durations?pool=x&pool=y", "pool is given 2 times"},
	} {
		r := do(t, "GET", s.url+tc.path, "")
		requireProblem(t, r, http.StatusBadRequest, "invalid_parameter")
		require.Contains(t, r.str("detail"), tc.detail, tc.path)
	}
	for _, tc := range []struct{ path, detail string }{
		{"/pools/p/keys?page=2", `unknown parameter "page"; GET /pools/{pool}/keys takes after, limit`},
		{"/activity?from=2026-11-21T00:00:00Z", `unknown parameter "from"; GET /activity takes pool, minutes`},
	} {
		r := do(t, "GET", s.url+tc.path, "")
		requireProblem(t, r, http.StatusBadRequest, "unknown_parameter")
		require.Contains(t, r.str("detail"), tc.detail, tc.path)
	}
}

// Events are counted in the minute they happened, per pool or for every
// pool, over exactly the minutes asked for, the current one last.
func TestActivityCountsEventsPerMinute(t *testing.T) {
	t.Parallel()
	s := newServer(t, testdb.New(t), options{})
	// Ten minutes ago: well inside the last hour even if a minute begins
	// while the test runs.
	base := time.Now().UTC().Truncate(time.Minute).Add(-10 * time.Minute)
	history := []testdb.Event{
		{At: 0, Key: 1, Event: "created"},
		{At: 10 * time.Second, Key: 2, Event: "created"},
		{At: time.Minute, Key: 1, Event: "assigned", Token: 1},
		{At: time.Minute + 30*time.Second, Key: 1, Event: "kept_alive", Token: 1},
		{At: 2 * time.Minute, Key: 1, Event: "released", Token: 1},
		{At: 2*time.Minute + 59*time.Second, Key: 2, Event: "assigned", Token: 2},
		{At: 3 * time.Minute, Key: 2, Event: "lease_expired", Token: 2},
		{At: 4 * time.Minute, Key: 1, Event: "deleted"},
		{At: 5 * time.Minute, Key: 2, Event: "expired"},
		// Two hours before: outside the last hour.
		{At: -2 * time.Hour, Key: 3, Event: "assigned", Token: 3},
	}
	testdb.InsertHistory(t, s.pool, "h", base, 0, history)
	testdb.InsertHistory(t, s.pool, "other", base, 100, history[:3])

	type counts = map[string]float64
	activity := func(query string) (minutes []map[string]any, byMinute map[string]counts, total counts) {
		r := do(t, "GET", s.url+"/activity"+query, "")
		require.Equal(t, http.StatusOK, r.status, r.raw)
		byMinute, total = map[string]counts{}, counts{}
		var previous time.Time
		for i, raw := range r.body["perMinute"].([]any) {
			m := raw.(map[string]any)
			minute := parseTime(t, m["minute"])
			if i == 0 {
				require.Equal(t, r.body["from"], m["minute"])
			} else {
				require.Equal(t, previous.Add(time.Minute), minute, "one entry per minute, in order")
			}
			previous = minute
			c := counts{}
			for name, v := range m {
				if name != "minute" {
					c[name] = v.(float64)
					total[name] += v.(float64)
				}
			}
			byMinute[minute.Format(time.RFC3339)] = c
			minutes = append(minutes, m)
		}
		require.Equal(t, r.body["to"], previous.Add(time.Minute).Format("2006-01-02T15:04:05.000Z07:00"))
		return minutes, byMinute, total
	}
	at := func(offset time.Duration) string { return base.Add(offset).Format(time.RFC3339) }
	zero := counts{"created": 0, "assigned": 0, "released": 0, "leaseExpired": 0, "keptAlive": 0, "deleted": 0, "expired": 0}
	with := func(changes counts) counts {
		c := counts{}
		for k, v := range zero {
			c[k] = v
		}
		for k, v := range changes {
			c[k] = v
		}
		return c
	}

	minutes, byMinute, total := activity("?pool=h&minutes=60")
	require.Len(t, minutes, 60)
	require.Equal(t, with(counts{"created": 2}), byMinute[at(0)])
	require.Equal(t, with(counts{"assigned": 1, "keptAlive": 1}), byMinute[at(time.Minute)])
	require.Equal(t, with(counts{"released": 1, "assigned": 1}), byMinute[at(2*time.Minute)])
	require.Equal(t, with(counts{"leaseExpired": 1}), byMinute[at(3*time.Minute)])
	require.Equal(t, with(counts{"deleted": 1}), byMinute[at(4*time.Minute)])
	require.Equal(t, with(counts{"expired": 1}), byMinute[at(5*time.Minute)])
	require.Equal(t, with(counts{"created": 2, "assigned": 2, "keptAlive": 1, "released": 1, "leaseExpired": 1, "deleted": 1, "expired": 1}), total,
		"nothing else: the event two hours ago and the other pool's are not counted")

	_, _, total = activity("?minutes=60")
	require.Equal(t, with(counts{"created": 4, "assigned": 3, "keptAlive": 1, "released": 1, "leaseExpired": 1, "deleted": 1, "expired": 1}), total,
		"every pool")
	minutes, _, total = activity("?pool=h&minutes=5")
	require.Len(t, minutes, 5)
	require.Equal(t, zero, total, "the last five minutes hold none of it")

	// What the API does now shows in the last two minutes (the current one
	// and, should a minute begin meanwhile, the one before).
	do(t, "POST", s.url+"/keys?pool=live", `{"count": 2}`)
	held := do(t, "GET", s.url+"/keys?pool=live", "")
	do(t, "PUT", s.url+"/keys/"+held.str("keyId")+"/keepalive", "", "If-Match", `"`+held.str("leaseToken")+`"`)
	do(t, "PUT", s.url+"/keys/"+held.str("keyId"), "", "If-Match", `"`+held.str("leaseToken")+`"`)
	do(t, "DELETE", s.url+"/keys/"+held.str("keyId"), "")
	_, _, total = activity("?pool=live&minutes=2")
	require.Equal(t, with(counts{"created": 2, "assigned": 1, "keptAlive": 1, "released": 1, "deleted": 1}), total)
}

// The leases that started in the span are counted by how long they lasted,
// and those still held apart.
func TestLeaseDurationsAreCountedInBuckets(t *testing.T) {
	t.Parallel()
	s := newServer(t, testdb.New(t), options{})
	base := time.Now().UTC().Add(-30 * time.Minute)
	ends := []string{"released", "lease_expired", "deleted", "expired"}
	var history []testdb.Event
	for i, d := range []time.Duration{
		500 * time.Millisecond, 3 * time.Second, 4 * time.Second, 20 * time.Second, 45 * time.Second,
		90 * time.Second, 200 * time.Second, 10 * time.Minute, 20 * time.Minute,
	} {
		key := i + 1
		history = append(history,
			testdb.Event{At: 0, Key: key, Event: "assigned", Token: int64(key)},
			testdb.Event{At: d, Key: key, Event: ends[i%len(ends)], Token: int64(key)})
	}
	history = append(history,
		testdb.Event{At: time.Minute, Key: 20, Event: "assigned", Token: 20},
		// Started two hours ago: outside the last hour.
		testdb.Event{At: -90 * time.Minute, Key: 21, Event: "assigned", Token: 21},
		testdb.Event{At: -89 * time.Minute, Key: 21, Event: "released", Token: 21})
	testdb.InsertHistory(t, s.pool, "d", base, 0, history)
	testdb.InsertHistory(t, s.pool, "e", base, 100, history[:2])

	histogram := func(query string) (buckets []float64, ended, held float64) {
		r := do(t, "GET", s.url+"/activity/lease-durations"+query, "")
		require.Equal(t, http.StatusOK, r.status, r.raw)
		var from float64
		for i, raw := range r.body["buckets"].([]any) {
			b := raw.(map[string]any)
			require.Equal(t, from, b["fromSeconds"], "bucket %d starts where the one before ends", i)
			if b["toSeconds"] != nil {
				from = b["toSeconds"].(float64)
			}
			buckets = append(buckets, b["leases"].(float64))
		}
		require.Nil(t, r.body["buckets"].([]any)[len(buckets)-1].(map[string]any)["toSeconds"], "the last bucket has no end")
		return buckets, r.body["ended"].(float64), r.body["held"].(float64)
	}
	// Buckets: <1 s, 1–5 s, 5–15 s, 15–30 s, 30–60 s, 1–2 min, 2–5 min, 5–15 min, ≥15 min.
	buckets, ended, held := histogram("?pool=d")
	require.Equal(t, []float64{1, 2, 0, 1, 1, 1, 1, 1, 1}, buckets)
	require.Equal(t, 9.0, ended)
	require.Equal(t, 1.0, held)
	buckets, ended, held = histogram("?minutes=60")
	require.Equal(t, []float64{2, 2, 0, 1, 1, 1, 1, 1, 1}, buckets, "every pool")
	require.Equal(t, 10.0, ended)
	require.Equal(t, 1.0, held)
	buckets, ended, held = histogram("?pool=d&minutes=10")
	require.Equal(t, []float64{0, 0, 0, 0, 0, 0, 0, 0, 0}, buckets, "no lease started in the last ten minutes")
	require.Zero(t, ended)
	require.Zero(t, held)
}

// The dashboard is served at / with its files under /ui/, all of them from
// the binary, under a policy that lets it load nothing from elsewhere;
// every other unknown path still answers JSON.
func TestDashboardIsServed(t *testing.T) {
	t.Parallel()
	s := newServer(t, testdb.New(t), options{})
	get := func(path string) (status int, header http.Header, body string) {
		resp, err := http.Get(s.url + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, resp.Header, string(raw)
	}
	status, header, page := get("/")
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, "text/html; charset=utf-8", header.Get("Content-Type"))
	require.Equal(t, dashboard.ContentSecurityPolicy, header.Get("Content-Security-Policy"))
	require.Contains(t, dashboard.ContentSecurityPolicy, "default-src 'none'")
	require.NotContains(t, dashboard.ContentSecurityPolicy, "unsafe-inline")

	// Everything the page loads is one of our files, and so is everything
	// they load in turn.
	loads := regexp.MustCompile(`(?:src|href)="([^"]+)"`).FindAllStringSubmatch(page, -1)
	var files []string
	for _, m := range loads {
		if m[1] == "/docs" {
			continue // a link, not a load
		}
		require.True(t, strings.HasPrefix(m[1], "/ui/"), "the page loads %s", m[1])
		files = append(files, m[1])
	}
	require.ElementsMatch(t, []string{"/ui/favicon.svg", "/ui/style.css", "/ui/app.js"}, files)
	types := map[string]string{".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
	for _, file := range files {
		status, header, body := get(file)
		require.Equal(t, http.StatusOK, status, file)
		require.Equal(t, types[file[strings.LastIndex(file, "."):]], header.Get("Content-Type"), file)
		require.Equal(t, "nosniff", header.Get("X-Content-Type-Options"))
		// The SVG namespace is a name, not an address that is loaded.
		body = strings.ReplaceAll(body, "http://www.w3.org/2000/svg", "")
		require.NotRegexp(t, `https?:|//[a-z]|@import|url\(`, body, "%s refers to something elsewhere", file)
	}
	require.NotRegexp(t, `<script>|<style|style="`, page, "no inline script or style: the policy would block it")

	for _, path := range []string{"/nope", "/ui/nope.js", "/ui/index.html", "/ui/", "/index.html"} {
		requireProblem(t, do(t, "GET", s.url+path, ""), http.StatusNotFound, "route_not_found")
	}
	r := do(t, "POST", s.url+"/", "")
	requireProblem(t, r, http.StatusMethodNotAllowed, "method_not_allowed")
	require.Equal(t, "GET", r.header.Get("Allow"))
}
