package store

import (
	"context"
	"time"

	"github.com/tokenorchestrator/tokenorchestrator/db/dbsqlc"
)

// RegisterWaiters tells the database that this replica has clients waiting
// for a key of the pool, for ttl: until then, every key freed in the pool is
// announced to the replicas (see the migrations). generation must grow with
// every registration the replica sends: one that reaches the database after
// a newer one changes nothing.
func (s *Store) RegisterWaiters(ctx context.Context, pool, replica string, generation int64, ttl time.Duration) error {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	return classify(s.queries.PoolWaitersRegister(ctx, dbsqlc.PoolWaitersRegisterParams{
		Pool: pool, Replica: replica, TtlSeconds: ttl.Seconds(), Generation: generation,
	}))
}

// UnregisterWaiters tells the database this replica no longer waits for
// keys of the pool, unless it has registered again since the registration
// numbered generation.
func (s *Store) UnregisterWaiters(ctx context.Context, pool, replica string, generation int64) error {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	return classify(s.queries.PoolWaitersUnregister(ctx, dbsqlc.PoolWaitersUnregisterParams{
		Pool: pool, Replica: replica, Generation: generation,
	}))
}

// PoolsWithFreeKeys returns those of the pools in which a claim would find a
// key now, in one statement whatever their number. It claims nothing.
func (s *Store) PoolsWithFreeKeys(ctx context.Context, pools []string) ([]string, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	free, err := s.queries.PoolWaitersFreePools(ctx, pools)
	if err != nil {
		return nil, classify(err)
	}
	return free, nil
}

// DeleteExpiredWaiters deletes up to max registrations of waiting clients
// that have expired (their replica died without withdrawing them) and
// returns how many it deleted.
func (s *Store) DeleteExpiredWaiters(ctx context.Context, max int) (int, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	n, err := s.queries.PoolWaitersDeleteExpired(ctx, int32(max))
	if err != nil {
		return 0, classify(err)
	}
	return int(n), nil
}
