package store_test

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/db/dbsqlc"
	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
	"github.com/tokenorchestrator/tokenorchestrator/internal/sweeper"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

// The statements of the reports and charts answer what the views over
// key_events answer, for a history worked out by hand, before and once it
// is folded into the rollups.
func TestRollupsOfAKnownHistory(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{})
	base := testdb.HourAgo(4)
	knownHistory(t, b, base)
	from, to := base.Add(-time.Hour), time.Now().Add(time.Minute)
	pools := []string{"a", "b", "none"}
	requireRollupsMatchHistory(t, b.pool, from, to, pools)

	foldAll(t, b)
	require.Greater(t, foldedTo(t, b), base.Add(3*time.Hour), "the whole history is folded")
	requireRollupsMatchHistory(t, b.pool, from, to, pools)
	// Ranges after some pools' last change: pool b, whose keys live on,
	// has none from H1 on, pool a, whose keys are gone, none from H3 on.
	for _, r := range [][2]time.Time{{base.Add(time.Hour), base.Add(2 * time.Hour)}, {base.Add(3 * time.Hour), to}, {base.Add(150 * time.Minute), to}} {
		requireRollupsMatchHistory(t, b.pool, r[0], r[1], pools)
	}

	// The store's reports read the rollups now: the figures of
	// TestReportsOfAKnownHistory.
	h := func(n int) time.Time { return base.Add(time.Duration(n) * time.Hour) }
	activity, err := b.reports(t).LeaseActivity(b.ctx, from, to, "a")
	require.NoError(t, err)
	requireHours(t, []store.LeaseActivity{
		{Pool: "a", Hour: h(0), Claimed: 3, Released: 2, LeaseExpired: 1, EndedByDeletion: 0, KeepAlives: 3},
		{Pool: "a", Hour: h(1), Claimed: 2, Released: 0, LeaseExpired: 0, EndedByDeletion: 1, KeepAlives: 0},
		{Pool: "a", Hour: h(2), Claimed: 0, Released: 0, LeaseExpired: 0, EndedByDeletion: 1, KeepAlives: 0},
	}, activity, func(a *store.LeaseActivity) *time.Time { return &a.Hour })
	utilisation, err := b.reports(t).Utilisation(b.ctx, h(1), h(2), "")
	require.NoError(t, err)
	require.Equal(t, []store.Utilisation{
		{Pool: "a", Hour: h(1), KeySeconds: 9600, SeatSeconds: 9600, HeldSeconds: 1200, Utilisation: 0.125},
		{Pool: "b", Hour: h(1), KeySeconds: 7200, SeatSeconds: 7200, HeldSeconds: 3600, Utilisation: 0.5},
	}, []store.Utilisation{utc(utilisation[0]), utc(utilisation[1])})

	// Retention takes what it deletes out of the rollups: here all of pool
	// a's first hour and some of the second (14 events), and pool b's three.
	deleted, err := b.store.DeleteHistoryOlderThan(b.ctx, time.Since(base.Add(95*time.Minute)), 1000)
	require.NoError(t, err)
	require.Equal(t, 17, deleted)
	requireRollupsMatchHistory(t, b.pool, from, to, pools)
	var hoursOfA int
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM key_event_hours WHERE pool = 'a'").Scan(&hoursOfA))
	require.Equal(t, 2, hoursOfA, "the rollup's row of the hour whose events are all gone goes too")

	// History changed by hand empties the rollups, which are folded again.
	_, err = b.pool.Exec(b.ctx, "UPDATE key_events SET at = at - interval '1 hour' WHERE pool = 'a'")
	require.NoError(t, err)
	require.Equal(t, time.Time{}, foldedTo(t, b), "-infinity: nothing folded")
	requireRollupsMatchHistory(t, b.pool, from, to, pools)
	foldAll(t, b)
	requireRollupsMatchHistory(t, b.pool, from, to, pools)
}

// A transaction that wrote an event and commits after a fold has run still
// has its event counted: the fold does not go past the start of a
// transaction that is still running.
func TestRollupsWaitForTransactionsThatAreStillRunning(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{})
	_, err := b.store.Create(b.ctx, "early", 1)
	require.NoError(t, err)

	late, err := b.pool.Begin(b.ctx)
	require.NoError(t, err)
	defer func() { _ = late.Rollback(b.ctx) }()
	_, err = late.Exec(b.ctx, "INSERT INTO key_events (key_id, pool, event) VALUES (gen_random_uuid(), 'late', 'created')")
	require.NoError(t, err)
	time.Sleep(20 * time.Millisecond)
	_, err = b.store.Create(b.ctx, "after", 1)
	require.NoError(t, err)

	foldAll(t, b)
	var lateAt time.Time
	require.NoError(t, late.QueryRow(b.ctx, "SELECT at FROM key_events WHERE pool = 'late'").Scan(&lateAt))
	require.False(t, foldedTo(t, b).After(lateAt), "folded up to the running transaction's start at most")
	require.NoError(t, late.Commit(b.ctx))

	foldAll(t, b)
	var created int64
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT coalesce(sum(created), 0) FROM key_event_hours").Scan(&created))
	require.EqualValues(t, 3, created, "early, late and after")
	requireRollupsMatchHistory(t, b.pool, time.Now().Add(-time.Hour), time.Now().Add(time.Hour), []string{"early", "late", "after"})
}

// The fold and the reports match each end to its lease as key_leases does,
// in the cases that keys of one seat never show: keys of two seats whose
// leases overlap, one lease within the other and two that cross (the end
// of one comes between the start and the end of the other: each lease ends
// with the end of its own seat), and a lease that starts at the very
// moment the key's previous one ends (the start counts). The ends come after a fold, so
// that the reports first find each end's lease among the folded events
// (their step back from an end not folded yet), and then all is folded.
func TestRollupsMatchLeasesOfSeatsAndTies(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{})
	base := testdb.HourAgo(2)
	at := func(minutes int) time.Time { return base.Add(time.Duration(minutes) * time.Minute) }
	// The tie's start is written before its end, so that a walk back along
	// the index meets the end first.
	_, err := b.pool.Exec(b.ctx, `
		INSERT INTO key_events (key_id, pool, event, lease_token, seat, at) VALUES
		('00000000-0000-0000-0000-0000000000a1', 'seats', 'created', NULL, NULL, $1),
		('00000000-0000-0000-0000-0000000000a1', 'seats', 'assigned', 11, 0, $2),
		('00000000-0000-0000-0000-0000000000a1', 'seats', 'assigned', 12, 1, $3),
		('00000000-0000-0000-0000-0000000000c3', 'seats', 'created', NULL, NULL, $1),
		('00000000-0000-0000-0000-0000000000c3', 'seats', 'assigned', 31, 0, $2),
		('00000000-0000-0000-0000-0000000000c3', 'seats', 'assigned', 32, 1, $3),
		('00000000-0000-0000-0000-0000000000b2', 'ties', 'created', NULL, NULL, $1),
		('00000000-0000-0000-0000-0000000000b2', 'ties', 'assigned', 21, 0, $2),
		('00000000-0000-0000-0000-0000000000b2', 'ties', 'assigned', 22, 0, $3),
		('00000000-0000-0000-0000-0000000000b2', 'ties', 'released', 21, 0, $3)`,
		at(1), at(2), at(5))
	require.NoError(t, err)
	foldAll(t, b)
	// Each end its own statement, in this order, at the clock of its writing.
	for _, end := range []string{
		`('00000000-0000-0000-0000-0000000000a1', 'seats', 'released', 12, 1)`,
		`('00000000-0000-0000-0000-0000000000a1', 'seats', 'released', 11, 0)`,
		`('00000000-0000-0000-0000-0000000000c3', 'seats', 'released', 31, 0)`,
		`('00000000-0000-0000-0000-0000000000c3', 'seats', 'lease_expired', 32, 1)`,
		`('00000000-0000-0000-0000-0000000000b2', 'ties', 'lease_expired', 22, 0)`,
	} {
		_, err := b.pool.Exec(b.ctx, `INSERT INTO key_events (key_id, pool, event, lease_token, seat) VALUES `+end)
		require.NoError(t, err)
	}
	from, to := base.Add(-time.Hour), time.Now().Add(time.Minute)
	endedLeases := func(pool string) (n int) {
		require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM ended_leases WHERE pool = $1", pool).Scan(&n))
		return n
	}
	require.Equal(t, 0, endedLeases("seats"), "the ends written after the fold are not folded yet")
	require.Equal(t, 1, endedLeases("ties"), "the ends written after the fold are not folded yet")
	requireRollupsMatchHistory(t, b.pool, from, to, []string{"seats", "ties"})
	foldAll(t, b)
	requireRollupsMatchHistory(t, b.pool, from, to, []string{"seats", "ties"})
	require.Equal(t, 2, endedLeases("ties"), "both leases of the key whose second lease began as its first ended")
	require.Equal(t, 4, endedLeases("seats"), "each lease of the two keys of two seats, ended by its own seat's end")
	var held int
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM key_leases WHERE pool = 'seats' AND ended_at IS NULL").Scan(&held))
	require.Zero(t, held, "key_leases ends every lease of the keys of two seats")
}

// A session that holds a snapshot but has written nothing (a backup, a
// long report, an idle REPEATABLE READ transaction in someone's psql) does
// not hold the fold back: an event bears the clock of its writing, so such
// a session's next event comes after the fold has looked. Held back, the
// fold would leave every event of the hold to one catch-up after it ends.
// A statement still running holds it back to that statement's start,
// which its events, if it writes any, come after.
func TestRollupsFoldPastAnIdleSnapshot(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{})
	reader, err := b.pool.BeginTx(b.ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	require.NoError(t, err)
	defer func() { _ = reader.Rollback(b.ctx) }()
	var keys int
	require.NoError(t, reader.QueryRow(b.ctx, "SELECT count(*) FROM keys").Scan(&keys)) // takes the snapshot
	time.Sleep(20 * time.Millisecond)
	created, err := b.store.Create(b.ctx, "during", 1)
	require.NoError(t, err)

	foldAll(t, b)
	require.True(t, foldedTo(t, b).After(created[0].CreatedAt),
		"folded to %s, not past the event written at %s after the snapshot was taken", foldedTo(t, b), created[0].CreatedAt)
	requireRollupsMatchHistory(t, b.pool, time.Now().Add(-time.Hour), time.Now().Add(time.Hour), []string{"during"})

	// A statement running while the fold looks: one that waits for a lock
	// this test holds, so that it runs as long as the test needs and no
	// longer, however slow the machine.
	const lock = 7429
	locker, err := b.pool.Acquire(b.ctx)
	require.NoError(t, err)
	defer locker.Release()
	_, err = locker.Exec(b.ctx, "SELECT pg_advisory_lock($1)", lock)
	require.NoError(t, err)
	waiter, err := b.pool.Acquire(b.ctx)
	require.NoError(t, err)
	defer waiter.Release()
	var pid int32
	require.NoError(t, waiter.QueryRow(b.ctx, "SELECT pg_backend_pid()").Scan(&pid))
	waited := make(chan error, 1)
	go func() {
		_, err := waiter.Exec(b.ctx, "SELECT pg_advisory_xact_lock($1), count(*) FROM keys", lock)
		waited <- err
	}()
	var started time.Time
	require.Eventually(t, func() bool {
		err := b.pool.QueryRow(b.ctx, `SELECT query_start FROM pg_stat_activity
			WHERE pid = $1 AND state = 'active' AND wait_event_type = 'Lock' AND backend_xmin IS NOT NULL`, pid).Scan(&started)
		return err == nil
	}, 5*time.Second, 5*time.Millisecond)
	_, err = b.store.Create(b.ctx, "while-running", 1)
	require.NoError(t, err)
	foldAll(t, b)
	require.False(t, foldedTo(t, b).After(started), "folded past the start of a statement still running")
	_, err = locker.Exec(b.ctx, "SELECT pg_advisory_unlock($1)", lock)
	require.NoError(t, err)
	require.NoError(t, <-waited)
	foldAll(t, b)
	requireRollupsMatchHistory(t, b.pool, time.Now().Add(-time.Hour), time.Now().Add(time.Hour), []string{"during", "while-running"})
}

// The rollups hold to the history while clients claim, keep alive, release,
// cool down and delete keys of several pools, two background jobs (as two
// replicas) fold and delete history at once, and keys and leases run out:
// in every snapshot taken meanwhile, and at the end, every statement that
// reads them answers what the views over key_events answer.
func TestRollupsHoldToTheHistoryUnderConcurrentWritersAndRetention(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{LeaseTTL: 300 * time.Millisecond, KeyTTL: 3 * time.Second})
	start := time.Now()
	// Keys of one seat: the leases of a key of several seats may end in
	// one statement at the same microsecond, and which of those ends
	// key_leases takes for each lease is then up to the order it reads them.
	pools := []string{"one", "two", "three"}
	run, stop := context.WithTimeout(b.ctx, 8*time.Second)
	defer stop()

	var writers sync.WaitGroup
	for w := range 4 {
		writers.Add(1)
		go func() {
			defer writers.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for run.Err() == nil {
				pool := pools[rng.IntN(len(pools))]
				if rng.IntN(4) == 0 {
					_, _ = b.store.Create(run, pool, 1+rng.IntN(3))
				}
				key, err := b.store.Claim(run, pool)
				if err != nil {
					continue
				}
				token := key.LeaseToken
				switch rng.IntN(6) {
				case 0: // the holder vanishes: the job ends the lease
				case 1:
					_, _ = b.store.KeepAlive(run, key.ID, token)
					_, _ = b.store.Release(run, key.ID, token)
				case 2:
					_, _ = b.store.ReleaseWithCooldown(run, key.ID, token, time.Duration(1+rng.IntN(500))*time.Millisecond)
				case 3:
					_, _ = b.store.Release(run, key.ID, token)
					// A cooldown sent after the lease ended.
					_, _ = b.store.ReleaseWithCooldown(run, key.ID, token, 200*time.Millisecond)
				case 4:
					_, _ = b.store.KeepAlive(run, key.ID, nil)
					_, _ = b.store.Delete(run, key.ID)
				default:
					time.Sleep(time.Duration(rng.IntN(50)) * time.Millisecond)
					_, _ = b.store.Release(run, key.ID, token)
				}
			}
		}()
	}
	var jobs sync.WaitGroup
	var deleted, folded atomic.Int64
	for range 2 {
		// Small batches, so that folds and retention run often and meet.
		sw := sweeper.New(b.store, sweeper.Config{Interval: 20 * time.Millisecond, HistoryRetentionInterval: 20 * time.Millisecond,
			BatchSize: 5, HistoryRetention: 3 * time.Second})
		jobs.Add(1)
		go func() {
			defer jobs.Done()
			for run.Err() == nil {
				result := sw.RunOnce(run)
				if result.Err != nil && run.Err() == nil {
					t.Errorf("sweep: %v", result.Err)
				}
				deleted.Add(int64(result.HistoryDeleted))
				folded.Add(int64(result.HistoryFolded))
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	checks := 0
	for run.Err() == nil {
		time.Sleep(400 * time.Millisecond)
		requireRollupsMatchHistory(t, b.pool, start.Add(-time.Hour), time.Now().Add(time.Hour), pools)
		checks++
	}
	writers.Wait()
	jobs.Wait()
	require.Greater(t, checks, 2)

	foldAll(t, b)
	requireRollupsMatchHistory(t, b.pool, start.Add(-time.Hour), time.Now().Add(time.Hour), pools)
	require.Greater(t, deleted.Load(), int64(100), "retention deleted history meanwhile")
	require.Greater(t, folded.Load(), int64(100), "the jobs folded history meanwhile")
	require.Greater(t, foldedTo(t, b), start.Add(7*time.Second), "the rollups were read, not only the events")
}

// ended_leases (migration 00016) is caught up with the other rollups a
// batch at a time when its horizon is behind theirs: after the upgrade
// that adds it to a database whose history is folded already, and after a
// fold of the previous version, which leaves it behind. Meanwhile the
// reports count the ends after its horizon from the events and answer what
// the views answer. Retention of the previous version, which does not keep
// it in step, empties the rollups.
func TestEndedLeasesCatchUpWithTheRollups(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{})
	base := testdb.HourAgo(4)
	knownHistory(t, b, base)
	testdb.InsertHistory(t, b.pool, "c", base.Add(5*time.Minute), 200, testdb.KnownHistory)
	from, to := base.Add(-time.Hour), time.Now().Add(time.Minute)
	pools := []string{"a", "b", "c"}
	foldAll(t, b)
	var ended int
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM ended_leases").Scan(&ended))
	require.Equal(t, 10, ended, "the five leases of pools a and c")

	// As the upgrade leaves a database whose history was folded before.
	_, err := b.pool.Exec(b.ctx, "DELETE FROM ended_leases; UPDATE key_event_rollup_state SET ended_leases_to = '-infinity'")
	require.NoError(t, err)
	requireRollupsMatchHistory(t, b.pool, from, to, pools)
	batches := 0
	for {
		folded, caughtUp, err := b.store.FoldHistory(b.ctx, 5)
		require.NoError(t, err)
		if caughtUp {
			break
		}
		batches++
		require.LessOrEqual(t, folded, 6, "a batch of about max events")
		requireRollupsMatchHistory(t, b.pool, from, to, pools)
	}
	require.Greater(t, batches, 3)
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM ended_leases").Scan(&ended))
	require.Equal(t, 10, ended)
	var caughtUp bool
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT ended_leases_to = folded_to FROM key_event_rollup_state").Scan(&caughtUp))
	require.True(t, caughtUp)

	// A fold of the previous version moves folded_to on alone: here over
	// new leases of pool b, folded, and then their rows and the horizon of
	// ended_leases put back as that fold leaves them.
	var horizon time.Time
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT ended_leases_to FROM key_event_rollup_state").Scan(&horizon))
	_, err = b.store.Create(b.ctx, "b", 1)
	require.NoError(t, err)
	for range 3 {
		k, err := b.store.Claim(b.ctx, "b")
		require.NoError(t, err)
		_, err = b.store.Release(b.ctx, k.ID, k.LeaseToken)
		require.NoError(t, err)
	}
	foldAll(t, b)
	require.Greater(t, foldedTo(t, b), horizon)
	_, err = b.pool.Exec(b.ctx, "DELETE FROM ended_leases WHERE started_at >= $1", horizon)
	require.NoError(t, err)
	_, err = b.pool.Exec(b.ctx, "UPDATE key_event_rollup_state SET ended_leases_to = $1", horizon)
	require.NoError(t, err)
	requireRollupsMatchHistory(t, b.pool, from, to, pools)
	foldAll(t, b)
	requireRollupsMatchHistory(t, b.pool, from, to, pools)
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM ended_leases").Scan(&ended))
	require.Equal(t, 13, ended, "and pool b's three")

	// Retention of the previous version says 'on': the rollups are emptied.
	tx, err := b.pool.Begin(b.ctx)
	require.NoError(t, err)
	_, err = tx.Exec(b.ctx, "SELECT set_config('tokenorchestrator.history_retention', 'on', true)")
	require.NoError(t, err)
	_, err = tx.Exec(b.ctx, "DELETE FROM key_events WHERE pool = 'c' AND at < $1", base.Add(20*time.Minute))
	require.NoError(t, err)
	require.NoError(t, tx.Commit(b.ctx))
	require.Equal(t, time.Time{}, foldedTo(t, b), "-infinity: nothing folded")
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM ended_leases").Scan(&ended))
	require.Zero(t, ended)
	requireRollupsMatchHistory(t, b.pool, from, to, pools)
	foldAll(t, b)
	requireRollupsMatchHistory(t, b.pool, from, to, pools)
}

// foldAll folds the history until the rollups have caught up.
func foldAll(t *testing.T, b *bundle) {
	t.Helper()
	for {
		_, caughtUp, err := b.store.FoldHistory(b.ctx, 5)
		require.NoError(t, err)
		if caughtUp {
			return
		}
	}
}

// foldedTo returns how far the history is folded; the zero time for
// -infinity.
func foldedTo(t *testing.T, b *bundle) time.Time {
	t.Helper()
	var finite bool
	var at time.Time
	require.NoError(t, b.pool.QueryRow(b.ctx, `
		SELECT isfinite(folded_to), CASE WHEN isfinite(folded_to) THEN folded_to ELSE now() END
		FROM key_event_rollup_state`).Scan(&finite, &at))
	if !finite {
		return time.Time{}
	}
	return at
}

// The views' answers, as the reports read them before the rollups, with
// the arguments of the statements that read the rollups instead; the
// activity per minute as KeyEventsPerMinute counted it from the events.
const (
	viewLeaseActivity = `
		SELECT pool, hour, assigned, released, lease_expired, ended_by_deletion, keep_alives
		FROM lease_activity_hourly
		WHERE hour > $1::timestamptz - interval '1 hour' AND hour < $2::timestamptz AND ($3::text IS NULL OR pool = $3::text)
		ORDER BY pool, hour`
	viewKeyActivity = `
		SELECT pool, hour, created, deleted, expired
		FROM key_activity_hourly
		WHERE hour > $1::timestamptz - interval '1 hour' AND hour < $2::timestamptz AND ($3::text IS NULL OR pool = $3::text)
		ORDER BY pool, hour`
	viewCooldowns = `
		SELECT pool, hour, key_id, cooldowns, total_seconds, max_seconds
		FROM key_cooldowns_hourly
		WHERE hour > $1::timestamptz - interval '1 hour' AND hour < $2::timestamptz AND ($3::text IS NULL OR pool = $3::text)
		ORDER BY pool, hour, cooldowns DESC, total_seconds DESC, key_id`
	viewUtilisation = `SELECT pool, hour, key_seconds, seat_seconds, blocked_seconds, utilisation FROM pool_utilisation($1, $2, $3)`
	viewLeases      = `
		SELECT pool, key_id, lease_token, started_at, ended_at, ended_by, keep_alives, duration_seconds
		FROM key_leases
		WHERE started_at >= $1 AND started_at < $2 AND ($3::text IS NULL OR pool = $3::text)
		ORDER BY started_at, lease_token
		LIMIT $4`
	viewLeaseDurations = `
		SELECT pool, hour, leases, ended, mean_seconds, p50_seconds, p95_seconds, max_seconds
		FROM lease_durations_hourly
		WHERE hour > $1::timestamptz - interval '1 hour' AND hour < $2::timestamptz AND ($3::text IS NULL OR pool = $3::text)
		ORDER BY pool, hour`
	viewPerMinute = `
		WITH bounds AS (
		    SELECT date_bin('1 minute', now(), timestamptz '2000-01-01 00:00:00+00') AS current_minute
		), counts AS (
		    SELECT date_bin('1 minute', e.at, timestamptz '2000-01-01 00:00:00+00') AS minute,
		           count(*) FILTER (WHERE e.event = 'created') AS created,
		           count(*) FILTER (WHERE e.event = 'assigned') AS assigned,
		           count(*) FILTER (WHERE e.event = 'released') AS released,
		           count(*) FILTER (WHERE e.event = 'lease_expired') AS lease_expired,
		           count(*) FILTER (WHERE e.event = 'kept_alive') AS kept_alive,
		           count(*) FILTER (WHERE e.event = 'deleted' AND coalesce(e.seat, 0) = 0) AS deleted,
		           count(*) FILTER (WHERE e.event = 'expired' AND coalesce(e.seat, 0) = 0) AS expired
		    FROM key_events AS e
		    WHERE e.at >= (SELECT b.current_minute FROM bounds AS b) - ($1::int - 1) * interval '1 minute'
		      AND e.at < (SELECT b.current_minute FROM bounds AS b) + interval '1 minute'
		      AND ($2::text IS NULL OR e.pool = $2::text)
		    GROUP BY 1
		)
		SELECT m.minute, coalesce(c.created, 0), coalesce(c.assigned, 0), coalesce(c.released, 0),
		       coalesce(c.lease_expired, 0), coalesce(c.kept_alive, 0), coalesce(c.deleted, 0), coalesce(c.expired, 0)
		FROM bounds AS b
		CROSS JOIN generate_series(b.current_minute - ($1::int - 1) * interval '1 minute', b.current_minute, interval '1 minute') AS m (minute)
		LEFT JOIN counts AS c ON c.minute = m.minute
		ORDER BY m.minute`
	viewHistogram = `
		SELECT coalesce(width_bucket(l.duration_seconds, $1::float8[]), -1)::int, count(*)
		FROM key_leases AS l
		WHERE l.started_at >= now() - $2::int * interval '1 minute' AND ($3::text IS NULL OR l.pool = $3::text)
		GROUP BY 1
		ORDER BY 1`
)

// requireRollupsMatchHistory reads every report and chart from the rollups
// and from the views in one snapshot, for each pool and for every pool, and
// requires the same answers: equal counts, and seconds equal but for the
// rounding of the views' sums of floats.
func requireRollupsMatchHistory(t *testing.T, db *pgxpool.Pool, from, to time.Time, pools []string) {
	t.Helper()
	ctx := context.Background()
	err := pgx.BeginTxFunc(ctx, db, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		q := dbsqlc.New(tx)
		for _, pool := range append([]string{""}, pools...) {
			var only *string
			if pool != "" {
				only = &pool
			}
			name := "pool " + pool
			if pool == "" {
				name = "every pool"
			}

			var leaseActivity []dbsqlc.LeaseActivityHourlyListRow
			if pool == "" {
				rows, err := q.LeaseActivityHourlyListAllPools(ctx, dbsqlc.LeaseActivityHourlyListAllPoolsParams{RangeFrom: from, RangeTo: to})
				require.NoError(t, err)
				for _, r := range rows {
					leaseActivity = append(leaseActivity, dbsqlc.LeaseActivityHourlyListRow(r))
				}
			} else {
				var err error
				leaseActivity, err = q.LeaseActivityHourlyList(ctx, dbsqlc.LeaseActivityHourlyListParams{RangeFrom: from, RangeTo: to, Pool: pool})
				require.NoError(t, err)
			}
			requireSameRows(t, tx, leaseActivity, name+": lease activity", viewLeaseActivity, from, to, only)

			var leases []dbsqlc.KeyLease
			if pool == "" {
				var err error
				leases, err = q.KeyLeasesListAllPools(ctx, dbsqlc.KeyLeasesListAllPoolsParams{RangeFrom: from, RangeTo: to, Max: 10000})
				require.NoError(t, err)
			} else {
				var err error
				leases, err = q.KeyLeasesList(ctx, dbsqlc.KeyLeasesListParams{RangeFrom: from, RangeTo: to, Pool: pool, Max: 10000})
				require.NoError(t, err)
			}
			requireSameRows(t, tx, leases, name+": leases", viewLeases, from, to, only, 10000)

			var leaseDurations []dbsqlc.LeaseDurationsHourlyListRow
			if pool == "" {
				rows, err := q.LeaseDurationsHourlyListAllPools(ctx, dbsqlc.LeaseDurationsHourlyListAllPoolsParams{RangeFrom: from, RangeTo: to})
				require.NoError(t, err)
				for _, r := range rows {
					leaseDurations = append(leaseDurations, dbsqlc.LeaseDurationsHourlyListRow(r))
				}
			} else {
				var err error
				leaseDurations, err = q.LeaseDurationsHourlyList(ctx, dbsqlc.LeaseDurationsHourlyListParams{RangeFrom: from, RangeTo: to, Pool: pool})
				require.NoError(t, err)
			}
			requireSameRows(t, tx, leaseDurations, name+": lease durations per hour", viewLeaseDurations, from, to, only)

			var keyActivity []dbsqlc.KeyActivityHourlyListRow
			if pool == "" {
				rows, err := q.KeyActivityHourlyListAllPools(ctx, dbsqlc.KeyActivityHourlyListAllPoolsParams{RangeFrom: from, RangeTo: to})
				require.NoError(t, err)
				for _, r := range rows {
					keyActivity = append(keyActivity, dbsqlc.KeyActivityHourlyListRow(r))
				}
			} else {
				var err error
				keyActivity, err = q.KeyActivityHourlyList(ctx, dbsqlc.KeyActivityHourlyListParams{RangeFrom: from, RangeTo: to, Pool: pool})
				require.NoError(t, err)
			}
			requireSameRows(t, tx, keyActivity, name+": key activity", viewKeyActivity, from, to, only)

			var cooldowns []dbsqlc.KeyCooldownsHourlyListRow
			if pool == "" {
				rows, err := q.KeyCooldownsHourlyListAllPools(ctx, dbsqlc.KeyCooldownsHourlyListAllPoolsParams{RangeFrom: from, RangeTo: to})
				require.NoError(t, err)
				for _, r := range rows {
					cooldowns = append(cooldowns, dbsqlc.KeyCooldownsHourlyListRow(r))
				}
			} else {
				var err error
				cooldowns, err = q.KeyCooldownsHourlyList(ctx, dbsqlc.KeyCooldownsHourlyListParams{RangeFrom: from, RangeTo: to, Pool: pool})
				require.NoError(t, err)
			}
			requireSameRows(t, tx, cooldowns, name+": cooldowns", viewCooldowns, from, to, only)

			var utilisation []dbsqlc.PoolUtilisationListRow
			if pool == "" {
				rows, err := q.PoolUtilisationListAllPools(ctx, dbsqlc.PoolUtilisationListAllPoolsParams{RangeFrom: from, RangeTo: to})
				require.NoError(t, err)
				for _, r := range rows {
					utilisation = append(utilisation, dbsqlc.PoolUtilisationListRow(r))
				}
			} else {
				var err error
				utilisation, err = q.PoolUtilisationList(ctx, dbsqlc.PoolUtilisationListParams{RangeFrom: from, RangeTo: to, Pool: pool})
				require.NoError(t, err)
			}
			requireSameRows(t, tx, utilisation, name+": utilisation", viewUtilisation, from, to, only)

			for _, minutes := range []int32{60, 1440} {
				var perMinute []dbsqlc.KeyEventsPerMinuteRow
				if pool == "" {
					rows, err := q.KeyEventsPerMinuteAllPools(ctx, minutes)
					require.NoError(t, err)
					for _, r := range rows {
						perMinute = append(perMinute, dbsqlc.KeyEventsPerMinuteRow(r))
					}
				} else {
					var err error
					perMinute, err = q.KeyEventsPerMinute(ctx, dbsqlc.KeyEventsPerMinuteParams{Minutes: minutes, Pool: pool})
					require.NoError(t, err)
				}
				requireSameRows(t, tx, perMinute, name+": activity per minute", viewPerMinute, minutes, only)

				var histogram []dbsqlc.KeyLeasesDurationHistogramRow
				if pool == "" {
					rows, err := q.KeyLeasesDurationHistogramAllPools(ctx, minutes)
					require.NoError(t, err)
					for _, r := range rows {
						histogram = append(histogram, dbsqlc.KeyLeasesDurationHistogramRow(r))
					}
				} else {
					var err error
					histogram, err = q.KeyLeasesDurationHistogram(ctx, dbsqlc.KeyLeasesDurationHistogramParams{Minutes: minutes, Pool: pool})
					require.NoError(t, err)
				}
				requireSameRows(t, tx, histogram, name+": lease durations", viewHistogram, store.LeaseDurationBounds, minutes, only)
			}
		}
		return nil
	})
	require.NoError(t, err)
}

// requireSameRows requires the rows read from the rollups to be those of
// the view's query, column by column: times as instants, floats within a
// millionth of a second of key-time.
func requireSameRows[R any](t *testing.T, tx pgx.Tx, got []R, what, view string, args ...any) {
	t.Helper()
	rows, err := tx.Query(context.Background(), view, args...)
	require.NoError(t, err, what)
	want, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) ([]any, error) { return row.Values() })
	require.NoError(t, err, what)
	gotRows := make([][]any, len(got))
	for i := range got {
		gotRows[i] = fieldsOf(got[i])
	}
	require.Len(t, gotRows, len(want), "%s: %d rows, want %d", what, len(gotRows), len(want))
	for i := range want {
		require.Len(t, gotRows[i], len(want[i]), what)
		for j := range want[i] {
			requireSameValue(t, want[i][j], gotRows[i][j], "%s: row %d column %d: %v, want %v", what, i, j, gotRows[i], want[i])
		}
	}
}

func requireSameValue(t *testing.T, want, got any, msg string, args ...any) {
	t.Helper()
	switch w := want.(type) {
	case time.Time:
		g, ok := got.(time.Time)
		require.True(t, ok, append([]any{msg}, args...)...)
		require.True(t, w.Equal(g), append([]any{msg}, args...)...)
	case float64:
		g, ok := got.(float64)
		require.True(t, ok, append([]any{msg}, args...)...)
		require.InDelta(t, w, g, 1e-6*math.Max(1, math.Abs(w)), append([]any{msg}, args...)...)
	case int64:
		require.Equal(t, w, toInt64(got), append([]any{msg}, args...)...)
	case int32:
		require.Equal(t, int64(w), toInt64(got), append([]any{msg}, args...)...)
	case [16]byte:
		g, ok := got.(uuid.UUID)
		require.True(t, ok, append([]any{msg}, args...)...)
		require.Equal(t, uuid.UUID(w), g, append([]any{msg}, args...)...)
	default:
		require.Equal(t, want, got, append([]any{msg}, args...)...)
	}
}

func toInt64(v any) int64 {
	switch n := v.(type) {
	case int64:
		return n
	case int32:
		return int64(n)
	case int:
		return int64(n)
	}
	return math.MinInt64
}

func orNil[T any](v *T) any {
	if v == nil {
		return nil
	}
	return *v
}

// fieldsOf lists a generated row's fields in order.
func fieldsOf(row any) []any {
	switch r := row.(type) {
	case dbsqlc.LeaseActivityHourlyListRow:
		return []any{r.Pool, r.Hour, r.Claimed, r.Released, r.LeaseExpired, r.EndedByDeletion, r.KeepAlives}
	case dbsqlc.KeyActivityHourlyListRow:
		return []any{r.Pool, r.Hour, r.Created, r.Deleted, r.Expired}
	case dbsqlc.KeyCooldownsHourlyListRow:
		return []any{r.Pool, r.Hour, r.KeyID, r.Cooldowns, r.TotalSeconds, r.MaxSeconds}
	case dbsqlc.PoolUtilisationListRow:
		return []any{r.Pool, r.Hour, r.KeySeconds, r.SeatSeconds, r.HeldSeconds, r.Utilisation}
	case dbsqlc.KeyEventsPerMinuteRow:
		return []any{r.Minute, r.Created, r.Claimed, r.Released, r.LeaseExpired, r.KeptAlive, r.Deleted, r.Expired}
	case dbsqlc.KeyLeasesDurationHistogramRow:
		return []any{r.Bucket, r.Leases}
	case dbsqlc.KeyLease:
		return []any{r.Pool, r.KeyID, orNil(r.LeaseToken), r.StartedAt, orNil(r.EndedAt), orNil(r.EndedBy), r.KeepAlives, orNil(r.DurationSeconds)}
	case dbsqlc.LeaseDurationsHourlyListRow:
		if r.Ended == 0 {
			// The statement answers 0 where the view has no figure.
			return []any{r.Pool, r.Hour, r.Leases, r.Ended, nil, nil, nil, nil}
		}
		return []any{r.Pool, r.Hour, r.Leases, r.Ended, r.MeanSeconds, r.P50Seconds, r.P95Seconds, r.MaxSeconds}
	}
	panic(errors.New("fieldsOf: unknown row type"))
}

// The history audit counts a lease written before keys had seats (its seat
// empty) as one of seat 0: a later lease of seat 0 that begins before it
// ends overlaps it.
func TestAuditFindsOverlapsAcrossLeasesWithoutSeat(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{})
	base := testdb.HourAgo(2)
	_, err := b.pool.Exec(b.ctx, `
		INSERT INTO key_events (key_id, pool, event, lease_token, seat, at) VALUES
		('00000000-0000-0000-0000-0000000000d4', 'old', 'assigned', 41, NULL, $1),
		('00000000-0000-0000-0000-0000000000d4', 'old', 'assigned', 42, 0, $2),
		('00000000-0000-0000-0000-0000000000d4', 'old', 'released', 41, NULL, $3),
		('00000000-0000-0000-0000-0000000000d4', 'old', 'released', 42, 0, $3)`,
		base.Add(time.Minute), base.Add(2*time.Minute), base.Add(3*time.Minute))
	require.NoError(t, err)
	audit, err := b.store.AuditHistory(b.ctx, base)
	require.NoError(t, err)
	require.Len(t, audit.Overlaps, 1, "lease 42 began on seat 0 while lease 41 held it")
}

// While replicas of the version before seats were folded (migration 00019)
// still run, their fold and retention cannot leave the rollups without
// seats: their fold writes rollup rows without them, which are refused,
// and their retention (which says 'keeps ended_leases') empties the
// rollups, which this version folds again.
func TestRollupsOfThePreviousVersionLeaveNoSeatsOut(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{})
	_, err := b.store.CreateSeats(b.ctx, "s", 1, 3)
	require.NoError(t, err)
	k, err := b.store.Claim(b.ctx, "s")
	require.NoError(t, err)
	_, err = b.store.Release(b.ctx, k.ID, k.LeaseToken)
	require.NoError(t, err)
	foldAll(t, b)
	require.NotEqual(t, time.Time{}, foldedTo(t, b))

	for _, sql := range []string{
		`INSERT INTO key_event_hours (pool, hour, created, keys_offset_us, held_offset_us)
		 VALUES ('s', date_bin('1 hour', now(), timestamptz '2000-01-01 00:00:00+00'), 1, 0, 0)
		 ON CONFLICT (pool, hour) DO UPDATE SET created = key_event_hours.created + excluded.created`,
		`INSERT INTO key_event_minutes (pool, minute, created, keys_offset_us, held_offset_us)
		 VALUES ('s', date_bin('1 minute', now(), timestamptz '2000-01-01 00:00:00+00'), 1, 0, 0)
		 ON CONFLICT (pool, minute) DO UPDATE SET created = key_event_minutes.created + excluded.created`,
	} {
		_, err := b.pool.Exec(b.ctx, sql)
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr, "a rollup row without seats is refused")
		require.Equal(t, "23502", pgErr.Code, pgErr.Message)
	}

	tx, err := b.pool.Begin(b.ctx)
	require.NoError(t, err)
	_, err = tx.Exec(b.ctx, "SELECT set_config('tokenorchestrator.history_retention', 'keeps ended_leases', true)")
	require.NoError(t, err)
	_, err = tx.Exec(b.ctx, "DELETE FROM key_events WHERE pool = 's' AND event = 'released'")
	require.NoError(t, err)
	require.NoError(t, tx.Commit(b.ctx))
	require.Equal(t, time.Time{}, foldedTo(t, b), "-infinity: the rollups were emptied")
	foldAll(t, b)
	requireRollupsMatchHistory(t, b.pool, time.Now().Add(-time.Hour), time.Now().Add(time.Hour), []string{"s"})
}
