package store

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tokenorchestrator/tokenorchestrator/db/dbsqlc"
)

// PoolCounts are the live counts of one pool. Keys whose life has ended
// count until the background job deletes them.
type PoolCounts struct {
	Pool string
	Keys int64
	// Seats counts the seats of the keys (one per key of one seat).
	Seats int64
	// Held counts the seats under a lease.
	Held int64
}

// Free is the number of seats not under a lease.
func (c PoolCounts) Free() int64 { return c.Seats - c.Held }

// CountPool returns the counts of one pool; an unknown pool has zero keys.
func (s *Store) CountPool(ctx context.Context, pool string) (PoolCounts, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	row, err := s.queries.PoolCountsGet(ctx, pool)
	if err != nil {
		return PoolCounts{}, classify(err)
	}
	return PoolCounts{Pool: pool, Keys: row.Keys, Seats: row.Seats, Held: row.Blocked}, nil
}

// PoolKnown reports whether the pool has keys: a claim that found no free
// key asks it, to tell a pool whose keys are all held (worth waiting for)
// from one that does not exist (a misspelt name). Keys whose life has ended
// count until the background job deletes them.
func (s *Store) PoolKnown(ctx context.Context, pool string) (bool, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	known, err := s.queries.PoolCountsKnown(ctx, pool)
	if err != nil {
		return false, classify(err)
	}
	return known, nil
}

// CountPools returns the counts of every pool that has keys.
func (s *Store) CountPools(ctx context.Context) ([]PoolCounts, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	rows, err := s.queries.PoolCountsList(ctx)
	if err != nil {
		return nil, classify(err)
	}
	counts := make([]PoolCounts, len(rows))
	for i, row := range rows {
		counts[i] = PoolCounts{Pool: row.Pool, Keys: row.Keys, Seats: row.Seats, Held: row.Blocked}
	}
	return counts, nil
}

// CountExpiring returns, per pool, the live keys whose life ends within the
// given time unless they are kept alive, counting the first max of them in
// the order they expire; more tells that others expire after those, so that
// the counts are lower bounds. Pools with none counted are absent. The cap
// keeps the cost of a call bounded when every key of a large pool is about
// to expire (a short key life that nobody keeps alive).
func (s *Store) CountExpiring(ctx context.Context, within time.Duration, max int) (counts map[string]int64, more bool, err error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	rows, err := s.queries.KeyCountExpiring(ctx, dbsqlc.KeyCountExpiringParams{Max: int32(max), WithinSeconds: within.Seconds()})
	if err != nil {
		return nil, false, classify(err)
	}
	counts = make(map[string]int64, len(rows))
	for _, row := range rows {
		if row.Keys > 0 {
			counts[row.Pool] = row.Keys
		}
		more = more || row.More
	}
	return counts, more, nil
}

// foldLockID names the advisory lock that lets one fold of the counts run
// at a time across every replica.
const foldLockID = 0x746f6b656e636e74 // "tokencnt"

// FoldCounts moves the pools' appended count changes into their totals, so
// that reading a pool's counts adds up only the changes of the last moments.
// It returns how many change rows it moved; 0 also when another replica was
// folding at the same moment.
func (s *Store) FoldCounts(ctx context.Context) (int, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	n, err := retryConflicts(ctx, func() (int64, error) { return s.queries.PoolCountsFold(ctx, foldLockID) })
	if err != nil {
		return 0, classify(err)
	}
	return int(n), nil
}

// RemoveEmptyPools removes the counts of up to max pools that have no key
// left, so that pools that come and go leave nothing behind. A pool that
// gets keys meanwhile keeps its counts: creating keys locks the pool's
// totals row, which this takes before it looks again.
func (s *Store) RemoveEmptyPools(ctx context.Context, max int) (int, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	pools, err := s.queries.PoolCountsEmpty(ctx, int32(max))
	if err != nil || len(pools) == 0 {
		return 0, classify(err)
	}
	var removed int64
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		q := s.queries.WithTx(tx)
		if held, err := q.PoolCountsTryFoldLock(ctx, foldLockID); err != nil || !held {
			return err // a fold runs; the pools are looked at again next time
		}
		if _, err := q.PoolCountsLock(ctx, pools); err != nil {
			return err
		}
		removed, err = q.PoolCountsDeleteEmpty(ctx, pools)
		return err
	})
	if err != nil {
		return 0, classify(err)
	}
	return int(removed), nil
}

// Horizon is what holds back the cleanup of dead row versions on the
// database server: the oldest open snapshot of another session and who
// holds it, and the age, in transactions, of the oldest xmin of a session
// or a replication slot.
type Horizon struct {
	SnapshotAge       time.Duration
	HolderPID         int32
	HolderApplication string
	HolderState       string
	XminAge           int64
}

// CleanupHorizon reads what holds back cleanup now.
func (s *Store) CleanupHorizon(ctx context.Context) (Horizon, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	row, err := s.queries.CleanupHorizonGet(ctx)
	if err != nil {
		return Horizon{}, classify(err)
	}
	return Horizon{
		SnapshotAge:       time.Duration(row.SnapshotAgeSeconds * float64(time.Second)),
		HolderPID:         row.HolderPid,
		HolderApplication: row.HolderApplication,
		HolderState:       row.HolderState,
		XminAge:           row.XminAgeTransactions,
	}, nil
}
