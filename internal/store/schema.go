package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// ErrInvalidIndexes says that some index of the schema is invalid.
var ErrInvalidIndexes = errors.New("invalid indexes in the schema")

// CheckIndexes returns ErrInvalidIndexes, naming the indexes, when any index
// of the schema is invalid. Such an index is what a CREATE INDEX
// CONCURRENTLY or REINDEX CONCURRENTLY leaves when it does not finish: the
// planner never uses it, so the statements it was built for scan their
// table instead, and nothing else would say so. Older releases could record
// a migration as applied over one.
func (s *Store) CheckIndexes(ctx context.Context) error {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	invalid, err := s.queries.SchemaInvalidIndexes(ctx)
	if err != nil {
		return fmt.Errorf("list invalid indexes: %w", classify(err))
	}
	if len(invalid) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s (a concurrent build or rebuild did not finish; the planner never uses such an index). "+
		"Rebuild each with REINDEX INDEX CONCURRENTLY, or drop a leftover of a rebuild (named *_ccnew or *_ccold) "+
		"with DROP INDEX CONCURRENTLY, then start again", ErrInvalidIndexes, strings.Join(invalid, ", "))
}
