package dbsqlc

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

// historyLoad writes 1,003,000 history rows over the last 30 days: 1,000
// keys in four pools, each created 30 days ago and then claimed 334 times,
// one lease every 129 minutes (the last ending a few minutes ago) lasting 1
// to 60 minutes, with 0 to 2
// keep-alives (1 on average); a quarter of the leases are ended by the job,
// the rest released. The rows are written in time order, as the service
// appends them, and the keys exist, so that the live counts agree with the
// history.
const historyLoad = `
INSERT INTO keys (pool, expires_at)
SELECT 'pool-' || n % 4, now() + interval '1 year' FROM generate_series(0, 999) AS n;

CREATE TEMPORARY TABLE numbered AS SELECT id, pool, row_number() OVER (ORDER BY id) AS n FROM keys;

INSERT INTO key_events (at, key_id, pool, event)
SELECT now() - interval '30 days', id, pool, 'created' FROM numbered;

INSERT INTO key_events (at, key_id, pool, event, lease_token)
SELECT l.started_at + l.duration * s.i / (l.keep_alives + 1), l.id, l.pool,
       CASE WHEN s.i = 0 THEN 'assigned'
            WHEN s.i <= l.keep_alives THEN 'kept_alive'
            WHEN l.vanished THEN 'lease_expired'
            ELSE 'released' END,
       l.token
FROM (
    SELECT k.id, k.pool, k.n * 1000 + j AS token,
           now() - interval '719 hours' + j * interval '129 minutes' + k.n * interval '7 seconds' AS started_at,
           (60 + (k.n * 7919 + j * 104729) % 3540) * interval '1 second' AS duration,
           ((k.n + j) % 3)::int AS keep_alives,
           (k.n + j) % 4 = 0 AS vanished
    FROM numbered AS k CROSS JOIN generate_series(0, 333) AS j
) AS l
CROSS JOIN LATERAL generate_series(0, l.keep_alives + 1) AS s (i)
ORDER BY 1;
`

// BenchmarkReports times every report query on a history of a million rows,
// folded into the rollups (make bench-reports). Each sub-benchmark first logs the statement's
// EXPLAIN (ANALYZE, BUFFERS) summary, then times it through pgx. The last
// one deletes batches of the oldest history, as retention does.
func BenchmarkReports(b *testing.B) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, testdb.New(b))
	require.NoError(b, err)
	defer conn.Close(ctx)
	start := time.Now()
	_, err = conn.Exec(ctx, historyLoad)
	require.NoError(b, err)
	foldHistory(b, conn)
	_, err = conn.Exec(ctx, "VACUUM ANALYZE")
	require.NoError(b, err)
	var rows int64
	require.NoError(b, conn.QueryRow(ctx, "SELECT count(*) FROM key_events").Scan(&rows))
	require.GreaterOrEqual(b, rows, int64(1_000_000))
	// On stdout: a parent benchmark's log is not shown.
	fmt.Printf("history: %d rows, loaded in %s\n", rows, time.Since(start).Round(time.Second))

	var now time.Time
	require.NoError(b, conn.QueryRow(ctx, "SELECT now()").Scan(&now))
	day, month := now.Add(-24*time.Hour), now.Add(-31*24*time.Hour)
	onePool := "pool-1"
	q := New(conn)
	cases := []struct {
		name string
		sql  string
		args []any
		run  func() error
	}{
		{"leases/one_pool/day", keyLeasesList, []any{onePool, day, now, 1001}, func() error {
			_, err := q.KeyLeasesList(ctx, KeyLeasesListParams{RangeFrom: day, RangeTo: now, Pool: onePool, Max: 1001})
			return err
		}},
		{"leases/all_pools/month", keyLeasesListAllPools, []any{month, now, 1001}, func() error {
			_, err := q.KeyLeasesListAllPools(ctx, KeyLeasesListAllPoolsParams{RangeFrom: month, RangeTo: now, Max: 1001})
			return err
		}},
		{"lease-activity/one_pool/day", leaseActivityHourlyList, []any{day, now, onePool}, func() error {
			_, err := q.LeaseActivityHourlyList(ctx, LeaseActivityHourlyListParams{RangeFrom: day, RangeTo: now, Pool: onePool})
			return err
		}},
		{"lease-activity/all_pools/month", leaseActivityHourlyListAllPools, []any{month, now}, func() error {
			_, err := q.LeaseActivityHourlyListAllPools(ctx, LeaseActivityHourlyListAllPoolsParams{RangeFrom: month, RangeTo: now})
			return err
		}},
		{"lease-durations/one_pool/day", leaseDurationsHourlyList, []any{onePool, day, now}, func() error {
			_, err := q.LeaseDurationsHourlyList(ctx, LeaseDurationsHourlyListParams{RangeFrom: day, RangeTo: now, Pool: onePool})
			return err
		}},
		{"lease-durations/all_pools/month", leaseDurationsHourlyListAllPools, []any{month, now}, func() error {
			_, err := q.LeaseDurationsHourlyListAllPools(ctx, LeaseDurationsHourlyListAllPoolsParams{RangeFrom: month, RangeTo: now})
			return err
		}},
		{"key-activity/one_pool/day", keyActivityHourlyList, []any{day, now, onePool}, func() error {
			_, err := q.KeyActivityHourlyList(ctx, KeyActivityHourlyListParams{RangeFrom: day, RangeTo: now, Pool: onePool})
			return err
		}},
		{"key-activity/all_pools/month", keyActivityHourlyListAllPools, []any{month, now}, func() error {
			_, err := q.KeyActivityHourlyListAllPools(ctx, KeyActivityHourlyListAllPoolsParams{RangeFrom: month, RangeTo: now})
			return err
		}},
		{"utilisation/one_pool/day", poolUtilisationList, []any{day, onePool, now}, func() error {
			_, err := q.PoolUtilisationList(ctx, PoolUtilisationListParams{RangeFrom: day, RangeTo: now, Pool: onePool})
			return err
		}},
		{"utilisation/one_pool/day_a_month_ago", poolUtilisationList, []any{month, onePool, month.Add(24 * time.Hour)}, func() error {
			_, err := q.PoolUtilisationList(ctx, PoolUtilisationListParams{RangeFrom: month, RangeTo: month.Add(24 * time.Hour), Pool: onePool})
			return err
		}},
		{"utilisation/all_pools/month", poolUtilisationListAllPools, []any{month, now}, func() error {
			_, err := q.PoolUtilisationListAllPools(ctx, PoolUtilisationListAllPoolsParams{RangeFrom: month, RangeTo: now})
			return err
		}},
		{"activity/one_pool/hour", keyEventsPerMinute, []any{60, onePool}, func() error {
			_, err := q.KeyEventsPerMinute(ctx, KeyEventsPerMinuteParams{Minutes: 60, Pool: onePool})
			return err
		}},
		{"activity/all_pools/hour", keyEventsPerMinuteAllPools, []any{60}, func() error {
			_, err := q.KeyEventsPerMinuteAllPools(ctx, 60)
			return err
		}},
		{"lease-duration-histogram/one_pool/hour", keyLeasesDurationHistogram, []any{60, onePool}, func() error {
			_, err := q.KeyLeasesDurationHistogram(ctx, KeyLeasesDurationHistogramParams{Minutes: 60, Pool: onePool})
			return err
		}},
		{"lease-duration-histogram/all_pools/hour", keyLeasesDurationHistogramAllPools, []any{60}, func() error {
			_, err := q.KeyLeasesDurationHistogramAllPools(ctx, 60)
			return err
		}},
		// In the transaction of a retention batch, as the store runs it:
		// outside one, the delete would empty the rollups (migration 00015).
		{"retention/batch_of_1000", keyEventsDeleteOlderThan, []any{nil, (29 * 24 * time.Hour).Seconds(), 1000}, func() error {
			return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
				q := New(tx)
				if err := q.KeyEventRollupsLockForRetention(ctx); err != nil {
					return err
				}
				_, err := q.KeyEventsDeleteOlderThan(ctx, KeyEventsDeleteOlderThanParams{RetentionSeconds: (29 * 24 * time.Hour).Seconds(), Max: 1000})
				return err
			})
		}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.Logf("%s: %s", c.name, explainAnalyze(b, conn, c.sql, c.args))
			for b.Loop() {
				require.NoError(b, c.run())
			}
		})
	}
}

var explainTimes = regexp.MustCompile(`(?m)^\s*(Planning Time|Execution Time): ([\d.]+ ms)$`)

// explainAnalyze runs the statement under EXPLAIN (ANALYZE, BUFFERS) in a
// transaction that is rolled back, and sums up the plan: times, shared
// buffers read and whether JIT compiled it.
func explainAnalyze(b *testing.B, conn *pgx.Conn, sql string, args []any) string {
	ctx := context.Background()
	tx, err := conn.Begin(ctx)
	require.NoError(b, err)
	defer func() { _ = tx.Rollback(ctx) }()
	rows, err := tx.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS) "+sql, args...)
	require.NoError(b, err)
	var plan strings.Builder
	for rows.Next() {
		var line string
		require.NoError(b, rows.Scan(&line))
		plan.WriteString(line + "\n")
	}
	require.NoError(b, rows.Err())
	text := plan.String()
	var summary []string
	for _, m := range explainTimes.FindAllStringSubmatch(text, -1) {
		summary = append(summary, strings.ToLower(m[1])+" "+m[2])
	}
	if buffers := regexp.MustCompile(`Buffers: shared hit=(\d+)(?: read=(\d+))?`).FindStringSubmatch(text); buffers != nil {
		summary = append(summary, fmt.Sprintf("top node buffers hit=%s read=%s", buffers[1], or(buffers[2], "0")))
	}
	if jit := regexp.MustCompile(`Timing: .*Total ([\d.]+ ms)`).FindStringSubmatch(text); jit != nil {
		summary = append(summary, "JIT "+jit[1])
	}
	return strings.Join(summary, ", ")
}

func or(s, fallback string) string {
	if s == "" {
		return fallback
	}
	return s
}

// foldHistory folds the whole history into the rollups, as the background
// job does, one transaction per batch.
func foldHistory(tb testing.TB, conn *pgx.Conn) {
	tb.Helper()
	ctx := context.Background()
	for {
		var caughtUp bool
		err := pgx.BeginTxFunc(ctx, conn, pgx.TxOptions{IsoLevel: pgx.ReadCommitted}, func(tx pgx.Tx) error {
			q := New(tx)
			horizon, err := q.KeyEventRollupsHorizon(ctx)
			if err != nil {
				return err
			}
			require.True(tb, horizon.Held)
			row, err := q.KeyEventRollupsFold(ctx, KeyEventRollupsFoldParams{Max: 100000, Horizon: horizon.Horizon})
			caughtUp = row.CaughtUp
			return err
		})
		require.NoError(tb, err)
		if caughtUp {
			return
		}
	}
}
