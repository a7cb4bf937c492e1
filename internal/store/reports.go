package store

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/tokenorchestrator/tokenorchestrator/db/dbsqlc"
)

// The reports answer what the views over key_events (migrations/00002_reports.sql)
// answer. Each takes a time range and a pool; an empty pool means every
// pool. Hourly reports cover the UTC hours that overlap [from, to). The
// leases and their durations are read from key_leases, a row per lease;
// the other reports from the rollups of the history (migration 00015) and
// the events not folded into them yet. One pool and every pool are
// separate statements, each with the index range it needs.

// Lease is one lease as the history records it.
type Lease struct {
	Pool       string
	KeyID      uuid.UUID
	LeaseToken int64
	StartedAt  time.Time
	// EndedAt, EndedBy and DurationSeconds are nil while the lease is held.
	EndedAt *time.Time
	// EndedBy is released, lease_expired, deleted or expired.
	EndedBy         *string
	KeepAlives      int64
	DurationSeconds *float64
}

// LeaseActivity counts one pool's lease events of one hour.
type LeaseActivity struct {
	Pool            string
	Hour            time.Time
	Claimed         int64
	Released        int64
	LeaseExpired    int64
	EndedByDeletion int64
	KeepAlives      int64
}

// LeaseDurations describes the leases of one pool that started in one hour.
type LeaseDurations struct {
	Pool   string
	Hour   time.Time
	Leases int64
	Ended  int64
	// The statistics are over the ended leases; nil when none has ended.
	MeanSeconds *float64
	P50Seconds  *float64
	P95Seconds  *float64
	MaxSeconds  *float64
}

// KeyActivity counts one pool's keys created, deleted and expired in one hour.
type KeyActivity struct {
	Pool    string
	Hour    time.Time
	Created int64
	Deleted int64
	Expired int64
}

// KeyCooldowns is how often one key of a pool was released with a cooldown
// in one hour, and for how long in total and at most.
type KeyCooldowns struct {
	Pool         string
	Hour         time.Time
	KeyID        uuid.UUID
	Cooldowns    int64
	TotalSeconds float64
	MaxSeconds   float64
}

// Utilisation is the share of one pool's key-time spent held in one hour.
type Utilisation struct {
	Pool        string
	Hour        time.Time
	KeySeconds  float64
	SeatSeconds float64
	HeldSeconds float64
	Utilisation float64
}

// Leases returns up to max leases that started in [from, to), oldest first.
func (r *Reports) Leases(ctx context.Context, from, to time.Time, pool string, max int) ([]Lease, error) {
	var rows []dbsqlc.KeyLease
	var err error
	if pool == "" {
		rows, err = read(ctx, r, (*dbsqlc.Queries).KeyLeasesListAllPools, dbsqlc.KeyLeasesListAllPoolsParams{
			RangeFrom: from, RangeTo: to, Max: int32(max),
		})
	} else {
		rows, err = read(ctx, r, (*dbsqlc.Queries).KeyLeasesList, dbsqlc.KeyLeasesListParams{
			RangeFrom: from, RangeTo: to, Pool: pool, Max: int32(max),
		})
	}
	if err != nil {
		return nil, classify(err)
	}
	leases := make([]Lease, len(rows))
	for i, row := range rows {
		leases[i] = Lease{
			Pool: row.Pool, KeyID: row.KeyID, StartedAt: row.StartedAt, EndedAt: row.EndedAt,
			EndedBy: row.EndedBy, KeepAlives: row.KeepAlives, DurationSeconds: row.DurationSeconds,
		}
		if row.LeaseToken != nil {
			leases[i].LeaseToken = *row.LeaseToken
		}
	}
	return leases, nil
}

// LeaseActivity returns the lease events per pool and hour.
func (r *Reports) LeaseActivity(ctx context.Context, from, to time.Time, pool string) ([]LeaseActivity, error) {
	if pool == "" {
		rows, err := read(ctx, r, (*dbsqlc.Queries).LeaseActivityHourlyListAllPools, dbsqlc.LeaseActivityHourlyListAllPoolsParams{
			RangeFrom: from, RangeTo: to,
		})
		return convert(rows, err, func(row dbsqlc.LeaseActivityHourlyListAllPoolsRow) LeaseActivity { return LeaseActivity(row) })
	}
	rows, err := read(ctx, r, (*dbsqlc.Queries).LeaseActivityHourlyList, dbsqlc.LeaseActivityHourlyListParams{
		RangeFrom: from, RangeTo: to, Pool: pool,
	})
	return convert(rows, err, func(row dbsqlc.LeaseActivityHourlyListRow) LeaseActivity { return LeaseActivity(row) })
}

// convert turns the rows of a report's statement into the store's type.
func convert[R, T any](rows []R, err error, f func(R) T) ([]T, error) {
	if err != nil {
		return nil, classify(err)
	}
	out := make([]T, len(rows))
	for i, row := range rows {
		out[i] = f(row)
	}
	return out, nil
}

// LeaseDurations returns the lease durations per pool and hour of start.
func (r *Reports) LeaseDurations(ctx context.Context, from, to time.Time, pool string) ([]LeaseDurations, error) {
	if pool == "" {
		rows, err := read(ctx, r, (*dbsqlc.Queries).LeaseDurationsHourlyListAllPools, dbsqlc.LeaseDurationsHourlyListAllPoolsParams{
			RangeFrom: from, RangeTo: to,
		})
		return convert(rows, err, func(row dbsqlc.LeaseDurationsHourlyListAllPoolsRow) LeaseDurations {
			return leaseDurations(dbsqlc.LeaseDurationsHourlyListRow(row))
		})
	}
	rows, err := read(ctx, r, (*dbsqlc.Queries).LeaseDurationsHourlyList, dbsqlc.LeaseDurationsHourlyListParams{
		RangeFrom: from, RangeTo: to, Pool: pool,
	})
	return convert(rows, err, leaseDurations)
}

// leaseDurations leaves the statistics of an hour without an ended lease
// unset, as the view does (the statements answer 0 for them).
func leaseDurations(row dbsqlc.LeaseDurationsHourlyListRow) LeaseDurations {
	d := LeaseDurations{Pool: row.Pool, Hour: row.Hour, Leases: row.Leases, Ended: row.Ended}
	if row.Ended > 0 {
		d.MeanSeconds, d.P50Seconds, d.P95Seconds, d.MaxSeconds = &row.MeanSeconds, &row.P50Seconds, &row.P95Seconds, &row.MaxSeconds
	}
	return d
}

// KeyActivity returns the keys created, deleted and expired per pool and hour.
func (r *Reports) KeyActivity(ctx context.Context, from, to time.Time, pool string) ([]KeyActivity, error) {
	if pool == "" {
		rows, err := read(ctx, r, (*dbsqlc.Queries).KeyActivityHourlyListAllPools, dbsqlc.KeyActivityHourlyListAllPoolsParams{
			RangeFrom: from, RangeTo: to,
		})
		return convert(rows, err, func(row dbsqlc.KeyActivityHourlyListAllPoolsRow) KeyActivity { return KeyActivity(row) })
	}
	rows, err := read(ctx, r, (*dbsqlc.Queries).KeyActivityHourlyList, dbsqlc.KeyActivityHourlyListParams{
		RangeFrom: from, RangeTo: to, Pool: pool,
	})
	return convert(rows, err, func(row dbsqlc.KeyActivityHourlyListRow) KeyActivity { return KeyActivity(row) })
}

// Utilisation returns the share of seat-time spent held per pool and hour.
func (r *Reports) Utilisation(ctx context.Context, from, to time.Time, pool string) ([]Utilisation, error) {
	if pool == "" {
		rows, err := read(ctx, r, (*dbsqlc.Queries).PoolUtilisationListAllPools, dbsqlc.PoolUtilisationListAllPoolsParams{
			RangeFrom: from, RangeTo: to,
		})
		return convert(rows, err, func(row dbsqlc.PoolUtilisationListAllPoolsRow) Utilisation { return Utilisation(row) })
	}
	rows, err := read(ctx, r, (*dbsqlc.Queries).PoolUtilisationList, dbsqlc.PoolUtilisationListParams{
		RangeFrom: from, RangeTo: to, Pool: pool,
	})
	return convert(rows, err, func(row dbsqlc.PoolUtilisationListRow) Utilisation { return Utilisation(row) })
}

// KeyCooldowns returns, per pool and hour, the keys released with a
// cooldown, those that cooled down most first.
func (r *Reports) KeyCooldowns(ctx context.Context, from, to time.Time, pool string) ([]KeyCooldowns, error) {
	if pool == "" {
		rows, err := read(ctx, r, (*dbsqlc.Queries).KeyCooldownsHourlyListAllPools, dbsqlc.KeyCooldownsHourlyListAllPoolsParams{
			RangeFrom: from, RangeTo: to,
		})
		return convert(rows, err, func(row dbsqlc.KeyCooldownsHourlyListAllPoolsRow) KeyCooldowns { return KeyCooldowns(row) })
	}
	rows, err := read(ctx, r, (*dbsqlc.Queries).KeyCooldownsHourlyList, dbsqlc.KeyCooldownsHourlyListParams{
		RangeFrom: from, RangeTo: to, Pool: pool,
	})
	return convert(rows, err, func(row dbsqlc.KeyCooldownsHourlyListRow) KeyCooldowns { return KeyCooldowns(row) })
}
