package store_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/db/dbsqlc"
	"github.com/tokenorchestrator/tokenorchestrator/internal/lease"
	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
	"github.com/tokenorchestrator/tokenorchestrator/internal/sweeper"
)

func TestClaimIdempotentAnswersItsLeaseUntilItEnds(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{})
	_, err := b.store.Create(b.ctx, "p", 2)
	require.NoError(t, err)

	first, replayed, err := b.store.ClaimIdempotent(b.ctx, "p", "k")
	require.NoError(t, err)
	require.False(t, replayed)
	kept, err := b.store.KeepAlive(b.ctx, first.ID, first.LeaseToken)
	require.NoError(t, err)
	again, replayed, err := b.store.ClaimIdempotent(b.ctx, "p", "k")
	require.NoError(t, err)
	require.True(t, replayed)
	require.Equal(t, kept, again, "the key as it is now, with its lease")

	_, err = b.store.Release(b.ctx, first.ID, first.LeaseToken)
	require.NoError(t, err)
	_, _, err = b.store.ClaimIdempotent(b.ctx, "p", "k")
	require.ErrorIs(t, err, lease.ErrIdempotencyKeyReused)
	require.Equal(t, []string{"created:-", "assigned:" + token(first), "kept_alive:" + token(first), "released:" + token(first)},
		b.events(t, first.ID), "the repeats claimed nothing")
}

// Two claims with one idempotency key, the pool's only key taken by the
// first: the second, which finds no free key, still answers the first one's
// lease, because it waits for the first to commit before it claims. Without
// that order it would answer "no free key" while the first one's answer may
// be the one that is lost.
func TestClaimIdempotentWaitsForAClaimInFlight(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{})
	_, err := b.store.Create(b.ctx, "one", 1)
	require.NoError(t, err)

	// The first claim, by hand, left open before its commit.
	tx, err := b.pool.Begin(b.ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(b.ctx) }()
	q := dbsqlc.New(tx)
	require.NoError(t, q.ClaimRequestLock(b.ctx, dbsqlc.ClaimRequestLockParams{Pool: "one", IdempotencyKey: "k"}))
	rows, err := q.KeyClaim(b.ctx, dbsqlc.KeyClaimParams{Pool: "one", StartPosition: rand.Float64(), Max: 1, LeaseTtlSeconds: 3600})
	require.NoError(t, err)
	require.Len(t, rows, 1)
	recorded, err := q.ClaimRequestRecord(b.ctx, dbsqlc.ClaimRequestRecordParams{
		Pool: "one", IdempotencyKey: "k", KeyID: rows[0].ID, LeaseToken: *rows[0].LeaseToken, ExpiresAt: *rows[0].LeaseExpiresAt,
	})
	require.NoError(t, err)
	require.EqualValues(t, 1, recorded)

	type result struct {
		key      lease.Key
		replayed bool
		err      error
	}
	second := make(chan result, 1)
	go func() {
		key, replayed, err := b.store.ClaimIdempotent(b.ctx, "one", "k")
		second <- result{key, replayed, err}
	}()
	// The second claim waits for the first one's lock.
	for {
		var waiting int
		require.NoError(t, b.pool.QueryRow(b.ctx, `
			SELECT count(*) FROM pg_catalog.pg_locks AS l
			JOIN pg_catalog.pg_database AS d ON d.oid = l.database
			WHERE d.datname = current_database() AND l.locktype = 'advisory' AND NOT l.granted`).Scan(&waiting))
		if waiting > 0 {
			break
		}
		select {
		case r := <-second:
			t.Fatalf("the second claim did not wait for the first: %+v", r)
		case <-time.After(10 * time.Millisecond):
		}
	}
	require.NoError(t, tx.Commit(b.ctx))
	r := <-second
	require.NoError(t, r.err)
	require.True(t, r.replayed)
	require.Equal(t, rows[0].ID, r.key.ID)
	require.Equal(t, *rows[0].LeaseToken, *r.key.LeaseToken)
}

func TestSweeperDeletesExpiredClaimRequestsInBatches(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{})
	_, err := b.store.Create(b.ctx, "p", 30)
	require.NoError(t, err)
	for i := range 25 {
		_, _, err := b.store.ClaimIdempotent(b.ctx, "p", fmt.Sprint("claim-", i))
		require.NoError(t, err)
	}
	sw := sweeper.New(b.store, sweeper.Config{BatchSize: 10})
	result := sw.RunOnce(b.ctx)
	require.NoError(t, result.Err)
	require.Zero(t, result.ClaimRequestsDeleted, "no record has expired yet")

	// Records past their time, as LEASE_TTL after the claims would leave
	// them.
	_, err = b.pool.Exec(b.ctx, `UPDATE claim_requests SET expires_at = now() - interval '1 second' WHERE idempotency_key <> 'claim-0' AND idempotency_key <> 'claim-1'`)
	require.NoError(t, err)
	result = sw.RunOnce(b.ctx)
	require.NoError(t, result.Err)
	require.Equal(t, 23, result.ClaimRequestsDeleted, "one pass drains every batch")
	var left int
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM claim_requests").Scan(&left))
	require.Equal(t, 2, left)
	_, replayed, err := b.store.ClaimIdempotent(context.Background(), "p", "claim-1")
	require.NoError(t, err)
	require.True(t, replayed, "a live record stays")
}

// An idempotent claim that waits for the idempotency key's lock (another
// request with the same key is in flight) gets a whole lease from the
// moment it claims: the wait does not shorten it.
func TestIdempotentClaimAfterALockWaitGetsAWholeLease(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{LeaseTTL: time.Minute})
	_, err := b.store.Create(b.ctx, "p", 1)
	require.NoError(t, err)

	// A session holds the lock that ClaimRequestLock takes for this key.
	conn, err := b.pool.Acquire(b.ctx)
	require.NoError(t, err)
	defer conn.Release()
	_, err = conn.Exec(b.ctx, "SELECT pg_advisory_lock(hashtextextended('p' || ' ' || 'wait-1', 9))")
	require.NoError(t, err)

	type result struct {
		key lease.Key
		err error
	}
	claimed := make(chan result, 1)
	go func() {
		k, _, err := b.store.ClaimIdempotent(b.ctx, "p", "wait-1")
		claimed <- result{k, err}
	}()
	time.Sleep(700 * time.Millisecond)
	var unlockedAt time.Time
	require.NoError(t, conn.QueryRow(b.ctx, "SELECT clock_timestamp()").Scan(&unlockedAt))
	_, err = conn.Exec(b.ctx, "SELECT pg_advisory_unlock(hashtextextended('p' || ' ' || 'wait-1', 9))")
	require.NoError(t, err)
	r := <-claimed
	require.NoError(t, r.err)
	require.False(t, r.key.ClaimedAt.Before(unlockedAt), "claimed at %s, before the lock was free at %s", r.key.ClaimedAt, unlockedAt)
	require.Equal(t, time.Minute, r.key.LeaseExpiresAt.Sub(*r.key.ClaimedAt))
}
