package store

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tokenorchestrator/tokenorchestrator/db/dbsqlc"
)

// AttemptElect takes the lead of the named role for ttl when nobody holds
// it or the holder's term has expired, and renews it when id already holds
// it. It reports whether id leads now; false with a nil error means another
// replica holds the lead. The term runs by the database clock.
//
// The caller bounds the call: an election attempt has its own deadline,
// shorter than a term, which the store's query timeout must not lengthen
// or cut.
func (s *Store) AttemptElect(ctx context.Context, name, id string, ttl time.Duration) (bool, error) {
	_, err := s.queries.LeaderAttemptElect(ctx, dbsqlc.LeaderAttemptElectParams{
		Name: name, LeaderID: id, TtlSeconds: ttl.Seconds(),
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	return err == nil, classify(err)
}

// Resign gives up id's lead of the named role at once, so that another
// replica need not wait for the term to expire. It does nothing when id
// does not lead.
func (s *Store) Resign(ctx context.Context, name, id string) error {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	return classify(s.queries.LeaderResign(ctx, dbsqlc.LeaderResignParams{Name: name, LeaderID: id}))
}
