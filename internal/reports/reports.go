// Package reports is the catalogue of history reports that the HTTP API
// (GET /reports/...) and the report subcommand both serve: their names,
// parameters and columns, and their rendering as JSON, CSV or a text table.
// The figures themselves come from the SQL views, through the store.
package reports

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
)

const (
	// DefaultRange is the time range of a report when none is given: the
	// last day.
	DefaultRange = 24 * time.Hour
	// MaxRange is the longest time range a report covers: a report reads
	// every history row of its range.
	MaxRange = 31 * 24 * time.Hour
	// DefaultLimit and MaxLimit bound the rows of the leases report, the one
	// report with a row per lease rather than per hour.
	DefaultLimit = 1000
	MaxLimit     = 10000
)

// ErrInvalidParams marks parameters that no report accepts.
var ErrInvalidParams = errors.New("invalid report parameters")

// Params select what a report covers.
type Params struct {
	// From and To bound the range [From, To). Hourly reports show the whole
	// UTC hours that overlap it; the leases report the leases that started
	// in it.
	From, To time.Time
	// Pool limits the report to one pool; empty means every pool.
	Pool string
	// Limit is the most rows of the leases report; zero means DefaultLimit.
	// The hourly reports ignore it.
	Limit int
}

// DefaultParams covers the DefaultRange up to now, for every pool.
func DefaultParams(now time.Time) Params {
	return Params{From: now.Add(-DefaultRange), To: now}
}

// Validate refuses a range that is empty, reversed, longer than MaxRange or
// outside the years 1 to 9999, and a limit out of 1..MaxLimit.
func (p Params) Validate() error {
	// Reports show times as RFC 3339, which has four-digit years only.
	for _, t := range []time.Time{p.From, p.To} {
		if year := t.UTC().Year(); year < 1 || year > 9999 {
			return fmt.Errorf("%w: from and to must lie between the years 0001 and 9999", ErrInvalidParams)
		}
	}
	if !p.From.Before(p.To) {
		return fmt.Errorf("%w: from (%s) must be before to (%s)", ErrInvalidParams, FormatTime(p.From), FormatTime(p.To))
	}
	if length := p.To.Sub(p.From); length > MaxRange {
		return fmt.Errorf("%w: the range from %s to %s is %s long; a report covers at most %s (31 days)",
			ErrInvalidParams, FormatTime(p.From), FormatTime(p.To), length.Round(time.Second), MaxRange)
	}
	if p.Limit < 0 || p.Limit > MaxLimit {
		return fmt.Errorf("%w: limit must be between 1 and %d, got %d", ErrInvalidParams, MaxLimit, p.Limit)
	}
	return nil
}

func (p Params) limit() int {
	if p.Limit == 0 {
		return DefaultLimit
	}
	return p.Limit
}

// Column is one column of a report: its name in the SQL view, the CSV
// header and the text table, and its name in JSON.
type Column struct {
	Name string
	JSON string
}

// Table is a report's result. Values are string, int64, float64, time.Time,
// or nil for SQL NULL.
type Table struct {
	Columns []Column
	Rows    [][]any
	// Truncated is set when the leases report had more rows than its limit.
	Truncated bool
	// Freshness says where the rows were read and how far behind the
	// primary that was.
	Freshness store.Freshness
}

// Report is one report of the catalogue.
type Report struct {
	// Name is the report's path under /reports/ and its name on the command
	// line.
	Name string
	// Source is the SQL view or function it reads.
	Source  string
	Summary string
	Columns []Column
	// PerLease is set for the leases report, which takes a limit.
	PerLease bool
	run      func(ctx context.Context, s *store.Reports, p Params) ([][]any, error)
}

// Run validates the parameters and runs the report where s reads. Invalid
// parameters return an ErrInvalidParams error before any query runs.
func (r Report) Run(ctx context.Context, s *store.Reports, p Params) (Table, error) {
	if err := p.Validate(); err != nil {
		return Table{}, err
	}
	if r.PerLease {
		// One row more than the limit tells whether there were more.
		p.Limit = p.limit() + 1
	}
	rows, err := r.run(ctx, s, p)
	if err != nil {
		return Table{}, err
	}
	t := Table{Columns: r.Columns, Rows: rows, Freshness: s.Freshness()}
	if r.PerLease && len(rows) == p.Limit {
		t.Rows, t.Truncated = rows[:len(rows)-1], true
	}
	return t, nil
}

// Find returns the report of the given name.
func Find(name string) (Report, bool) {
	for _, r := range All {
		if r.Name == name {
			return r, true
		}
	}
	return Report{}, false
}

// Names lists the reports' names in catalogue order.
func Names() []string {
	names := make([]string, len(All))
	for i, r := range All {
		names[i] = r.Name
	}
	return names
}

func columns(pairs ...string) []Column {
	cols := make([]Column, 0, len(pairs)/2)
	for i := 0; i+1 < len(pairs); i += 2 {
		cols = append(cols, Column{Name: pairs[i], JSON: pairs[i+1]})
	}
	return cols
}

// value turns a nullable result into a cell: nil for NULL.
func value[T any](v *T) any {
	if v == nil {
		return nil
	}
	return *v
}

// All is the catalogue, in the order the documentation presents it.
var All = []Report{
	{
		Name:     "leases",
		Source:   "key_leases",
		Summary:  "one row per lease that started in the range: start, end, how it ended, keep-alives, duration",
		PerLease: true,
		Columns: columns("pool", "pool", "key_id", "keyId", "lease_token", "leaseToken", "started_at", "startedAt",
			"ended_at", "endedAt", "ended_by", "endedBy", "keep_alives", "keepAlives", "duration_seconds", "durationSeconds"),
		run: func(ctx context.Context, s *store.Reports, p Params) ([][]any, error) {
			leases, err := s.Leases(ctx, p.From, p.To, p.Pool, p.Limit)
			rows := make([][]any, len(leases))
			for i, l := range leases {
				rows[i] = []any{l.Pool, l.KeyID.String(), l.LeaseToken, l.StartedAt, value(l.EndedAt), value(l.EndedBy),
					l.KeepAlives, value(l.DurationSeconds)}
			}
			return rows, err
		},
	},
	{
		Name:    "lease-activity",
		Source:  "lease_activity_hourly",
		Summary: "per pool and hour: leases claimed, released by their holder, expired by the background job, ended by deletion, and keep-alives",
		Columns: columns("pool", "pool", "hour", "hour", "assigned", "assigned", "released", "released",
			"lease_expired", "leaseExpired", "ended_by_deletion", "endedByDeletion", "keep_alives", "keepAlives"),
		run: func(ctx context.Context, s *store.Reports, p Params) ([][]any, error) {
			activity, err := s.LeaseActivity(ctx, p.From, p.To, p.Pool)
			rows := make([][]any, len(activity))
			for i, a := range activity {
				rows[i] = []any{a.Pool, a.Hour, a.Claimed, a.Released, a.LeaseExpired, a.EndedByDeletion, a.KeepAlives}
			}
			return rows, err
		},
	},
	{
		Name:    "lease-durations",
		Source:  "lease_durations_hourly",
		Summary: "per pool and hour of start: leases, how many ended, and mean, p50, p95 and max duration in seconds of those",
		Columns: columns("pool", "pool", "hour", "hour", "leases", "leases", "ended", "ended",
			"mean_seconds", "meanSeconds", "p50_seconds", "p50Seconds", "p95_seconds", "p95Seconds", "max_seconds", "maxSeconds"),
		run: func(ctx context.Context, s *store.Reports, p Params) ([][]any, error) {
			durations, err := s.LeaseDurations(ctx, p.From, p.To, p.Pool)
			rows := make([][]any, len(durations))
			for i, d := range durations {
				rows[i] = []any{d.Pool, d.Hour, d.Leases, d.Ended, value(d.MeanSeconds), value(d.P50Seconds),
					value(d.P95Seconds), value(d.MaxSeconds)}
			}
			return rows, err
		},
	},
	{
		Name:    "key-activity",
		Source:  "key_activity_hourly",
		Summary: "per pool and hour: keys created, deleted by a client, and expired",
		Columns: columns("pool", "pool", "hour", "hour", "created", "created", "deleted", "deleted", "expired", "expired"),
		run: func(ctx context.Context, s *store.Reports, p Params) ([][]any, error) {
			activity, err := s.KeyActivity(ctx, p.From, p.To, p.Pool)
			rows := make([][]any, len(activity))
			for i, a := range activity {
				rows[i] = []any{a.Pool, a.Hour, a.Created, a.Deleted, a.Expired}
			}
			return rows, err
		},
	},
	{
		Name:    "utilisation",
		Source:  "pool_utilisation(from, to, pool)",
		Summary: "per pool and hour: key-seconds, seat-seconds, held seat-seconds (blocked_seconds) and the share of seat-time spent held",
		Columns: columns("pool", "pool", "hour", "hour", "key_seconds", "keySeconds", "seat_seconds", "seatSeconds",
			"blocked_seconds", "blockedSeconds", "utilisation", "utilisation"),
		run: func(ctx context.Context, s *store.Reports, p Params) ([][]any, error) {
			utilisation, err := s.Utilisation(ctx, p.From, p.To, p.Pool)
			rows := make([][]any, len(utilisation))
			for i, u := range utilisation {
				rows[i] = []any{u.Pool, u.Hour, u.KeySeconds, u.SeatSeconds, u.HeldSeconds, u.Utilisation}
			}
			return rows, err
		},
	},
	{
		Name:    "key-cooldowns",
		Source:  "key_cooldowns_hourly",
		Summary: "per pool and hour: the keys released with a cooldown, most cooldowns first, with their total and longest cooldown in seconds",
		Columns: columns("pool", "pool", "hour", "hour", "key_id", "keyId", "cooldowns", "cooldowns",
			"total_seconds", "totalSeconds", "max_seconds", "maxSeconds"),
		run: func(ctx context.Context, s *store.Reports, p Params) ([][]any, error) {
			cooldowns, err := s.KeyCooldowns(ctx, p.From, p.To, p.Pool)
			rows := make([][]any, len(cooldowns))
			for i, c := range cooldowns {
				rows[i] = []any{c.Pool, c.Hour, c.KeyID.String(), c.Cooldowns, c.TotalSeconds, c.MaxSeconds}
			}
			return rows, err
		},
	},
}
