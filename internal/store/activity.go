package store

import (
	"context"
	"time"

	"github.com/tokenorchestrator/tokenorchestrator/db/dbsqlc"
)

// MinuteActivity counts the history events of one UTC minute.
type MinuteActivity struct {
	Minute       time.Time
	Created      int64
	Claimed      int64
	Released     int64
	LeaseExpired int64
	KeptAlive    int64
	Deleted      int64
	Expired      int64
}

// ActivityPerMinute returns the events of the pool (every pool when pool is
// empty) in each of the last minutes minutes by the database clock, oldest
// first, the current minute last; minutes without events have zeros.
//
// One pool and every pool are separate statements, each with its own index
// range: a generic plan cannot use the pool's index for a pool that may be
// NULL.
func (r *Reports) ActivityPerMinute(ctx context.Context, pool string, minutes int) ([]MinuteActivity, error) {
	out := []MinuteActivity{}
	if pool == "" {
		rows, err := read(ctx, r, (*dbsqlc.Queries).KeyEventsPerMinuteAllPools, int32(minutes))
		if err != nil {
			return nil, classify(err)
		}
		for _, row := range rows {
			out = append(out, MinuteActivity(row))
		}
		return out, nil
	}
	rows, err := read(ctx, r, (*dbsqlc.Queries).KeyEventsPerMinute, dbsqlc.KeyEventsPerMinuteParams{
		Minutes: int32(minutes), Pool: pool,
	})
	if err != nil {
		return nil, classify(err)
	}
	for _, row := range rows {
		out = append(out, MinuteActivity(row))
	}
	return out, nil
}

// DurationHistogram counts the leases that started in a span of time by
// how long they lasted.
type DurationHistogram struct {
	// Bounds are the buckets' limits in seconds, ascending: bucket 0 holds
	// leases shorter than Bounds[0], bucket i those of Bounds[i-1] up to
	// Bounds[i], and the last one those of Bounds[len-1] or longer.
	Bounds []float64
	// Ended has len(Bounds)+1 counts, one per bucket.
	Ended []int64
	// Held counts the leases that have not ended yet.
	Held int64
}

// LeaseDurationHistogram counts the leases of the pool (every pool when pool is
// empty) that started in the last minutes minutes, by duration.
func (r *Reports) LeaseDurationHistogram(ctx context.Context, pool string, minutes int, bounds []float64) (DurationHistogram, error) {
	rows, err := read(ctx, r, (*dbsqlc.Queries).KeyLeasesDurationHistogram, dbsqlc.KeyLeasesDurationHistogramParams{
		Bounds: bounds, Minutes: int32(minutes), Pool: poolFilter(pool),
	})
	if err != nil {
		return DurationHistogram{}, classify(err)
	}
	h := DurationHistogram{Bounds: bounds, Ended: make([]int64, len(bounds)+1)}
	for _, row := range rows {
		if row.Bucket < 0 {
			h.Held += row.Leases
			continue
		}
		h.Ended[row.Bucket] += row.Leases
	}
	return h, nil
}
