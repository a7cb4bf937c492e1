package store

import (
	"context"
	"time"

	"github.com/google/uuid"
)

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
