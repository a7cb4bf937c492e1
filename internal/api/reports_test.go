package api_test

import (
	"context"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

// A known sequence of creations, claims, keep-alives, releases, lease
// expiries, deletions and key expiries, driven through the API with short
// TTLs, then every report endpoint and /stats with its exact numbers.
// Replicas with different TTLs share the database: a key from shortKey
// expires, a lease from shortLease runs out, the rest live for an hour.
func TestReportsOfADrivenSequence(t *testing.T) {
	t.Parallel()
	dbURL := testdb.New(t)
	long := newServer(t, dbURL, options{sweep: 20 * time.Millisecond})
	shortLease := newServer(t, dbURL, options{leaseTTL: 300 * time.Millisecond})
	shortKey := newServer(t, dbURL, options{keyTTL: 300 * time.Millisecond})
	soon := newServer(t, dbURL, options{keyTTL: 50 * time.Second})
	ctx := context.Background()
	countEvents := func(event string) int {
		var n int
		require.NoError(t, long.pool.QueryRow(ctx, "SELECT count(*) FROM key_events WHERE event = $1", event).Scan(&n))
		return n
	}
	claim := func(s *testServer, pool string) (id, token string) {
		r := do(t, "GET", s.url+"/keys?pool="+pool, "")
		require.Equal(t, http.StatusOK, r.status, r.raw)
		return r.str("keyId"), r.str("leaseToken")
	}
	keepAlive := func(s *testServer, id, token string) {
		r := do(t, "PUT", s.url+"/keepalive/"+id, "", "If-Match", `"`+token+`"`)
		require.Equal(t, http.StatusOK, r.status, r.raw)
	}

	// A key nobody keeps alive expires and is removed by the job.
	do(t, "POST", shortKey.url+"/keys?pool=r", "")
	waitFor(t, 5*time.Second, func() bool { return countEvents("expired") == 1 })

	created := do(t, "POST", long.url+"/keys?pool=r", `{"count": 4}`).body["keys"].([]any)
	do(t, "POST", long.url+"/keys?pool=o", `{"count": 2}`)
	do(t, "POST", soon.url+"/keys?pool=o", "")

	// Lease 1: kept alive twice, released by its holder.
	id1, token1 := claim(long, "r")
	keepAlive(long, id1, token1)
	keepAlive(long, id1, token1)
	require.Equal(t, http.StatusOK, do(t, "PUT", long.url+"/keys/"+id1+"?lease="+token1, "").status)
	// Lease 2: kept alive once, then its holder vanishes and the job ends it.
	id2, token2 := claim(shortLease, "r")
	keepAlive(shortLease, id2, token2)
	waitFor(t, 5*time.Second, func() bool { return countEvents("lease_expired") == 1 })
	// Lease 3: ended by deleting the key.
	id3, token3 := claim(long, "r")
	require.Equal(t, http.StatusOK, do(t, "DELETE", long.url+"/keys/"+id3, "").status)
	// Lease 4: kept alive once, still held.
	id4, token4 := claim(long, "r")
	keepAlive(long, id4, token4)
	// A keep-alive on a free key is no lease's.
	for _, k := range created {
		if id := k.(map[string]any)["keyId"].(string); id != id3 && id != id4 {
			require.Equal(t, http.StatusOK, do(t, "PUT", long.url+"/keepalive/"+id, "").status)
			break
		}
	}
	// Pool o: one lease, released.
	idO, tokenO := claim(long, "o")
	require.Equal(t, http.StatusOK, do(t, "PUT", long.url+"/keys/"+idO+"?lease="+tokenO, "").status)

	t.Run("stats", func(t *testing.T) {
		stats := do(t, "GET", long.url+"/stats", "")
		require.Equal(t, http.StatusOK, stats.status, stats.raw)
		require.Equal(t, []any{
			map[string]any{"pool": "o", "total": 3.0, "seats": 3.0, "free": 3.0, "blocked": 0.0, "expiringWithinMinute": 1.0},
			map[string]any{"pool": "r", "total": 3.0, "seats": 3.0, "free": 2.0, "blocked": 1.0, "expiringWithinMinute": 0.0},
		}, stats.body["pools"])
		require.Equal(t, map[string]any{"total": 6.0, "seats": 6.0, "free": 5.0, "blocked": 1.0, "expiringWithinMinute": 1.0}, stats.body["total"])
		require.Equal(t, false, stats.body["expiringWithinMinuteCapped"])

		resp, err := http.Get(long.url + "/metrics")
		require.NoError(t, err)
		defer resp.Body.Close()
		metrics, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.Contains(t, string(metrics), "\ntokenorchestrator_sweeper_history_deleted_total 0\n")
	})

	t.Run("leases", func(t *testing.T) {
		r := do(t, "GET", long.url+"/reports/leases?pool=r", "")
		require.Equal(t, http.StatusOK, r.status, r.raw)
		require.Equal(t, "leases", r.body["report"])
		require.Equal(t, "r", r.body["pool"])
		require.Equal(t, false, r.body["truncated"])
		byToken := map[string]map[string]any{}
		for _, row := range rows(r) {
			byToken[strconv.FormatFloat(row["leaseToken"].(float64), 'f', -1, 64)] = row
		}
		require.Len(t, byToken, 4)
		for _, tc := range []struct {
			token, key, endedBy string
			keepAlives          float64
		}{{token1, id1, "released", 2}, {token2, id2, "lease_expired", 1}, {token3, id3, "deleted", 0}} {
			row := byToken[tc.token]
			require.Equal(t, tc.key, row["keyId"], tc.token)
			require.Equal(t, tc.endedBy, row["endedBy"], tc.token)
			require.Equal(t, tc.keepAlives, row["keepAlives"], tc.token)
			requireTime(t, row["endedAt"])
			require.Greater(t, row["durationSeconds"], 0.0)
		}
		require.GreaterOrEqual(t, byToken[token2]["durationSeconds"], 0.3, "a lease lasts at least LEASE_TTL after its last keep-alive")
		open := byToken[token4]
		require.Equal(t, id4, open["keyId"])
		require.Nil(t, open["endedAt"])
		require.Nil(t, open["endedBy"])
		require.Nil(t, open["durationSeconds"])
		require.Equal(t, 1.0, open["keepAlives"])

		// The limit, and the note that rows were left out.
		first := do(t, "GET", long.url+"/reports/leases?limit=2", "")
		require.Len(t, rows(first), 2)
		require.Equal(t, true, first.body["truncated"])
		require.Equal(t, 2.0, first.body["limit"])
	})

	t.Run("lease activity", func(t *testing.T) {
		r := do(t, "GET", long.url+"/reports/lease-activity", "")
		require.Equal(t, http.StatusOK, r.status, r.raw)
		require.Equal(t, map[string]float64{"assigned": 4, "released": 1, "leaseExpired": 1, "endedByDeletion": 1, "keepAlives": 4},
			sums(t, r, "r", "assigned", "released", "leaseExpired", "endedByDeletion", "keepAlives"))
		require.Equal(t, map[string]float64{"assigned": 1, "released": 1, "leaseExpired": 0, "endedByDeletion": 0, "keepAlives": 0},
			sums(t, r, "o", "assigned", "released", "leaseExpired", "endedByDeletion", "keepAlives"))
		only := do(t, "GET", long.url+"/reports/lease-activity?pool=o", "")
		require.Equal(t, []string{"o"}, pools(only))
	})

	t.Run("key activity", func(t *testing.T) {
		r := do(t, "GET", long.url+"/reports/key-activity", "")
		require.Equal(t, http.StatusOK, r.status, r.raw)
		require.Equal(t, map[string]float64{"created": 5, "deleted": 1, "expired": 1}, sums(t, r, "r", "created", "deleted", "expired"))
		require.Equal(t, map[string]float64{"created": 3, "deleted": 0, "expired": 0}, sums(t, r, "o", "created", "deleted", "expired"))
	})

	t.Run("lease durations", func(t *testing.T) {
		// The durations of each hour of start, worked out here from the
		// leases report.
		leases := rows(do(t, "GET", long.url+"/reports/leases?pool=r", ""))
		durations := map[string][]float64{}
		started := map[string]int{}
		for _, l := range leases {
			hour := parseTime(t, l["startedAt"]).Truncate(time.Hour).Format("2006-01-02T15:04:05.000Z07:00")
			started[hour]++
			if d, ok := l["durationSeconds"].(float64); ok {
				durations[hour] = append(durations[hour], d)
			}
		}
		r := do(t, "GET", long.url+"/reports/lease-durations?pool=r", "")
		require.Equal(t, http.StatusOK, r.status, r.raw)
		require.Len(t, rows(r), len(started))
		for _, row := range rows(r) {
			hour := row["hour"].(string)
			d := durations[hour]
			sort.Float64s(d)
			require.Equal(t, float64(started[hour]), row["leases"], hour)
			require.Equal(t, float64(len(d)), row["ended"], hour)
			require.InDelta(t, mean(d), row["meanSeconds"], 1e-9, hour)
			require.InDelta(t, percentile(d, 0.5), row["p50Seconds"], 1e-9, hour)
			require.InDelta(t, percentile(d, 0.95), row["p95Seconds"], 1e-9, hour)
			require.InDelta(t, d[len(d)-1], row["maxSeconds"], 1e-9, hour)
		}
	})

	t.Run("utilisation", func(t *testing.T) {
		// Moved three hours back, the whole history lies in hours that have
		// ended, so each hour's figures can be worked out here, forward from
		// the empty database, and compared with the report, which counts
		// back from the live counts.
		_, err := long.pool.Exec(ctx, "UPDATE key_events SET at = at - interval '3 hours'")
		require.NoError(t, err)
		type change struct {
			at         time.Time
			keys, held int
		}
		var changes []change
		dbRows, err := long.pool.Query(ctx, `SELECT at, event, lease_token IS NOT NULL FROM key_events WHERE pool = 'r' ORDER BY at`)
		require.NoError(t, err)
		for dbRows.Next() {
			var c change
			var event string
			var withLease bool
			require.NoError(t, dbRows.Scan(&c.at, &event, &withLease))
			switch event {
			case "created":
				c.keys = 1
			case "assigned":
				c.held = 1
			case "released", "lease_expired":
				c.held = -1
			case "deleted", "expired":
				c.keys = -1
				if withLease {
					c.held = -1
				}
			}
			changes = append(changes, c)
		}
		require.NoError(t, dbRows.Err())
		first := changes[0].at.Truncate(time.Hour)
		end := changes[len(changes)-1].at.Truncate(time.Hour).Add(time.Hour)

		r := do(t, "GET", long.url+"/reports/utilisation?pool=r&from="+url.QueryEscape(first.Format(time.RFC3339Nano))+
			"&to="+url.QueryEscape(end.Format(time.RFC3339Nano)), "")
		require.Equal(t, http.StatusOK, r.status, r.raw)
		var hours int
		for hour := first; hour.Before(end); hour = hour.Add(time.Hour) {
			var keySeconds, heldSeconds float64
			keys, held, at := 0, 0, hour
			for _, c := range changes {
				if c.at.Before(hour) {
					keys, held = keys+c.keys, held+c.held
					continue
				}
				if !c.at.Before(hour.Add(time.Hour)) {
					break
				}
				keySeconds += float64(keys) * c.at.Sub(at).Seconds()
				heldSeconds += float64(held) * c.at.Sub(at).Seconds()
				keys, held, at = keys+c.keys, held+c.held, c.at
			}
			keySeconds += float64(keys) * hour.Add(time.Hour).Sub(at).Seconds()
			heldSeconds += float64(held) * hour.Add(time.Hour).Sub(at).Seconds()
			row := rows(r)[hours]
			require.Equal(t, hour.UTC().Format("2006-01-02T15:04:05.000Z07:00"), row["hour"])
			require.InDelta(t, keySeconds, row["keySeconds"], 1e-6)
			require.InDelta(t, heldSeconds, row["blockedSeconds"], 1e-6)
			require.InDelta(t, heldSeconds/keySeconds, row["utilisation"], 1e-9)
			hours++
		}
		require.Len(t, rows(r), hours)
	})
}

func rows(r reply) []map[string]any {
	list := r.body["rows"].([]any)
	out := make([]map[string]any, len(list))
	for i, row := range list {
		out[i] = row.(map[string]any)
	}
	return out
}

// sums adds up the given columns over the rows of one pool, checking that
// every row is one whole hour.
func sums(t *testing.T, r reply, pool string, columns ...string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, c := range columns {
		out[c] = 0
	}
	for _, row := range rows(r) {
		if row["pool"] != pool {
			continue
		}
		hour := parseTime(t, row["hour"])
		require.Equal(t, hour.Truncate(time.Hour), hour, "rows are whole hours")
		for _, c := range columns {
			out[c] += row[c].(float64)
		}
	}
	return out
}

func pools(r reply) []string {
	var out []string
	for _, row := range rows(r) {
		if p := row["pool"].(string); !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

func parseTime(t *testing.T, v any) time.Time {
	t.Helper()
	requireTime(t, v)
	parsed, err := time.Parse(time.RFC3339Nano, v.(string))
	require.NoError(t, err)
	return parsed
}

func mean(values []float64) float64 {
	var sum float64
	for _, v := range values {
		sum += v
	}
	return sum / float64(len(values))
}

// percentile interpolates between the two nearest of the sorted values, as
// PostgreSQL's percentile_cont does.
func percentile(sorted []float64, fraction float64) float64 {
	pos := fraction * float64(len(sorted)-1)
	lower := math.Floor(pos)
	if int(lower)+1 >= len(sorted) {
		return sorted[int(lower)]
	}
	return sorted[int(lower)] + (pos-lower)*(sorted[int(lower)+1]-sorted[int(lower)])
}

// Bad report parameters answer 400 with a message that names the problem,
// and run no query: the server's database is unreachable, so any request
// that reached it would answer 503.
func TestBadReportParametersAnswer400AndRunNoQuery(t *testing.T) {
	t.Parallel()
	s := newServer(t, "postgres://postgres@127.0.0.1:1/none?sslmode=disable", options{dbTimeout: 500 * time.Millisecond})
	for _, tc := range []struct {
		path, code, detail string
	}{
		{"/reports/lease-activity?from=yesterday", "invalid_parameter", `from must be an RFC 3339 time`},
		{"/reports/lease-activity?to=2026-13-01T00:00:00Z", "invalid_parameter", `to must be an RFC 3339 time`},
		{"/reports/lease-activity?from=2026-11-02T00:00:00Z&to=2026-11-01T00:00:00Z", "invalid_report_parameters", "must be before to"},
		{"/reports/utilisation?from=2026-11-01T00:00:00Z&to=2026-11-01T00:00:00Z", "invalid_report_parameters", "must be before to"},
		{"/reports/key-activity?from=2026-10-01T00:00:00Z&to=2026-11-01T00:00:01Z", "invalid_report_parameters", "at most 744h0m0s (31 days)"},
		{"/reports/lease-durations?from=2020-01-01T00:00:00Z", "invalid_report_parameters", "at most 744h0m0s"},
		// The default start, a day before, would fall in the year -1.
		{"/reports/utilisation?to=0000-01-01T00:00:00Z", "invalid_report_parameters", "between the years 0001 and 9999"},
		{"/reports/leases?from=9999-12-31T23:00:00Z&to=9999-12-31T23:00:00-02:00", "invalid_report_parameters", "between the years 0001 and 9999"},
		{"/reports/leases?pool=", "invalid_parameter", "pool must not be empty"},
		{"/reports/leases?pool=b%21d", "invalid_parameter", "pool must be 1 to 64"},
		{"/reports/leases?limit=0", "invalid_parameter", "limit must be a whole number"},
		{"/reports/leases?limit=ten", "invalid_parameter", "limit must be a whole number"},
		{"/reports/leases?limit=10001", "invalid_report_parameters", "limit must be between 1 and 10000"},
		{"/reports/lease-activity?limit=5", "unknown_parameter", `unknown parameter "limit"; GET /reports/lease-activity takes from, to, pool`},
		{"/reports/lease-activity?form=2026-11-01T00:00:00Z", "unknown_parameter", `unknown parameter "form" (did you mean "from"?)`},
		{"/reports/lease-activity?from=2026-11-01T00:00:00Z&from=2026-11-02T00:00:00Z", "invalid_parameter", "from is given 2 times"},
	} {
		r := do(t, "GET", s.url+tc.path, "")
		requireProblem(t, r, http.StatusBadRequest, tc.code)
		require.Contains(t, r.str("detail"), tc.detail, tc.path)
	}
	// The same requests with good parameters do reach the database.
	for _, path := range []string{"/reports/lease-activity", "/reports/leases?limit=5&pool=p", "/stats",
		"/reports/utilisation?from=2026-10-01T00:00:00Z&to=2026-11-01T00:00:00Z"} {
		requireProblem(t, do(t, "GET", s.url+path, ""), http.StatusServiceUnavailable, "database_unavailable")
	}
}

// GET /reports lists the reports, and each answers with no rows on an empty
// history.
func TestReportCatalogue(t *testing.T) {
	t.Parallel()
	s := newServer(t, testdb.New(t), options{})
	list := do(t, "GET", s.url+"/reports", "")
	require.Equal(t, http.StatusOK, list.status, list.raw)
	var paths []string
	for _, entry := range list.body["reports"].([]any) {
		paths = append(paths, entry.(map[string]any)["path"].(string))
	}
	require.Equal(t, []string{"/reports/leases", "/reports/lease-activity", "/reports/lease-durations",
		"/reports/key-activity", "/reports/utilisation", "/reports/key-cooldowns"}, paths)
	for _, path := range paths {
		r := do(t, "GET", s.url+path, "")
		require.Equal(t, http.StatusOK, r.status, r.raw)
		require.Equal(t, []any{}, r.body["rows"], path)
		require.Nil(t, r.body["pool"])
		from, to := parseTime(t, r.body["from"]), parseTime(t, r.body["to"])
		require.Equal(t, 24*time.Hour, to.Sub(from), "the default range is the last day")
	}
	empty := do(t, "GET", s.url+"/stats", "")
	require.Equal(t, []any{}, empty.body["pools"])
	requireProblem(t, do(t, "POST", s.url+"/reports/leases", ""), http.StatusMethodNotAllowed, "method_not_allowed")
	requireProblem(t, do(t, "GET", s.url+"/reports/nope", ""), http.StatusNotFound, "route_not_found")
}
