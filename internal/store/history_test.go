package store_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/db/dbsqlc"
	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
	"github.com/tokenorchestrator/tokenorchestrator/internal/sweeper"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

// Retention deletes the rows older than the cut-off, and only those: a row
// one microsecond older goes, a row exactly at the cut-off stays. The clock
// is pinned so that the cut-off is exact.
func TestHistoryRetentionDeletesExactlyWhatIsOlderThanTheCutOff(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{})
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cutOff := now.Add(-time.Hour)
	var events []testdb.Event
	for _, at := range []time.Duration{-48 * time.Hour, -2 * time.Hour, -time.Microsecond, 0, time.Microsecond, time.Hour} {
		events = append(events, testdb.Event{At: at, Key: 1, Event: "created"})
	}
	testdb.InsertHistory(t, b.pool, "r", cutOff, 0, events)

	q := dbsqlc.New(b.pool)
	deleted, err := q.KeyEventsDeleteOlderThan(b.ctx, dbsqlc.KeyEventsDeleteOlderThanParams{Now: &now, RetentionSeconds: 3600, Max: 2})
	require.NoError(t, err)
	require.EqualValues(t, 2, deleted, "a batch deletes at most max rows")
	deleted, err = q.KeyEventsDeleteOlderThan(b.ctx, dbsqlc.KeyEventsDeleteOlderThanParams{Now: &now, RetentionSeconds: 3600, Max: 2})
	require.NoError(t, err)
	require.EqualValues(t, 1, deleted)

	rows, err := b.pool.Query(b.ctx, "SELECT at FROM key_events ORDER BY at")
	require.NoError(t, err)
	var kept []time.Time
	for rows.Next() {
		var at time.Time
		require.NoError(t, rows.Scan(&at))
		kept = append(kept, at.UTC())
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []time.Time{cutOff, cutOff.Add(time.Microsecond), cutOff.Add(time.Hour)}, kept)
}

// The background job deletes old history for a bounded time per pass (here
// so short that each pass runs its one batch), leaves newer history alone,
// and still releases ended leases.
func TestSweeperDeletesOldHistoryInBatches(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{LeaseTTL: 50 * time.Millisecond})
	old := make([]testdb.Event, 25)
	for i := range old {
		old[i] = testdb.Event{At: time.Duration(i) * time.Second, Key: i, Event: "created"}
	}
	testdb.InsertHistory(t, b.pool, "old", time.Now().Add(-3*time.Hour), 0, old)
	_, err := b.store.Create(b.ctx, "new", 3)
	require.NoError(t, err)
	held, err := b.store.Claim(b.ctx, "new")
	require.NoError(t, err)
	time.Sleep(60 * time.Millisecond)

	sw := sweeper.New(b.store, sweeper.Config{BatchSize: 10, HistoryRetention: 2 * time.Hour, HistoryTimePerPass: time.Nanosecond})
	result := sw.RunOnce(b.ctx)
	require.NoError(t, result.Err)
	// Three count changes folded: the creation, the claim and the lease's end.
	// Twenty events folded into the rollups, after retention: the 15 old
	// ones left and the new pool's 3 creations, claim and lease's end.
	require.Equal(t, sweeper.Result{LeasesReleased: 1, HistoryDeleted: 10, CountChangesFolded: 3, HistoryFolded: 20}, result, "one batch of ten")
	result = sw.RunOnce(b.ctx)
	require.NoError(t, result.Err)
	require.Equal(t, sweeper.Result{HistoryDeleted: 10}, result)
	result = sw.RunOnce(b.ctx)
	require.NoError(t, result.Err)
	require.Equal(t, sweeper.Result{HistoryDeleted: 5}, result)
	require.Zero(t, sw.RunOnce(b.ctx).HistoryDeleted)

	var oldRows, newRows int
	require.NoError(t, b.pool.QueryRow(b.ctx,
		"SELECT count(*) FILTER (WHERE pool = 'old'), count(*) FILTER (WHERE pool = 'new') FROM key_events").Scan(&oldRows, &newRows))
	require.Zero(t, oldRows)
	require.Equal(t, 5, newRows, "3 created, 1 assigned, 1 lease_expired")
	require.Equal(t, []string{"created:-", "assigned:" + token(held), "lease_expired:" + token(held)}, b.events(t, held.ID))
}
