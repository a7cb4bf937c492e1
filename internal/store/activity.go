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
// first, the current minute last; minutes without events have zeros. It
// reads the per-minute rollup (at most 1,440 minutes: the rollup keeps two
// days) and the events not folded into it yet.
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

// LeaseDurationBounds are the limits, in seconds, of the buckets of
// LeaseDurationHistogram: those of lease_duration_bucket (migration 00015),
// which the rollups count leases by.
var LeaseDurationBounds = []float64{1, 5, 15, 30, 60, 120, 300, 900}

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

// LeaseDurationHistogram counts the leases of the pool (every pool when pool
// is empty) that started in the last minutes minutes, by duration, in the
// buckets of LeaseDurationBounds.
func (r *Reports) LeaseDurationHistogram(ctx context.Context, pool string, minutes int) (DurationHistogram, error) {
	h := DurationHistogram{Bounds: LeaseDurationBounds, Ended: make([]int64, len(LeaseDurationBounds)+1)}
	add := func(bucket int32, leases int64) {
		if bucket < 0 {
			h.Held += leases
			return
		}
		h.Ended[bucket] += leases
	}
	if pool == "" {
		rows, err := read(ctx, r, (*dbsqlc.Queries).KeyLeasesDurationHistogramAllPools, int32(minutes))
		if err != nil {
			return DurationHistogram{}, classify(err)
		}
		for _, row := range rows {
			add(row.Bucket, row.Leases)
		}
		return h, nil
	}
	rows, err := read(ctx, r, (*dbsqlc.Queries).KeyLeasesDurationHistogram, dbsqlc.KeyLeasesDurationHistogramParams{
		Minutes: int32(minutes), Pool: pool,
	})
	if err != nil {
		return DurationHistogram{}, classify(err)
	}
	for _, row := range rows {
		add(row.Bucket, row.Leases)
	}
	return h, nil
}
