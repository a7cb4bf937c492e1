package faults

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/config"
	"github.com/tokenorchestrator/tokenorchestrator/internal/pgembed"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/servertest"
)

// Reports read from a streaming hot standby of the primary: a primary and a
// standby made from it with pg_basebackup, each a PostgreSQL of its own.
// Once the standby has replayed the claims made on the primary, the reports
// it answers have the primary's figures and say where they were read;
// stopped, it takes reports down (503, or the primary with REPORT_FALLBACK)
// and nothing else: claims and /stats go on as before.
func TestReportsReadFromAStreamingStandby(t *testing.T) {
	if err := pgembed.Installed(); err != nil {
		t.Skipf("needs the PostgreSQL server binaries (make test installs them): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Not t.TempDir(): the servers may run as another user than root, and
	// must reach the directory.
	dir, err := os.MkdirTemp("", "standby-test-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o755))
	t.Cleanup(func() { os.RemoveAll(dir) })
	fast := map[string]string{"fsync": "off"}

	primary, err := pgembed.Start(ctx, pgembed.Config{DataDir: filepath.Join(dir, "primary"), Settings: fast})
	require.NoError(t, err)
	t.Cleanup(func() { _ = primary.Stop() })
	standby, err := pgembed.Start(ctx, pgembed.Config{DataDir: filepath.Join(dir, "standby"), StandbyOf: primary.URL(), Settings: fast})
	require.NoError(t, err)
	standbyStopped := false
	t.Cleanup(func() {
		if !standbyStopped {
			_ = standby.Stop()
		}
	})

	withStandby := func(fallback bool) func(*config.Config) {
		return func(c *config.Config) {
			c.ReportDatabaseURL = standby.URL()
			c.ReportFallback = fallback
			c.ReportMaxLag = 30 * time.Second
		}
	}
	// Replicas of one service on the primary: one reads reports from the
	// standby, one falls back to the primary when it must, one has no
	// standby at all.
	onStandby := servertest.Start(t, servertest.Options{DatabaseURL: primary.URL(), Configure: withStandby(false)})
	withFallback := servertest.Start(t, servertest.Options{DatabaseURL: primary.URL(), Configure: withStandby(true)})
	onPrimary := servertest.Start(t, servertest.Options{DatabaseURL: primary.URL()})

	created := call("POST", onStandby.URL+"/keys?pool=standby", `{"count": 10}`)
	require.Equal(t, http.StatusCreated, created.status, created.body)
	started := time.Now()
	cycles := func(n int) {
		t.Helper()
		for range n {
			claimed := call("GET", onStandby.URL+"/keys?pool=standby", "")
			require.Equal(t, http.StatusOK, claimed.status, claimed.body)
			token := claimed.str("leaseToken")
			released := call("PUT", onStandby.URL+"/keys/"+claimed.str("keyId")+"?lease="+token, "")
			require.Equal(t, http.StatusOK, released.status, released.body)
		}
	}
	cycles(40)

	waitForReplay(ctx, t, primary.URL(), standby.URL())
	query := fmt.Sprintf("?pool=standby&from=%s&to=%s", started.Add(-time.Hour).UTC().Format(time.RFC3339),
		time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	for _, report := range []string{"lease-activity", "leases", "key-activity"} {
		fromStandby := call("GET", onStandby.URL+"/reports/"+report+query, "")
		require.Equal(t, http.StatusOK, fromStandby.status, fromStandby.body)
		require.Equal(t, "standby", fromStandby.header.Get("X-Report-Source"), report)
		require.Equal(t, "standby", fromStandby.str("source"), report)
		require.NotEmpty(t, fromStandby.header.Get("X-Replay-Lag-Seconds"), report)
		fromPrimary := call("GET", onPrimary.URL+"/reports/"+report+query, "")
		require.Equal(t, http.StatusOK, fromPrimary.status, fromPrimary.body)
		require.Equal(t, "primary", fromPrimary.header.Get("X-Report-Source"), report)
		require.Equal(t, fromPrimary.body["rows"], fromStandby.body["rows"], "%s: the standby's figures are the primary's", report)
	}
	activity := call("GET", onStandby.URL+"/reports/lease-activity"+query, "")
	require.EqualValues(t, 40, sum(activity, "assigned"))
	require.EqualValues(t, 40, sum(activity, "released"))
	charts := call("GET", onStandby.URL+"/activity?pool=standby&minutes=5", "")
	require.Equal(t, http.StatusOK, charts.status, charts.body)
	require.Equal(t, "standby", charts.str("source"))
	metrics := scrape(t, onStandby.URL)
	require.Contains(t, metrics, "tokenorchestrator_report_standby_up 1")
	require.Contains(t, metrics, "tokenorchestrator_report_standby_replay_lag_seconds ")

	// A report's snapshot held on the standby does not hold back the
	// primary's cleanup (hot_standby_feedback is off, the default): the
	// versions the cycles leave in key_state meanwhile can all be removed.
	report, err := pgx.Connect(ctx, standby.URL())
	require.NoError(t, err)
	defer report.Close(context.Background())
	held, err := report.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	require.NoError(t, err)
	var events int64
	require.NoError(t, held.QueryRow(ctx, "SELECT count(*) FROM key_events").Scan(&events))
	cycles(20)
	cleanedUp(ctx, t, primary.URL(), "key_state")
	require.NoError(t, held.Rollback(ctx))

	standbyStopped = true
	require.NoError(t, standby.Stop())
	cycles(20) // the hot path does not notice
	stats := call("GET", onStandby.URL+"/stats", "")
	require.Equal(t, http.StatusOK, stats.status, stats.body)
	down := call("GET", onStandby.URL+"/reports/lease-activity"+query, "")
	require.Equal(t, http.StatusServiceUnavailable, down.status, down.body)
	require.Equal(t, "reports_unavailable", down.str("code"))
	require.NotEmpty(t, down.header.Get("Retry-After"))
	chartsDown := call("GET", onStandby.URL+"/activity/lease-durations?pool=standby", "")
	require.Equal(t, http.StatusServiceUnavailable, chartsDown.status, chartsDown.body)
	require.Contains(t, scrape(t, onStandby.URL), "tokenorchestrator_report_standby_up 0")

	fellBack := call("GET", withFallback.URL+"/reports/lease-activity"+query, "")
	require.Equal(t, http.StatusOK, fellBack.status, fellBack.body)
	require.Equal(t, "primary", fellBack.header.Get("X-Report-Source"))
	require.EqualValues(t, 80, sum(fellBack, "assigned"), "read from the primary: every claim")
}

// sum adds up a column of a report's rows (an hourly report has a row per
// hour, and the test may straddle two).
func sum(report answer, column string) float64 {
	total := 0.0
	rows, _ := report.body["rows"].([]any)
	for _, row := range rows {
		total += row.(map[string]any)[column].(float64)
	}
	return total
}

// cleanedUp vacuums the table on the primary until it leaves no dead row
// version behind, which it must leave while something may still see them.
// A statement of the replicas running at that moment may, so it tries
// again for a few seconds before it fails the test.
func cleanedUp(ctx context.Context, t *testing.T, url, table string) {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err = conn.Exec(ctx, "VACUUM "+table)
		require.NoError(t, err)
		var dead int64
		require.NoError(t, conn.QueryRow(ctx, "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = $1", table).Scan(&dead))
		if dead == 0 {
			return
		}
		require.True(t, time.Now().Before(deadline), "VACUUM still leaves %d dead versions in %s: something holds back cleanup", dead, table)
		time.Sleep(50 * time.Millisecond)
	}
}

// waitForReplay waits until the standby has replayed everything the
// primary had written when it was called.
func waitForReplay(ctx context.Context, t *testing.T, primaryURL, standbyURL string) {
	t.Helper()
	p, err := pgx.Connect(ctx, primaryURL)
	require.NoError(t, err)
	defer p.Close(ctx)
	var lsn string
	require.NoError(t, p.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsn))
	s, err := pgx.Connect(ctx, standbyURL)
	require.NoError(t, err)
	defer s.Close(ctx)
	for {
		var replayed bool
		require.NoError(t, s.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", lsn).Scan(&replayed))
		if replayed {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the standby did not replay up to %s in time", lsn)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := httpClient.Get(url + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(raw)
}
