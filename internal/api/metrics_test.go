package api_test

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/api"
	"github.com/tokenorchestrator/tokenorchestrator/internal/metrics"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

// Anyone who reaches the server, token or not, chooses the method and the
// path of a request. Neither may become a label value as it is, or a
// client could make the request metrics grow without end: methods the API
// does not know are counted as "other", paths no route matches as
// "unmatched".
func TestMetricLabelsAreBounded(t *testing.T) {
	t.Parallel()
	s := newServer(t, testdb.New(t), options{auth: strictAuth})

	routes := map[string]bool{"unmatched": true}
	a := api.New(api.Config{Metrics: metrics.New(nil, slog.New(slog.DiscardHandler))})
	require.NoError(t, chi.Walk(a.Routes(), func(_, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		routes[route] = true
		return nil
	}))
	methods := map[string]bool{"other": true}
	for _, m := range []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE"} {
		methods[m] = true
	}

	// Made-up methods on known and unknown paths, known methods on made-up
	// paths, none with a token: what a scanner or an attacker sends.
	madeUp := func(round int) {
		for i := range 25 {
			name := fmt.Sprintf("FOO%d_%d", round, i)
			do(t, name, s.url+"/keys", "")
			do(t, name, s.url+"/keys/"+unknownID, "")
			do(t, name, s.url+"/"+strings.ToLower(name), "")
			do(t, "GET", fmt.Sprintf("%s/made-up/%d/%d", s.url, round, i), "")
			do(t, "GET", s.url+"/keys/"+strings.ToLower(name)+"/keepalive/extra", "")
		}
	}
	madeUp(1)
	first := requestSeries(t, s.url)
	for _, series := range first {
		require.True(t, methods[series["method"]], "method label %q is not one of a fixed set", series["method"])
		require.True(t, routes[series["route"]], "route label %q is no route of the router", series["route"])
	}
	madeUp(2)
	second := requestSeries(t, s.url)
	require.Equal(t, len(first), len(second), "more made-up requests made more series: %v", second)
}

// requestSeries scrapes the metrics with the admin token and returns the
// labels of every series of the request counter and of the latency
// histogram's count, but those of the scrapes themselves: the first
// scrape is counted only after it has been answered.
func requestSeries(t *testing.T, url string) []map[string]string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url+"/metrics", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	line := regexp.MustCompile(`^(tokenorchestrator_http_requests_total|tokenorchestrator_http_request_duration_seconds_count)\{(.*)\} `)
	label := regexp.MustCompile(`(\w+)="((?:[^"\\]|\\.)*)"`)
	var series []map[string]string
	for _, l := range strings.Split(string(raw), "\n") {
		m := line.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		labels := map[string]string{"__name__": m[1]}
		for _, kv := range label.FindAllStringSubmatch(m[2], -1) {
			labels[kv[1]] = kv[2]
		}
		if labels["route"] != "/metrics" {
			series = append(series, labels)
		}
	}
	require.NotEmpty(t, series, "the request metrics are exposed:\n%s", raw)
	return series
}

// The per-pool counters count what the requests and the background job
// did, pool by pool, and the histograms what the leases and waits lasted.
func TestPoolCountersFollowTheRequests(t *testing.T) {
	t.Parallel()
	// Long enough that the requests below, on a busy machine, all run
	// before the first leases end: the one released must still be held.
	const leaseTTL = 2 * time.Second
	s := newServer(t, testdb.New(t), options{leaseTTL: leaseTTL, sweep: 50 * time.Millisecond})
	require.Equal(t, http.StatusCreated, do(t, "POST", s.url+"/keys?pool=a", `{"count": 2}`).status)
	require.Equal(t, http.StatusCreated, do(t, "POST", s.url+"/keys?pool=b", `{"count": 1}`).status)
	held := do(t, "GET", s.url+"/keys?pool=a", "")
	require.Equal(t, http.StatusOK, held.status)
	require.Equal(t, http.StatusOK, do(t, "GET", s.url+"/keys?pool=a", "").status)
	require.Equal(t, http.StatusNotFound, do(t, "GET", s.url+"/keys?pool=a&wait=20ms", "").status)
	require.Equal(t, http.StatusOK, do(t, "GET", s.url+"/keys?pool=b&wait=1s", "").status)
	// A pool without keys is no exhausted pool: it is not counted as one,
	// and costs no label of its own.
	require.Equal(t, http.StatusNotFound, do(t, "GET", s.url+"/keys?pool=empty", "").status)
	require.Equal(t, http.StatusNotFound, do(t, "GET", s.url+"/keys?pool=empty&wait=1s", "").status)
	require.Equal(t, http.StatusOK, do(t, "PUT", s.url+"/keys/"+held.str("keyId")+"?lease="+held.str("leaseToken"), "").status)
	// A second release of the now free key ends no lease.
	require.Equal(t, http.StatusOK, do(t, "PUT", s.url+"/keys/"+held.str("keyId"), "").status)

	var text string
	require.Eventually(t, func() bool {
		text = scrape(t, s.url)
		// The other key of a and the key of b expire, freed by the job.
		return strings.Contains(text, `tokenorchestrator_lease_expiries_total{pool="a"} 1`) &&
			strings.Contains(text, `tokenorchestrator_lease_expiries_total{pool="b"} 1`)
	}, 10*time.Second, 20*time.Millisecond)
	for _, want := range []string{
		`tokenorchestrator_claims_total{pool="a"} 2`,
		`tokenorchestrator_claims_total{pool="b"} 1`,
		`tokenorchestrator_no_free_key_total{pool="a"} 1`,
		`tokenorchestrator_releases_total{pool="a"} 1`,
		`tokenorchestrator_claim_wait_seconds_count{outcome="no_free_key"} 1`,
		`tokenorchestrator_claim_wait_seconds_count{outcome="claimed"} 1`,
		`tokenorchestrator_claim_wait_seconds_count{outcome="unknown_pool"} 1`,
		`tokenorchestrator_lease_duration_seconds_count{ended="released"} 1`,
		`tokenorchestrator_lease_duration_seconds_count{ended="expired"} 2`,
		`tokenorchestrator_waiters 0`,
	} {
		require.Contains(t, text, want)
	}
	require.NotContains(t, text, `tokenorchestrator_releases_total{pool="b"}`)
	require.NotContains(t, text, `pool="empty"`)
	// An expired lease lasted its whole LEASE_TTL by the database clock.
	sum := regexp.MustCompile(`tokenorchestrator_lease_duration_seconds_sum\{ended="expired"\} ([0-9.e+-]+)`).FindStringSubmatch(text)
	require.NotNil(t, sum, text)
	seconds, err := strconv.ParseFloat(sum[1], 64)
	require.NoError(t, err)
	require.InDelta(t, 2*leaseTTL.Seconds(), seconds, 0.05, "two leases of LEASE_TTL")
}

// A release with a cooldown counts as a release and as a cooldown of its
// pool; one without counts as a release only.
func TestCooldownsAreCountedPerPool(t *testing.T) {
	t.Parallel()
	s := newServer(t, testdb.New(t), options{})
	require.Equal(t, http.StatusCreated, do(t, "POST", s.url+"/keys?pool=c", `{"count": 2}`).status)
	cooled := do(t, "GET", s.url+"/keys?pool=c", "")
	plain := do(t, "GET", s.url+"/keys?pool=c", "")
	require.Equal(t, http.StatusOK, cooled.status)
	require.Equal(t, http.StatusOK, plain.status)
	require.Equal(t, http.StatusOK, do(t, "PUT", s.url+"/keys/"+cooled.str("keyId")+"?lease="+cooled.str("leaseToken")+"&cooldown=30s", "").status)
	require.Equal(t, http.StatusOK, do(t, "PUT", s.url+"/keys/"+plain.str("keyId")+"?lease="+plain.str("leaseToken"), "").status)
	text := scrape(t, s.url)
	require.Contains(t, text, `tokenorchestrator_cooldowns_total{pool="c"} 1`+"\n")
	require.Contains(t, text, `tokenorchestrator_releases_total{pool="c"} 2`+"\n")
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(raw)
}
