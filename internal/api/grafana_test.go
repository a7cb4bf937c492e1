package api_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

const dashboardFile = "../../deploy/grafana/token-orchestrator.json"

// Every metric the Grafana dashboard queries exists: after a short
// scenario that exercises them, each name in each expression is a series
// of the server's registry (histograms with their _bucket, _sum and _count
// series). A renamed metric, or a typo in the dashboard, fails here.
func TestGrafanaDashboardQueriesExistingMetrics(t *testing.T) {
	t.Parallel()
	queries := dashboardQueries(t)
	require.NotEmpty(t, queries)

	s := newServer(t, testdb.New(t), options{leaseTTL: 300 * time.Millisecond, sweep: 50 * time.Millisecond})
	logger := slog.New(slog.DiscardHandler)
	s.metrics.WatchHorizon(s.store.CleanupHorizon, logger)
	// A standby is another test's business (test/faults); its lag
	// here is a fixed one.
	s.metrics.WatchStandby(func(context.Context) (store.StandbyStatus, error) {
		return store.StandbyStatus{InRecovery: true, LagKnown: true, ReplayLag: time.Second}, nil
	}, logger)

	require.Equal(t, http.StatusCreated, do(t, "POST", s.url+"/keys?pool=g", `{"count": 2}`).status)
	first := do(t, "GET", s.url+"/keys?pool=g", "")
	require.Equal(t, http.StatusOK, first.status)
	require.Equal(t, http.StatusOK, do(t, "GET", s.url+"/keys?pool=g", "").status)
	require.Equal(t, http.StatusNotFound, do(t, "GET", s.url+"/keys?pool=g", "").status)
	require.Equal(t, http.StatusNotFound, do(t, "GET", s.url+"/keys?pool=g&wait=50ms", "").status)
	require.Equal(t, http.StatusOK, do(t, "PUT", s.url+"/keys/"+first.str("keyId")+"?lease="+first.str("leaseToken"), "").status)
	// Cooldowns are given by the release that asks for one; the counter is
	// what this test needs.
	s.metrics.ObserveCooldown("g")

	var available map[string]bool
	require.Eventually(t, func() bool {
		available = registeredSeries(t, s)
		// The second lease ends by itself, freed by the background job.
		return available["tokenorchestrator_lease_expiries_total"]
	}, 10*time.Second, 20*time.Millisecond, "no lease expired")

	for _, q := range queries {
		names := metricNames(q)
		require.NotEmpty(t, names, "query %q names no metric of the server", q)
		for _, name := range names {
			require.True(t, available[name], "query %q: %s is no metric of the server; it has:\n%s", q, name, strings.Join(sortedKeys(available), "\n"))
		}
	}
}

// dashboardQueries returns every expr of the dashboard's panels and the
// queries of its variables.
func dashboardQueries(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile(dashboardFile)
	require.NoError(t, err)
	var dashboard any
	require.NoError(t, json.Unmarshal(raw, &dashboard))
	var queries []string
	var walk func(v any, key string)
	walk = func(v any, key string) {
		switch v := v.(type) {
		case map[string]any:
			for k, child := range v {
				walk(child, k)
			}
		case []any:
			for _, child := range v {
				walk(child, key)
			}
		case string:
			if key == "expr" || key == "definition" {
				queries = append(queries, v)
			}
		}
	}
	walk(dashboard, "")
	return queries
}

var (
	quoted     = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	identifier = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
)

// metricNames returns the names of the server's metrics that a PromQL
// query reads: its identifiers outside label values that carry the
// server's prefix.
func metricNames(query string) []string {
	var names []string
	for _, id := range identifier.FindAllString(quoted.ReplaceAllString(query, `""`), -1) {
		if strings.HasPrefix(id, "tokenorchestrator_") && !slices.Contains(names, id) {
			names = append(names, id)
		}
	}
	return names
}

// registeredSeries returns the names the registry exports now, a
// histogram's as its series are named.
func registeredSeries(t *testing.T, s *testServer) map[string]bool {
	t.Helper()
	families, err := s.metrics.Registry().Gather()
	require.NoError(t, err)
	names := map[string]bool{}
	for _, f := range families {
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				names[f.GetName()+suffix] = true
			}
		case dto.MetricType_SUMMARY:
			names[f.GetName()], names[f.GetName()+"_sum"], names[f.GetName()+"_count"] = true, true, true
		default:
			names[f.GetName()] = true
		}
	}
	return names
}

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func TestMetricNamesOfAQuery(t *testing.T) {
	t.Parallel()
	require.Equal(t, []string{"tokenorchestrator_a_bucket", "tokenorchestrator_b_total"}, metricNames(
		`histogram_quantile(0.9, sum by (le) (rate(tokenorchestrator_a_bucket{pool="tokenorchestrator_not_a_metric"}[$__rate_interval]))) / on(pool) tokenorchestrator_b_total`))
}
