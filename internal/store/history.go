package store

import (
	"context"
	"time"

	"github.com/google/uuid"

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

// LeaseOverlap is a pair of leases of one key that overlapped in time: the
// second began before the first had ended. The service guarantees there are
// none.
type LeaseOverlap struct {
	KeyID         uuid.UUID
	First, Second *int64
}

// HistoryAudit is what the history says since a moment.
type HistoryAudit struct {
	// Overlaps should be empty.
	Overlaps []LeaseOverlap
	// Events counts the history rows per event.
	Events map[string]int64
}

// AuditHistory reads the history since a moment, for checks after a run
// (the load tests). It scans that whole stretch of history, so the caller's
// context bounds it, not the store's query timeout.
func (s *Store) AuditHistory(ctx context.Context, since time.Time) (HistoryAudit, error) {
	rows, err := s.queries.KeyEventsOverlappingLeases(ctx, since)
	if err != nil {
		return HistoryAudit{}, classify(err)
	}
	audit := HistoryAudit{Events: map[string]int64{}}
	for _, row := range rows {
		audit.Overlaps = append(audit.Overlaps, LeaseOverlap{KeyID: row.KeyID, First: row.FirstLeaseToken, Second: row.SecondLeaseToken})
	}
	counts, err := s.queries.KeyEventsCountByEvent(ctx, since)
	if err != nil {
		return HistoryAudit{}, classify(err)
	}
	for _, c := range counts {
		audit.Events[c.Event] = c.Events
	}
	return audit, nil
}
