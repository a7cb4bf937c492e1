package store

import (
	"context"
	"time"
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
