package store

import (
	"context"
	"time"

	"github.com/tokenorchestrator/tokenorchestrator/db/dbsqlc"
)

// DeleteHistoryOlderThan deletes up to max history rows written more than
// age ago by the database clock, oldest first, and returns how many it
// deleted.
func (s *Store) DeleteHistoryOlderThan(ctx context.Context, age time.Duration, max int) (int, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	n, err := s.queries.KeyEventsDeleteOlderThan(ctx, dbsqlc.KeyEventsDeleteOlderThanParams{
		RetentionSeconds: age.Seconds(),
		Max:              int32(max),
	})
	if err != nil {
		return 0, classify(err)
	}
	return int(n), nil
}
