package store

import (
	"context"
	"time"

	"github.com/tokenorchestrator/tokenorchestrator/db/dbsqlc"
)

// PoolCounts are the live counts of one pool. Keys whose life has ended
// count until the background job deletes them.
type PoolCounts struct {
	Pool    string
	Keys    int64
	Blocked int64
}

// Free is the number of keys not under a lease.
func (c PoolCounts) Free() int64 { return c.Keys - c.Blocked }

// CountPool returns the counts of one pool; an unknown pool has zero keys.
func (s *Store) CountPool(ctx context.Context, pool string) (PoolCounts, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	row, err := s.queries.PoolCountsGet(ctx, pool)
	if err != nil {
		return PoolCounts{}, classify(err)
	}
	return PoolCounts{Pool: pool, Keys: row.Keys, Blocked: row.Blocked}, nil
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
		counts[i] = PoolCounts{Pool: row.Pool, Keys: row.Keys, Blocked: row.Blocked}
	}
	return counts, nil
}

// CountExpiring returns, per pool, the live keys whose life ends within the
// given time unless they are kept alive. Pools with none are absent.
func (s *Store) CountExpiring(ctx context.Context, within time.Duration) (map[string]int64, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	rows, err := s.queries.KeyCountExpiring(ctx, within.Seconds())
	if err != nil {
		return nil, classify(err)
	}
	counts := make(map[string]int64, len(rows))
	for _, row := range rows {
		counts[row.Pool] = row.Keys
	}
	return counts, nil
}

// RegisterWaiters tells the database that this replica has clients waiting
// for a key of the pool, for ttl: until then, every key freed in the pool is
// announced to the replicas (see the migrations).
func (s *Store) RegisterWaiters(ctx context.Context, pool, replica string, ttl time.Duration) error {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	return classify(s.queries.PoolWaitersRegister(ctx, dbsqlc.PoolWaitersRegisterParams{
		Pool: pool, Replica: replica, TtlSeconds: ttl.Seconds(),
	}))
}

// UnregisterWaiters tells the database this replica no longer waits for
// keys of the pool.
func (s *Store) UnregisterWaiters(ctx context.Context, pool, replica string) error {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	return classify(s.queries.PoolWaitersUnregister(ctx, dbsqlc.PoolWaitersUnregisterParams{Pool: pool, Replica: replica}))
}
