package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/lease"
	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
	"github.com/tokenorchestrator/tokenorchestrator/internal/sweeper"
)

// Release batches share one statement across pools, and so do the
// background job's statements; statements that touch several pools at once
// must never wait on each other in a cycle. A deadlock would fail a whole
// batch and leave its keys held. Clients claim and release on many pools
// at once, some leases end by themselves, and the job runs meanwhile: every
// call succeeds, and the counts add up afterwards.
func TestMultiPoolBatchesNeverDeadlock(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{LeaseTTL: 300 * time.Millisecond, MaxInFlight: 4})
	const pools, perPool, workers = 8, 24, 48
	for p := range pools {
		_, err := b.store.Create(b.ctx, fmt.Sprint("pool-", p), perPool)
		require.NoError(t, err)
	}
	ctx, cancel := context.WithTimeout(b.ctx, 3*time.Second)
	defer cancel()
	sw := sweeper.New(b.store, sweeper.Config{Interval: 20 * time.Millisecond, BatchSize: 4, LeaseWorkers: 4})
	var sweepErrs atomic.Int64
	var firstSweepErr atomic.Value
	swept := make(chan struct{})
	go func() {
		defer close(swept)
		for ctx.Err() == nil {
			if r := sw.RunOnce(ctx); r.Err != nil && ctx.Err() == nil {
				sweepErrs.Add(1)
				firstSweepErr.CompareAndSwap(nil, r.Err)
			}
		}
	}()
	var (
		wg     sync.WaitGroup
		cycles atomic.Int64
		mu     sync.Mutex
		errs   []error
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				pool := fmt.Sprint("pool-", (w+i)%pools)
				key, err := b.store.Claim(ctx, pool)
				if errors.Is(err, lease.ErrNoFreeKey) || ctx.Err() != nil {
					continue
				}
				if err == nil && i%5 != 0 {
					// Every fifth lease is left to end by itself.
					_, err = b.store.Release(ctx, key.ID, key.LeaseToken)
					if errors.Is(err, lease.ErrLeaseMismatch) && time.Now().After(*key.LeaseExpiresAt) {
						err = nil // on a busy machine the lease ran out first, as it may
					}
				}
				if err != nil && ctx.Err() == nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				cycles.Add(1)
			}
		}()
	}
	wg.Wait()
	<-swept
	b.store.Close() // keys claimed for callers that timed out are released
	require.Empty(t, errs, "calls failed")
	require.Zero(t, sweepErrs.Load(), "the background job failed: %v", firstSweepErr.Load())
	require.Greater(t, cycles.Load(), int64(100))
	t.Logf("%d cycles on %d pools", cycles.Load(), pools)

	// Counts agree with the keys' state.
	var keys, held int64
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*), count(lease_token) FROM key_state").Scan(&keys, &held))
	counts, err := b.store.CountPools(b.ctx)
	require.NoError(t, err)
	var countedKeys, countedHeld int64
	for _, c := range counts {
		countedKeys += c.Keys
		countedHeld += c.Held
	}
	require.Equal(t, []int64{keys, held}, []int64{countedKeys, countedHeld})
}

// A pool whose last key is gone leaves no counts behind: pools that come and
// go (one per tenant, per job) would otherwise grow the counts table without
// end. A pool that gets keys again counts from zero.
func TestEmptyPoolsLeaveNoCounts(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{})
	keys, err := b.store.Create(b.ctx, "short-lived", 2)
	require.NoError(t, err)
	_, err = b.store.Create(b.ctx, "kept", 1)
	require.NoError(t, err)
	held, err := b.store.Claim(b.ctx, "short-lived")
	require.NoError(t, err)
	for _, k := range keys {
		_, err = b.store.Delete(b.ctx, k.ID)
		require.NoError(t, err)
	}
	require.NotNil(t, held.LeaseToken)

	sw := sweeper.New(b.store, sweeper.Config{})
	result := sw.RunOnce(b.ctx)
	require.NoError(t, result.Err)
	require.Equal(t, 1, result.EmptyPoolsRemoved)
	var rows int
	require.NoError(t, b.pool.QueryRow(b.ctx,
		"SELECT (SELECT count(*) FROM pool_count_totals WHERE pool = 'short-lived') + (SELECT count(*) FROM pool_count_changes WHERE pool = 'short-lived')").Scan(&rows))
	require.Zero(t, rows)
	counts, err := b.store.CountPools(b.ctx)
	require.NoError(t, err)
	require.Equal(t, []store.PoolCounts{{Pool: "kept", Keys: 1, Seats: 1}}, counts)

	_, err = b.store.Create(b.ctx, "short-lived", 3)
	require.NoError(t, err)
	again, err := b.store.CountPool(b.ctx, "short-lived")
	require.NoError(t, err)
	require.Equal(t, store.PoolCounts{Pool: "short-lived", Keys: 3, Seats: 3}, again)
	require.Zero(t, sw.RunOnce(b.ctx).EmptyPoolsRemoved)
}

// The counts of every pool are pool_counts' (the totals and the changes
// not folded into them yet), whatever of them is folded: pools of keys of
// one and of several seats, held seats, a pool whose keys are all gone.
func TestCountPoolsAddsUpAsPoolCountsDoes(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{})
	view := func() []store.PoolCounts {
		t.Helper()
		rows, err := b.pool.Query(b.ctx, "SELECT pool, keys, seats, blocked FROM pool_counts WHERE keys <> 0 ORDER BY pool")
		require.NoError(t, err)
		counts, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.PoolCounts, error) {
			var c store.PoolCounts
			err := row.Scan(&c.Pool, &c.Keys, &c.Seats, &c.Held)
			return c, err
		})
		require.NoError(t, err)
		return counts
	}
	requireSame := func(want int) {
		t.Helper()
		counts, err := b.store.CountPools(b.ctx)
		require.NoError(t, err)
		require.Len(t, counts, want)
		require.Equal(t, view(), counts)
	}
	_, err := b.store.Create(b.ctx, "ones", 3)
	require.NoError(t, err)
	_, err = b.store.CreateSeats(b.ctx, "seats", 2, 3)
	require.NoError(t, err)
	gone, err := b.store.Create(b.ctx, "gone", 1)
	require.NoError(t, err)
	requireSame(3)
	_, err = b.store.FoldCounts(b.ctx)
	require.NoError(t, err)
	requireSame(3)
	for _, pool := range []string{"ones", "seats", "seats", "seats"} {
		_, err := b.store.Claim(b.ctx, pool)
		require.NoError(t, err)
	}
	_, err = b.store.Delete(b.ctx, gone[0].ID)
	require.NoError(t, err)
	requireSame(2)
	_, err = b.store.FoldCounts(b.ctx)
	require.NoError(t, err)
	requireSame(2)
	counts, err := b.store.CountPools(b.ctx)
	require.NoError(t, err)
	require.Equal(t, []store.PoolCounts{{Pool: "ones", Keys: 3, Seats: 3, Held: 1}, {Pool: "seats", Keys: 2, Seats: 6, Held: 3}}, counts)
}
