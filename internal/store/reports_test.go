package store_test

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

func ptr[T any](v T) *T { return &v }

// knownHistory writes testdb.KnownHistory as pool "a" from base, its lease
// tokens from 101 on so that they differ from the live ones, and a pool
// "b" of live keys made through the store, their history moved to base: two
// keys created at H0:00, one of them held since H0:30 and still held now.
// Pool b's counts are the live ones, so its utilisation is counted back
// from them.
func knownHistory(t *testing.T, b *bundle, base time.Time) {
	t.Helper()
	testdb.InsertHistory(t, b.pool, "a", base, 100, testdb.KnownHistory)
	keys, err := b.store.Create(b.ctx, "b", 2)
	require.NoError(t, err)
	held, err := b.store.Claim(b.ctx, "b")
	require.NoError(t, err)
	_, err = b.pool.Exec(b.ctx, "UPDATE key_events SET at = $1 WHERE pool = 'b' AND event = 'created'", base)
	require.NoError(t, err)
	_, err = b.pool.Exec(b.ctx, "UPDATE key_events SET at = $1 WHERE pool = 'b' AND event = 'assigned'", base.Add(30*time.Minute))
	require.NoError(t, err)
	require.Len(t, keys, 2)
	require.NotNil(t, held.LeaseToken)
}

// Every report of a history worked out by hand (see testdb.KnownHistory),
// through the store and straight from the views.
func TestReportsOfAKnownHistory(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{})
	base := testdb.HourAgo(4)
	knownHistory(t, b, base)
	h := func(n int) time.Time { return base.Add(time.Duration(n) * time.Hour) }
	from, to := base.Add(-time.Hour), time.Now().Add(time.Minute)

	t.Run("leases", func(t *testing.T) {
		leases, err := b.reports(t).Leases(b.ctx, from, to, "a", 100)
		require.NoError(t, err)
		lease := func(key int, token int64, start, end time.Duration, by string, keepAlives int64) store.Lease {
			return store.Lease{
				Pool: "a", KeyID: testdb.KeyID("a", key), LeaseToken: 100 + token,
				StartedAt: base.Add(start), EndedAt: ptr(base.Add(end)), EndedBy: &by,
				KeepAlives: keepAlives, DurationSeconds: ptr((end - start).Seconds()),
			}
		}
		requireLeases(t, []store.Lease{
			lease(1, 1, 10*time.Minute, 30*time.Minute, "released", 1),
			lease(2, 2, 15*time.Minute, 55*time.Minute, "lease_expired", 2),
			lease(3, 3, 25*time.Minute, 35*time.Minute, "released", 0),
			lease(1, 4, 90*time.Minute, 100*time.Minute, "deleted", 0),
			lease(3, 5, 110*time.Minute, 130*time.Minute, "expired", 0),
		}, leases)

		open, err := b.reports(t).Leases(b.ctx, from, to, "b", 100)
		require.NoError(t, err)
		require.Len(t, open, 1)
		require.Equal(t, base.Add(30*time.Minute), open[0].StartedAt.UTC())
		require.Nil(t, open[0].EndedAt, "a lease still held has no end")
		require.Nil(t, open[0].EndedBy)
		require.Nil(t, open[0].DurationSeconds)

		// [from, to) on the start; at most max, oldest first.
		some, err := b.reports(t).Leases(b.ctx, base.Add(15*time.Minute), base.Add(90*time.Minute), "a", 100)
		require.NoError(t, err)
		require.Equal(t, []int64{102, 103}, tokens(some))
		first, err := b.reports(t).Leases(b.ctx, from, to, "", 2)
		require.NoError(t, err)
		require.Equal(t, []int64{101, 102}, tokens(first))
	})

	t.Run("lease activity", func(t *testing.T) {
		activity, err := b.reports(t).LeaseActivity(b.ctx, from, to, "a")
		require.NoError(t, err)
		requireHours(t, []store.LeaseActivity{
			{Pool: "a", Hour: h(0), Claimed: 3, Released: 2, LeaseExpired: 1, EndedByDeletion: 0, KeepAlives: 3},
			{Pool: "a", Hour: h(1), Claimed: 2, Released: 0, LeaseExpired: 0, EndedByDeletion: 1, KeepAlives: 0},
			{Pool: "a", Hour: h(2), Claimed: 0, Released: 0, LeaseExpired: 0, EndedByDeletion: 1, KeepAlives: 0},
		}, activity, func(a *store.LeaseActivity) *time.Time { return &a.Hour })

		// Hours that overlap [from, to): H0:30 to H1:30 takes H0 and H1;
		// to on an hour's start leaves that hour out.
		overlap, err := b.reports(t).LeaseActivity(b.ctx, h(0).Add(30*time.Minute), h(1).Add(30*time.Minute), "")
		require.NoError(t, err)
		require.Len(t, overlap, 3, "H0 and H1 of a, H0 of b")
		onlyH0, err := b.reports(t).LeaseActivity(b.ctx, from, h(1), "a")
		require.NoError(t, err)
		require.Len(t, onlyH0, 1)
		require.Equal(t, h(0), onlyH0[0].Hour.UTC())
	})

	t.Run("lease durations", func(t *testing.T) {
		durations, err := b.reports(t).LeaseDurations(b.ctx, from, to, "")
		require.NoError(t, err)
		requireHours(t, []store.LeaseDurations{
			// 1200, 2400 and 600 s: p95 lies 0.9 of the way from 1200 to 2400.
			{Pool: "a", Hour: h(0), Leases: 3, Ended: 3, MeanSeconds: ptr(1400.0), P50Seconds: ptr(1200.0), P95Seconds: ptr(2280.0), MaxSeconds: ptr(2400.0)},
			// 600 and 1200 s.
			{Pool: "a", Hour: h(1), Leases: 2, Ended: 2, MeanSeconds: ptr(900.0), P50Seconds: ptr(900.0), P95Seconds: ptr(1170.0), MaxSeconds: ptr(1200.0)},
			// Held, so not ended: no durations yet.
			{Pool: "b", Hour: h(0), Leases: 1, Ended: 0},
		}, durations, func(d *store.LeaseDurations) *time.Time { return &d.Hour })
	})

	t.Run("key activity", func(t *testing.T) {
		activity, err := b.reports(t).KeyActivity(b.ctx, from, to, "")
		require.NoError(t, err)
		requireHours(t, []store.KeyActivity{
			{Pool: "a", Hour: h(0), Created: 3},
			{Pool: "a", Hour: h(1), Deleted: 1},
			{Pool: "a", Hour: h(2), Expired: 2},
			{Pool: "b", Hour: h(0), Created: 2},
		}, activity, func(a *store.KeyActivity) *time.Time { return &a.Hour })
	})

	t.Run("utilisation", func(t *testing.T) {
		utilisation, err := b.reports(t).Utilisation(b.ctx, from, to, "a")
		require.NoError(t, err)
		requireHours(t, []store.Utilisation{
			// Three keys all hour; leases of 20, 40 and 10 minutes.
			{Pool: "a", Hour: h(0), KeySeconds: 10800, SeatSeconds: 10800, HeldSeconds: 4200, Utilisation: 4200.0 / 10800},
			// Key 1 until 1:40, keys 2 and 3 all hour; two 10-minute leases.
			{Pool: "a", Hour: h(1), KeySeconds: 9600, SeatSeconds: 9600, HeldSeconds: 1200, Utilisation: 0.125},
			// Key 2 until 2:30, key 3 (held) until 2:10.
			{Pool: "a", Hour: h(2), KeySeconds: 2400, SeatSeconds: 2400, HeldSeconds: 600, Utilisation: 0.25},
		}, utilisation, func(u *store.Utilisation) *time.Time { return &u.Hour })

		// Pool b is counted back from its live counts: 2 keys, 1 held.
		live, err := b.reports(t).Utilisation(b.ctx, from, to, "b")
		require.NoError(t, err)
		require.GreaterOrEqual(t, len(live), 4, "H0 to the current hour")
		require.Equal(t, store.Utilisation{Pool: "b", Hour: h(0), KeySeconds: 7200, SeatSeconds: 7200, HeldSeconds: 1800, Utilisation: 0.25}, utc(live[0]))
		require.Equal(t, store.Utilisation{Pool: "b", Hour: h(1), KeySeconds: 7200, SeatSeconds: 7200, HeldSeconds: 3600, Utilisation: 0.5}, utc(live[1]))
		current := live[len(live)-1]
		require.InDelta(t, 0.5, current.Utilisation, 1e-12, "the current hour counts up to now")
		require.InDelta(t, 2*current.HeldSeconds, current.KeySeconds, 1e-6)

		// A range in the past is counted back over the events after it.
		h1, err := b.reports(t).Utilisation(b.ctx, h(1), h(2), "")
		require.NoError(t, err)
		require.Equal(t, []store.Utilisation{
			{Pool: "a", Hour: h(1), KeySeconds: 9600, SeatSeconds: 9600, HeldSeconds: 1200, Utilisation: 0.125},
			{Pool: "b", Hour: h(1), KeySeconds: 7200, SeatSeconds: 7200, HeldSeconds: 3600, Utilisation: 0.5},
		}, []store.Utilisation{utc(h1[0]), utc(h1[1])})
		require.Len(t, h1, 2)
	})

	t.Run("views", func(t *testing.T) {
		// Operators query the views directly; they agree with the store.
		var assigned, released, expired, deletion, keepAlives int64
		require.NoError(t, b.pool.QueryRow(b.ctx, `
			SELECT sum(assigned), sum(released), sum(lease_expired), sum(ended_by_deletion), sum(keep_alives)
			FROM lease_activity_hourly WHERE pool = 'a'`).Scan(&assigned, &released, &expired, &deletion, &keepAlives))
		require.Equal(t, []int64{5, 2, 1, 2, 3}, []int64{assigned, released, expired, deletion, keepAlives})

		var leases, open int64
		require.NoError(t, b.pool.QueryRow(b.ctx,
			"SELECT count(*), count(*) FILTER (WHERE ended_at IS NULL) FROM key_leases").Scan(&leases, &open))
		require.Equal(t, []int64{6, 1}, []int64{leases, open})

		var p95 float64
		require.NoError(t, b.pool.QueryRow(b.ctx,
			"SELECT p95_seconds FROM lease_durations_hourly WHERE pool = 'a' AND hour = $1", h(0)).Scan(&p95))
		require.Equal(t, 2280.0, p95)

		var created, deleted, keysExpired int64
		require.NoError(t, b.pool.QueryRow(b.ctx,
			"SELECT sum(created), sum(deleted), sum(expired) FROM key_activity_hourly").Scan(&created, &deleted, &keysExpired))
		require.Equal(t, []int64{5, 1, 2}, []int64{created, deleted, keysExpired})

		var keySeconds, heldSeconds float64
		require.NoError(t, b.pool.QueryRow(b.ctx,
			"SELECT key_seconds, blocked_seconds FROM pool_utilisation_hourly WHERE pool = 'a' AND hour = $1", h(1)).Scan(&keySeconds, &heldSeconds))
		require.Equal(t, []float64{9600, 1200}, []float64{keySeconds, heldSeconds})
	})
}

func tokens(leases []store.Lease) []int64 {
	out := make([]int64, len(leases))
	for i, l := range leases {
		out[i] = l.LeaseToken
	}
	return out
}

func utc(u store.Utilisation) store.Utilisation {
	u.Hour = u.Hour.UTC()
	return u
}

// requireHours compares hourly rows with their hours in UTC, as the
// database returns them in the session's zone.
func requireHours[T any](t *testing.T, want, got []T, hour func(*T) *time.Time) {
	t.Helper()
	for i := range got {
		*hour(&got[i]) = hour(&got[i]).UTC()
	}
	require.Equal(t, want, got)
}

func requireLeases(t *testing.T, want, got []store.Lease) {
	t.Helper()
	for i := range got {
		got[i].StartedAt = got[i].StartedAt.UTC()
		if got[i].EndedAt != nil {
			got[i].EndedAt = ptr(got[i].EndedAt.UTC())
		}
	}
	require.Equal(t, want, got)
}

// docExamples are the example queries of docs/reports.md. With
// REPORT_EXAMPLES=file, TestReportExamples writes their output on the known
// history to the file, laid out as psql does, for the documentation.
var docExamples = []string{
	`SELECT pool, lease_token, started_at, ended_at, ended_by, keep_alives, duration_seconds
FROM key_leases
WHERE started_at >= now() - interval '6 hours'
ORDER BY started_at;`,
	`SELECT *
FROM lease_activity_hourly
WHERE hour >= now() - interval '6 hours'
ORDER BY pool, hour;`,
	`SELECT pool,
       sum(released) AS released,
       sum(lease_expired) AS vanished,
       round(sum(lease_expired) / nullif(sum(released + lease_expired), 0), 3) AS vanished_share
FROM lease_activity_hourly
WHERE hour >= now() - interval '1 day'
GROUP BY pool
ORDER BY pool;`,
	`SELECT *
FROM lease_durations_hourly
WHERE hour >= now() - interval '6 hours'
ORDER BY pool, hour;`,
	`SELECT *
FROM key_activity_hourly
WHERE hour >= now() - interval '6 hours'
ORDER BY pool, hour;`,
	`SELECT pool, hour, key_seconds, seat_seconds, blocked_seconds, round(utilisation::numeric, 3) AS utilisation
FROM pool_utilisation(now() - interval '6 hours', now(), 'a');`,
	`SELECT pool, hour, round(utilisation::numeric, 3) AS utilisation
FROM pool_utilisation_hourly
WHERE pool = 'b'
ORDER BY hour;`,
}

func TestReportExamples(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{})
	knownHistory(t, b, testdb.HourAgo(4))
	var out strings.Builder
	conn, err := b.pool.Acquire(b.ctx)
	require.NoError(t, err)
	defer conn.Release()
	_, err = conn.Exec(b.ctx, "SET TimeZone = 'UTC'")
	require.NoError(t, err)
	for _, sql := range docExamples {
		rows, err := conn.Query(b.ctx, sql, pgx.QueryResultFormats{pgx.TextFormatCode})
		require.NoError(t, err, sql)
		var header []string
		for _, f := range rows.FieldDescriptions() {
			header = append(header, f.Name)
		}
		var cells [][]string
		for rows.Next() {
			var row []string
			for _, raw := range rows.RawValues() {
				row = append(row, string(raw))
			}
			cells = append(cells, row)
		}
		require.NoError(t, rows.Err(), sql)
		require.NotEmpty(t, cells, "every example shows rows: %s", sql)
		fmt.Fprintf(&out, "%s\n\n%s\n", sql, psqlTable(header, cells))
	}
	if path := os.Getenv("REPORT_EXAMPLES"); path != "" {
		require.NoError(t, os.WriteFile(path, []byte(out.String()), 0o644))
	}
}

// psqlTable lays rows out as psql's aligned format does: headers centred,
// numbers right-aligned, text left-aligned, and the row count.
func psqlTable(header []string, rows [][]string) string {
	widths := make([]int, len(header))
	numeric := make([]bool, len(header))
	for i, h := range header {
		widths[i] = len(h)
		numeric[i] = true
	}
	for _, row := range rows {
		for i, v := range row {
			widths[i] = max(widths[i], len(v))
			if _, err := strconv.ParseFloat(v, 64); err != nil && v != "" {
				numeric[i] = false
			}
		}
	}
	var b strings.Builder
	line := func(cells []string, align func(i int, v string) string) {
		parts := make([]string, len(cells))
		for i, v := range cells {
			parts[i] = align(i, v)
		}
		b.WriteString(strings.TrimRight(" "+strings.Join(parts, " | "), " ") + "\n")
	}
	line(header, func(i int, v string) string {
		left := (widths[i] - len(v)) / 2
		return strings.Repeat(" ", left) + v + strings.Repeat(" ", widths[i]-len(v)-left)
	})
	dashes := make([]string, len(header))
	for i, w := range widths {
		dashes[i] = strings.Repeat("-", w+2)
	}
	b.WriteString(strings.Join(dashes, "+") + "\n")
	for _, row := range rows {
		line(row, func(i int, v string) string {
			if numeric[i] {
				return fmt.Sprintf("%*s", widths[i], v)
			}
			return fmt.Sprintf("%-*s", widths[i], v)
		})
	}
	fmt.Fprintf(&b, "(%d rows)\n", len(rows))
	return b.String()
}

// Utilisation is the share of seat-time held: a key of four seats with
// three held is three quarters held, not three times. History carries each
// key's seats on its created event and on the event that ends it, and the
// rollups, the statements and pool_utilisation count them alike.
func TestUtilisationCountsSeats(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{})
	base := testdb.HourAgo(4)
	h := func(n int) time.Time { return base.Add(time.Duration(n) * time.Hour) }

	four, err := b.store.CreateSeats(b.ctx, "s", 1, 4)
	require.NoError(t, err)
	for range 3 {
		k, err := b.store.Claim(b.ctx, "s")
		require.NoError(t, err)
		require.Equal(t, four[0].ID, k.ID)
	}
	_, err = b.store.Create(b.ctx, "s", 1)
	require.NoError(t, err)
	two, err := b.store.CreateSeats(b.ctx, "s", 1, 2)
	require.NoError(t, err)
	_, err = b.store.Delete(b.ctx, two[0].ID)
	require.NoError(t, err)
	for event, at := range map[string]time.Time{"created": base, "assigned": base.Add(30 * time.Minute), "deleted": base.Add(100 * time.Minute)} {
		_, err = b.pool.Exec(b.ctx, "UPDATE key_events SET at = $1 WHERE pool = 's' AND event = $2", at, event)
		require.NoError(t, err)
	}
	var seats []*int16
	rows, err := b.pool.Query(b.ctx, "SELECT seats FROM key_events WHERE pool = 's' AND event IN ('created', 'deleted') ORDER BY event, seats NULLS FIRST")
	require.NoError(t, err)
	for rows.Next() {
		var n *int16
		require.NoError(t, rows.Scan(&n))
		seats = append(seats, n)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []*int16{nil, ptr(int16(2)), ptr(int16(4)), ptr(int16(2))}, seats,
		"created: one seat (none written), two, four; the deletion of the key of two seats carries them")

	check := func(t *testing.T) {
		got, err := b.reports(t).Utilisation(b.ctx, base, time.Now().Add(time.Minute), "s")
		require.NoError(t, err)
		require.GreaterOrEqual(t, len(got), 4)
		// Three keys of 4, 1 and 2 seats all hour; three seats held from :30.
		require.Equal(t, store.Utilisation{Pool: "s", Hour: h(0), KeySeconds: 10800, SeatSeconds: 25200, HeldSeconds: 5400, Utilisation: 5400.0 / 25200}, utc(got[0]))
		// The key of two seats deleted at 1:40.
		require.Equal(t, store.Utilisation{Pool: "s", Hour: h(1), KeySeconds: 9600, SeatSeconds: 22800, HeldSeconds: 10800, Utilisation: 10800.0 / 22800}, utc(got[1]))
		require.InDelta(t, 0.6, got[len(got)-1].Utilisation, 1e-9, "three of five seats held now")
		for _, u := range got {
			require.LessOrEqual(t, u.Utilisation, 1.0)
		}
		requireRollupsMatchHistory(t, b.pool, base.Add(-time.Hour), time.Now().Add(time.Hour), []string{"s"})
	}
	t.Run("from the events", check)
	foldAll(t, b)
	t.Run("from the rollups", check)
}
