package store

import (
	"context"

	"github.com/google/uuid"

	"github.com/tokenorchestrator/tokenorchestrator/db/dbsqlc"
	"github.com/tokenorchestrator/tokenorchestrator/internal/lease"
)

// ListKeys returns up to limit live keys of the pool in id order, those
// whose id comes after the given one (uuid.Nil for the first page). The
// caller pages on by passing the last id it got.
func (s *Store) ListKeys(ctx context.Context, pool string, after uuid.UUID, limit int) ([]lease.Key, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	rows, err := s.queries.KeyListPage(ctx, dbsqlc.KeyListPageParams{Pool: pool, After: after, Max: int32(limit)})
	if err != nil {
		return nil, classify(err)
	}
	keys := make([]lease.Key, len(rows))
	for i, row := range rows {
		keys[i] = fromRow(dbsqlc.KeyGetRow(row))
	}
	return keys, nil
}
