package store

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tokenorchestrator/tokenorchestrator/db/dbsqlc"
)

// FoldHistory adds the history written since the last fold to the rollups
// that the reports and the dashboard's charts read (migrations 00015 and
// 00016), about max events at most, and returns how many it folded and whether the
// rollups have caught up. It folds only events that every later reader
// sees, so it may stay behind the newest ones for as long as the oldest
// transaction of the database has been running; readers count those from
// the history itself. When another replica is folding at the same moment it
// folds nothing and reports that it has caught up.
func (s *Store) FoldHistory(ctx context.Context, max int) (folded int, caughtUp bool, err error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	caughtUp = true
	// Read committed, whatever the database's default: the fold's second
	// statement must take its snapshot after the first one has looked at
	// the running transactions.
	err = pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.ReadCommitted}, func(tx pgx.Tx) error {
		q := s.queries.WithTx(tx)
		horizon, err := q.KeyEventRollupsHorizon(ctx)
		if err != nil || !horizon.Held {
			return err
		}
		// ended_leases first, while it is behind the other rollups (after
		// the upgrade that added it, or folds of the previous version): a
		// batch of it is this fold's work.
		behind, err := q.KeyEventRollupsFoldEndedLeases(ctx, int32(max))
		if err != nil {
			return err
		}
		if behind.Events > 0 || !behind.CaughtUp {
			folded, caughtUp = int(behind.Events), false
			return nil
		}
		row, err := q.KeyEventRollupsFold(ctx, dbsqlc.KeyEventRollupsFoldParams{Max: int32(max), Horizon: horizon.Horizon})
		folded, caughtUp = int(row.Events), row.CaughtUp
		return err
	})
	if err != nil {
		return 0, false, classify(err)
	}
	return folded, caughtUp, nil
}

// DeleteHistoryOlderThan deletes up to max history rows written more than
// age ago by the database clock, oldest first, and returns how many it
// deleted. It takes what it deletes out of the rollups in the same
// transaction, after any fold that runs.
func (s *Store) DeleteHistoryOlderThan(ctx context.Context, age time.Duration, max int) (int, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	var n int64
	// Read committed: the delete's snapshot must be taken once the lock is
	// held, so that it sees the last fold's rollups.
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.ReadCommitted}, func(tx pgx.Tx) error {
		q := s.queries.WithTx(tx)
		if err := q.KeyEventRollupsLockForRetention(ctx); err != nil {
			return err
		}
		var err error
		n, err = q.KeyEventsDeleteOlderThan(ctx, dbsqlc.KeyEventsDeleteOlderThanParams{
			RetentionSeconds: age.Seconds(),
			Max:              int32(max),
		})
		if err != nil || n == 0 {
			return err
		}
		return q.KeyEventRollupsDeleteEmpty(ctx)
	})
	if err != nil {
		return 0, classify(err)
	}
	return int(n), nil
}
