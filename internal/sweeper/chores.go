package sweeper

import (
	"cmp"
	"context"
	"errors"
	"sync"
	"time"
)

// chores are the passes of the services over the store, one method each.
type chores struct {
	store Store
	// cfg has its defaults applied.
	cfg Config
}

// releaseEndedLeases frees every key whose lease has ended, with
// LeaseWorkers statements at once.
func (c *chores) releaseEndedLeases(ctx context.Context) Result {
	n, err := c.drainParallel(ctx, c.store.ReleaseEndedLeases, c.cfg.LeaseWorkers)
	return Result{LeasesReleased: n, Err: err}
}

// endCooldowns makes claimable again every key whose cooldown is over.
func (c *chores) endCooldowns(ctx context.Context) Result {
	n, err := c.drain(ctx, c.store.EndCooldowns, time.Time{})
	return Result{CooldownsEnded: n, Err: err}
}

// deleteExpiredKeys deletes every key whose life has ended.
func (c *chores) deleteExpiredKeys(ctx context.Context) Result {
	n, err := c.drain(ctx, c.store.DeleteExpired, time.Time{})
	return Result{KeysExpired: n, Err: err}
}

// deleteExpiredWaiters deletes every expired registration of waiting
// clients.
func (c *chores) deleteExpiredWaiters(ctx context.Context) Result {
	n, err := c.drain(ctx, c.store.DeleteExpiredWaiters, time.Time{})
	return Result{WaitersExpired: n, Err: err}
}

// foldPoolCounts folds the count changes into the pools' totals, then
// removes the counts of up to BatchSize pools left without keys. Both take
// one advisory lock, and the removal gives way to a fold that holds it: one
// service runs them one after the other, so that on one replica they never
// meet.
func (c *chores) foldPoolCounts(ctx context.Context) Result {
	var result Result
	var err error
	result.CountChangesFolded, err = c.store.FoldCounts(ctx)
	result.Err = errors.Join(result.Err, err)
	result.EmptyPoolsRemoved, err = c.store.RemoveEmptyPools(ctx, c.cfg.BatchSize)
	result.Err = errors.Join(result.Err, err)
	return result
}

// deleteExpiredClaimRequests deletes every record of an idempotent claim
// past its time.
func (c *chores) deleteExpiredClaimRequests(ctx context.Context) Result {
	n, err := c.drain(ctx, c.store.DeleteExpiredClaimRequests, time.Time{})
	return Result{ClaimRequestsDeleted: n, Err: err}
}

// deleteOldHistory deletes history older than the retention, for up to
// HistoryTimePerPass.
func (c *chores) deleteOldHistory(ctx context.Context) Result {
	deadline := time.Now().Add(c.timePerPass(c.cfg.HistoryRetentionInterval))
	n, err := c.drain(ctx, func(ctx context.Context, max int) (int, error) {
		return c.store.DeleteHistoryOlderThan(ctx, c.cfg.HistoryRetention, max)
	}, deadline)
	return Result{HistoryDeleted: n, Err: err}
}

// foldBatches is how many of BatchSize a fold of history takes at once: a
// fold locks no key, and each one first looks at the running transactions,
// so it takes more rows than the batches that change keys.
const foldBatches = 10

// foldHistory folds batches of history into the rollups until they have
// caught up or HistoryTimePerPass has passed; the first batch always runs.
func (c *chores) foldHistory(ctx context.Context) Result {
	deadline := time.Now().Add(c.timePerPass(c.cfg.Interval))
	total := 0
	for {
		n, caughtUp, err := c.store.FoldHistory(ctx, foldBatches*c.cfg.BatchSize)
		total += n
		if err != nil || caughtUp || !time.Now().Before(deadline) {
			return Result{HistoryFolded: total, Err: err}
		}
	}
}

// timePerPass is HistoryTimePerPass, or half the interval of the service
// when unset.
func (c *chores) timePerPass(interval time.Duration) time.Duration {
	return cmp.Or(c.cfg.HistoryTimePerPass, interval/2)
}

// drainParallel runs drain in several workers at once and sums what they
// did. A worker that finds a short batch stops; the others may still be
// busy with full ones.
func (c *chores) drainParallel(ctx context.Context, batch func(context.Context, int) (int, error), workers int) (int, error) {
	if workers <= 1 {
		return c.drain(ctx, batch, time.Time{})
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total int
		errs  error
	)
	for range workers {
		wg.Go(func() {
			n, err := c.drain(ctx, batch, time.Time{})
			mu.Lock()
			total += n
			errs = errors.Join(errs, err)
			mu.Unlock()
		})
	}
	wg.Wait()
	return total, errs
}

// drain repeats one batch statement until a batch comes back short, or,
// when deadline is set, until the deadline has passed; the first batch
// always runs.
func (c *chores) drain(ctx context.Context, batch func(context.Context, int) (int, error), deadline time.Time) (int, error) {
	total := 0
	for {
		n, err := batch(ctx, c.cfg.BatchSize)
		total += n
		if err != nil || n < c.cfg.BatchSize || (!deadline.IsZero() && !time.Now().Before(deadline)) {
			return total, err
		}
	}
}

// horizonWarnEvery is how often a warning about an old snapshot is
// repeated while the snapshot lasts.
const horizonWarnEvery = time.Minute

// horizonCheck warns about a snapshot old enough to hurt, naming the
// session that holds it. It changes no row.
type horizonCheck struct {
	store Store
	cfg   Config

	mu     sync.Mutex
	warned time.Time
}

func (h *horizonCheck) check(ctx context.Context) Result {
	horizon, err := h.store.CleanupHorizon(ctx)
	if err != nil {
		return Result{Err: err}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if horizon.SnapshotAge < h.cfg.SnapshotAgeWarning || time.Since(h.warned) < horizonWarnEvery {
		return Result{}
	}
	h.warned = time.Now()
	h.cfg.Logger.Warn("an old snapshot holds back the database's cleanup; claims slow down while it lasts",
		"snapshot_age", horizon.SnapshotAge.Round(time.Second), "pid", horizon.HolderPID, "application_name", horizon.HolderApplication,
		"state", horizon.HolderState, "xmin_age_transactions", horizon.XminAge)
	return Result{}
}
