package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/buildinfo"
	"github.com/tokenorchestrator/tokenorchestrator/internal/metrics"
	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
	"github.com/tokenorchestrator/tokenorchestrator/internal/sweeper"
)

func newMetrics(t *testing.T, cfg metrics.Config) *metrics.Metrics {
	t.Helper()
	cfg.Logger = slog.New(slog.DiscardHandler)
	return metrics.NewWithConfig(cfg)
}

// Pool names are the clients' choice: past the cap, new pools are counted
// under one label value, and the pools seen first keep theirs.
func TestPoolLabelsAreCapped(t *testing.T) {
	t.Parallel()
	m := newMetrics(t, metrics.Config{MaxPools: 3})
	for i := range 10 {
		m.ObserveClaim(fmt.Sprintf("p%d", i))
	}
	m.ObserveClaim("p0")
	m.ObserveNoFreeKey("p9")
	m.ObserveCooldown("p1")
	m.ObserveLeasesEnded([]store.EndedLease{{Pool: "p2", Duration: time.Second}, {Pool: "p7", Expired: true, Duration: time.Minute}})

	expected := `
# HELP tokenorchestrator_claims_total Keys claimed through GET /keys, by pool (a repeated idempotent claim is not counted again).
# TYPE tokenorchestrator_claims_total counter
tokenorchestrator_claims_total{pool="_other"} 7
tokenorchestrator_claims_total{pool="p0"} 2
tokenorchestrator_claims_total{pool="p1"} 1
tokenorchestrator_claims_total{pool="p2"} 1
`
	require.NoError(t, testutil.GatherAndCompare(m.Registry(), strings.NewReader(expected), "tokenorchestrator_claims_total"))
	for name, want := range map[string]string{
		"tokenorchestrator_no_free_key_total":    `tokenorchestrator_no_free_key_total{pool="_other"} 1`,
		"tokenorchestrator_cooldowns_total":      `tokenorchestrator_cooldowns_total{pool="p1"} 1`,
		"tokenorchestrator_releases_total":       `tokenorchestrator_releases_total{pool="p2"} 1`,
		"tokenorchestrator_lease_expiries_total": `tokenorchestrator_lease_expiries_total{pool="_other"} 1`,
	} {
		require.Contains(t, gather(t, m, name), want)
	}
	// Five pools more make no new series.
	for i := 10; i < 15; i++ {
		m.ObserveClaim(fmt.Sprintf("p%d", i))
	}
	n, err := testutil.GatherAndCount(m.Registry(), "tokenorchestrator_claims_total")
	require.NoError(t, err)
	require.Equal(t, 4, n)
}

// Pools read from the database past the cap are summed under "_other":
// two series with the same labels would make the scrape fail.
func TestPoolGaugesPastTheCapAreSummed(t *testing.T) {
	t.Parallel()
	counts := []store.PoolCounts{{Pool: "a", Keys: 3, Seats: 3, Held: 1}, {Pool: "b", Keys: 5, Seats: 5, Held: 2}, {Pool: "c", Keys: 5, Seats: 7, Held: 3}}
	m := newMetrics(t, metrics.Config{MaxPools: 1, Counts: func(context.Context) ([]store.PoolCounts, error) { return counts, nil }})
	expected := `
# HELP tokenorchestrator_pool_keys Seats of the pool's keys by state: free, or blocked (held under a lease); a key of one seat counts once. Database-wide: see docs/operations.md on summing across replicas.
# TYPE tokenorchestrator_pool_keys gauge
tokenorchestrator_pool_keys{pool="_other",state="blocked"} 5
tokenorchestrator_pool_keys{pool="_other",state="free"} 7
tokenorchestrator_pool_keys{pool="a",state="blocked"} 1
tokenorchestrator_pool_keys{pool="a",state="free"} 2
`
	require.NoError(t, testutil.GatherAndCompare(m.Registry(), strings.NewReader(expected), "tokenorchestrator_pool_keys"))
}

// With leader election, the database-wide gauges come from the leader
// only, so that a sum across replicas counts them once.
func TestSharedGaugesOnlyWhileExporting(t *testing.T) {
	t.Parallel()
	counts := func(context.Context) ([]store.PoolCounts, error) {
		return []store.PoolCounts{{Pool: "a", Keys: 3, Held: 1}}, nil
	}
	m := newMetrics(t, metrics.Config{Counts: counts})
	m.WatchHorizon(func(context.Context) (store.Horizon, error) { return store.Horizon{SnapshotAge: 3 * time.Second}, nil },
		slog.New(slog.DiscardHandler))
	m.WatchStandby(func(context.Context) (store.StandbyStatus, error) {
		return store.StandbyStatus{InRecovery: true, LagKnown: true, ReplayLag: time.Second}, nil
	}, slog.New(slog.DiscardHandler))
	shared := []string{"tokenorchestrator_pool_keys", "tokenorchestrator_db_oldest_snapshot_age_seconds",
		"tokenorchestrator_db_xmin_age_transactions", "tokenorchestrator_report_standby_replay_lag_seconds"}
	count := func() int {
		n, err := testutil.GatherAndCount(m.Registry(), shared...)
		require.NoError(t, err)
		return n
	}
	require.Equal(t, 5, count(), "every replica exports them by default")

	leading := false
	m.ExportSharedWhile(func() bool { return leading })
	require.Zero(t, count(), "a replica that does not lead exports none")
	require.Contains(t, gather(t, m, "tokenorchestrator_report_standby_up"), "tokenorchestrator_report_standby_up 1",
		"whether the standby answers this replica is its own view")
	leading = true
	require.Equal(t, 5, count())
}

func TestCooldownsAreCountedPerPool(t *testing.T) {
	t.Parallel()
	m := newMetrics(t, metrics.Config{})
	m.ObserveCooldown("slow")
	m.ObserveCooldown("slow")
	m.ObserveCooldown("fast")
	text := gather(t, m, "tokenorchestrator_cooldowns_total")
	require.Contains(t, text, `tokenorchestrator_cooldowns_total{pool="slow"} 2`)
	require.Contains(t, text, `tokenorchestrator_cooldowns_total{pool="fast"} 1`)
}

// Each service of the background job has its passes, failures, rows and
// pass durations under its own service label, every one at zero from the
// start; the counters of what the passes did keep their names.
func TestSweepsAreCountedPerService(t *testing.T) {
	t.Parallel()
	m := newMetrics(t, metrics.Config{})
	text := gather(t, m, "tokenorchestrator_sweeper_passes_total", "tokenorchestrator_sweeper_errors_total")
	for _, service := range sweeper.ServiceNames() {
		require.Contains(t, text, fmt.Sprintf(`tokenorchestrator_sweeper_passes_total{service=%q} 0`, service))
		require.Contains(t, text, fmt.Sprintf(`tokenorchestrator_sweeper_errors_total{service=%q} 0`, service))
	}

	m.ObserveSweep(sweeper.Pass{Service: sweeper.ServiceLeases, Duration: 20 * time.Millisecond, Result: sweeper.Result{LeasesReleased: 7}})
	m.ObserveSweep(sweeper.Pass{Service: sweeper.ServiceLeases, Duration: 30 * time.Millisecond, Result: sweeper.Result{LeasesReleased: 1}})
	m.ObserveSweep(sweeper.Pass{Service: sweeper.ServicePoolCounts, Duration: time.Millisecond,
		Result: sweeper.Result{CountChangesFolded: 4, EmptyPoolsRemoved: 1, Err: errors.New("lost")}})
	m.ObserveSweep(sweeper.Pass{Service: sweeper.ServiceHistoryRetention, Result: sweeper.Result{HistoryDeleted: 1000}})
	text = gather(t, m, "tokenorchestrator_sweeper_passes_total", "tokenorchestrator_sweeper_errors_total",
		"tokenorchestrator_sweeper_rows_total", "tokenorchestrator_sweeper_pass_duration_seconds",
		"tokenorchestrator_sweeper_leases_released_total", "tokenorchestrator_sweeper_history_deleted_total")
	for _, want := range []string{
		`tokenorchestrator_sweeper_passes_total{service="leases"} 2`,
		`tokenorchestrator_sweeper_passes_total{service="pool_counts"} 1`,
		`tokenorchestrator_sweeper_passes_total{service="keys"} 0`,
		`tokenorchestrator_sweeper_errors_total{service="leases"} 0`,
		`tokenorchestrator_sweeper_errors_total{service="pool_counts"} 1`,
		`tokenorchestrator_sweeper_rows_total{service="leases"} 8`,
		`tokenorchestrator_sweeper_rows_total{service="pool_counts"} 5`,
		`tokenorchestrator_sweeper_rows_total{service="history_retention"} 1000`,
		`tokenorchestrator_sweeper_pass_duration_seconds_sum{service="leases"} 0.05`,
		`tokenorchestrator_sweeper_pass_duration_seconds_count{service="leases"} 2`,
		"tokenorchestrator_sweeper_leases_released_total 8",
		"tokenorchestrator_sweeper_history_deleted_total 1000",
	} {
		require.Contains(t, text, want)
	}
}

func TestBuildInfo(t *testing.T) {
	t.Parallel()
	m := newMetrics(t, metrics.Config{})
	want := fmt.Sprintf(`tokenorchestrator_build_info{goversion=%q,revision=%q,version=%q} 1`,
		buildinfo.GoVersion(), buildinfo.Revision(), buildinfo.Version())
	require.Contains(t, gather(t, m, "tokenorchestrator_build_info"), want)
}

func TestLeaseDurationsAndWaits(t *testing.T) {
	t.Parallel()
	m := newMetrics(t, metrics.Config{})
	m.ObserveLeasesEnded([]store.EndedLease{
		{Pool: "a", Duration: 2 * time.Second},
		{Pool: "a", Duration: 3 * time.Second},
		{Pool: "a", Expired: true, Duration: time.Minute},
	})
	m.ObserveWait(metrics.WaitClaimed, 250*time.Millisecond)
	text := gather(t, m, "tokenorchestrator_lease_duration_seconds", "tokenorchestrator_claim_wait_seconds")
	require.Contains(t, text, `tokenorchestrator_lease_duration_seconds_sum{ended="released"} 5`)
	require.Contains(t, text, `tokenorchestrator_lease_duration_seconds_count{ended="expired"} 1`)
	require.Contains(t, text, `tokenorchestrator_claim_wait_seconds_sum{outcome="claimed"} 0.25`)
}

// gather returns the named metrics in the text format.
func gather(t *testing.T, m *metrics.Metrics, names ...string) string {
	t.Helper()
	families, err := m.Registry().Gather()
	require.NoError(t, err)
	var b strings.Builder
	for _, f := range families {
		if slices.Contains(names, f.GetName()) {
			_, err := expfmt.MetricFamilyToText(&b, f)
			require.NoError(t, err)
		}
	}
	return b.String()
}

// Each connection pool watched, the primary's and the standby's, is
// exported under its own database label, from one collector.
func TestEveryWatchedPoolIsExported(t *testing.T) {
	m := metrics.New(nil, slog.Default())
	for _, database := range []string{"primary", "reports"} {
		// No connection is made until one is asked for.
		pool, err := pgxpool.New(context.Background(), "postgres://nobody@127.0.0.1:1/none")
		require.NoError(t, err)
		t.Cleanup(pool.Close)
		m.WatchPool(database, pool)
	}
	text := gather(t, m, "tokenorchestrator_db_pool_conns")
	require.Contains(t, text, `tokenorchestrator_db_pool_conns{database="primary",state="max"}`)
	require.Contains(t, text, `tokenorchestrator_db_pool_conns{database="reports",state="max"}`)
}

// The replication mode is one series per mode, 1 for the current one; the
// standbys and the settings come with it, as database-wide gauges.
func TestReplicationModeIsExported(t *testing.T) {
	t.Parallel()
	m := newMetrics(t, metrics.Config{})
	m.WatchReplication(func(context.Context) (store.ReplicationState, error) {
		return store.ReplicationState{SynchronousCommit: "on", Async: 1}, nil
	}, slog.New(slog.DiscardHandler))
	out := gather(t, m, "tokenorchestrator_db_replication_mode", "tokenorchestrator_db_standbys", "tokenorchestrator_db_replication_settings")
	require.Contains(t, out, `tokenorchestrator_db_replication_mode{mode="asynchronous"} 1`)
	require.Contains(t, out, `tokenorchestrator_db_replication_mode{mode="synchronous"} 0`)
	require.Contains(t, out, `tokenorchestrator_db_standbys{sync_state="async"} 1`)
	require.Contains(t, out, `tokenorchestrator_db_replication_settings{synchronous_commit="on",synchronous_standby_names=""} 1`)

	m.ExportSharedWhile(func() bool { return false })
	require.Empty(t, gather(t, m, "tokenorchestrator_db_replication_mode"), "a replica that does not lead exports none")
}
