package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tokenorchestrator/tokenorchestrator/db/dbsqlc"
	"github.com/tokenorchestrator/tokenorchestrator/internal/lease"
)

// ErrReportsUnavailable: reports read from a standby (Config.Standby) that
// cannot be reached, is not in recovery, or replays further behind than
// Config.MaxStandbyLag, and Config.ReportFallback is off. The key pool
// itself is not affected; the caller may retry.
var ErrReportsUnavailable = errors.New("report database unavailable")

// Where a report was read.
const (
	SourcePrimary = "primary"
	SourceStandby = "standby"
)

// Freshness says where a report was read and how far behind the primary
// that was.
type Freshness struct {
	// Source is SourcePrimary or SourceStandby.
	Source string
	// ReplayLag is how far the standby's replay was behind the primary when
	// the report began; zero on the primary.
	ReplayLag time.Duration
}

// StandbyStatus is what a standby says about its replay.
type StandbyStatus struct {
	// InRecovery is false on a server that is no standby (e.g. one that was
	// promoted): reading it would not read the primary's history.
	InRecovery bool
	// ReplayLag is zero while everything received has been replayed, else
	// the age of the last transaction replayed; LagKnown is false while the
	// standby has replayed none since it started.
	ReplayLag time.Duration
	LagKnown  bool
}

// Reports runs the report statements, which read much history and hold a
// snapshot while they do, away from the hot path where possible: on the
// standby when one is configured and close enough behind, else on the
// primary in a read-only transaction whose statements the server itself
// cancels after Config.ReportStatementTimeout. Get one per report from
// Store.Reports.
type Reports struct {
	store   *Store
	queries *dbsqlc.Queries
	// onPrimary: statements run in a read-only transaction with a
	// statement timeout.
	onPrimary bool
	freshness Freshness
}

// Freshness says where this report reads and how far behind that was.
func (r *Reports) Freshness() Freshness { return r.freshness }

// Reports chooses where a report reads. With no standby configured, that is
// the primary. With one, it is the standby if it answers, is in recovery and
// replays at most Config.MaxStandbyLag behind; otherwise the primary if
// Config.ReportFallback is set, else the error is ErrReportsUnavailable,
// with the reason.
func (s *Store) Reports(ctx context.Context) (*Reports, error) {
	primary := &Reports{store: s, queries: s.queries, onPrimary: true, freshness: Freshness{Source: SourcePrimary}}
	if s.cfg.Standby == nil {
		return primary, nil
	}
	status, err := s.StandbyStatus(ctx)
	var why error
	switch {
	case err != nil:
		why = fmt.Errorf("the standby cannot be read: %w", err)
	case !status.InRecovery:
		why = errors.New("the report database is not a standby (it is not in recovery)")
	case !status.LagKnown:
		why = errors.New("the standby has not replayed a transaction since it started")
	case status.ReplayLag > s.cfg.MaxStandbyLag:
		why = fmt.Errorf("the standby replays %s behind the primary, more than the %s allowed",
			status.ReplayLag.Round(time.Millisecond), s.cfg.MaxStandbyLag)
	default:
		return &Reports{store: s, queries: s.standbyQueries, freshness: Freshness{Source: SourceStandby, ReplayLag: status.ReplayLag}}, nil
	}
	if s.cfg.ReportFallback {
		return primary, nil
	}
	return nil, fmt.Errorf("%w: %w", ErrReportsUnavailable, why)
}

// StandbyStatus asks the standby how far its replay is behind. It fails
// when no standby is configured.
func (s *Store) StandbyStatus(ctx context.Context) (StandbyStatus, error) {
	if s.cfg.Standby == nil {
		return StandbyStatus{}, errors.New("no standby configured")
	}
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	row, err := s.standbyQueries.StandbyStatusGet(ctx)
	if err != nil {
		return StandbyStatus{}, classify(err)
	}
	status := StandbyStatus{InRecovery: row.InRecovery, LagKnown: row.ReplayLagSeconds >= 0}
	if status.LagKnown {
		status.ReplayLag = time.Duration(row.ReplayLagSeconds * float64(time.Second))
	}
	return status, nil
}

// reportTimeout bounds a report. Reports read up to a month of history, so
// they get longer than the single-row statements of the key pool.
const reportTimeout = 60 * time.Second

// read runs one report statement where r reads.
func read[P, T any](ctx context.Context, r *Reports, query func(*dbsqlc.Queries, context.Context, P) (T, error), arg P) (T, error) {
	cfg := r.store.cfg
	ctx, cancel := context.WithTimeout(ctx, max(reportTimeout, cfg.QueryTimeout, cfg.ReportStatementTimeout))
	defer cancel()
	if !r.onPrimary {
		// A standby is read-only by nature, and what it may hold back is
		// set on the standby (see "Reads on a standby" in docs/operations.md).
		v, err := query(r.queries, ctx, arg)
		if err = classify(err); errors.Is(err, lease.ErrUnavailable) {
			// The standby went away or cancelled the statement (a conflict
			// with recovery): the primary is fine.
			err = fmt.Errorf("%w: the standby: %w", ErrReportsUnavailable, err)
		}
		return v, err
	}
	var v T
	err := pgx.BeginTxFunc(ctx, r.store.pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		q := r.queries.WithTx(tx)
		if err := q.ReportStatementTimeoutSet(ctx, int32(cfg.ReportStatementTimeout.Milliseconds())); err != nil {
			return err
		}
		var err error
		v, err = query(q, ctx, arg)
		return err
	})
	return v, classify(err)
}
