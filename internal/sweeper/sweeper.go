// Package sweeper is the background job that ends what nobody kept alive:
// it frees keys whose lease has ended and deletes keys whose life has ended.
// It also folds the pools' count changes into their totals, removes the
// counts of pools left without keys and the expired registrations of
// waiting clients (those of replicas that died), removes history older
// than the retention, and folds new history into the rollups that reports
// and the dashboard's charts read.
//
// It is safe to run on every replica at once: each batch is one short
// statement that locks its rows with SKIP LOCKED, so two sweepers never work
// on the same key and neither stalls a claim for long.
package sweeper

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/tokenorchestrator/tokenorchestrator/internal/config"
	"github.com/tokenorchestrator/tokenorchestrator/internal/startstop"
	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
)

// Store is what the sweeper needs of the key store.
type Store interface {
	ReleaseEndedLeases(ctx context.Context, max int) (int, error)
	DeleteExpired(ctx context.Context, max int) (int, error)
	DeleteExpiredWaiters(ctx context.Context, max int) (int, error)
	DeleteHistoryOlderThan(ctx context.Context, age time.Duration, max int) (int, error)
	FoldHistory(ctx context.Context, max int) (folded int, caughtUp bool, err error)
	FoldCounts(ctx context.Context) (int, error)
	RemoveEmptyPools(ctx context.Context, max int) (int, error)
	CleanupHorizon(ctx context.Context) (store.Horizon, error)
	DeleteExpiredClaimRequests(ctx context.Context, max int) (int, error)
	EndCooldowns(ctx context.Context, max int) (int, error)
}

// Config holds the sweeper's settings.
type Config struct {
	// Interval between passes. A lease that nobody keeps alive is released no
	// later than LEASE_TTL + Interval (plus the pass's own duration). Zero
	// means config.DefaultSweepInterval.
	Interval time.Duration
	// BatchSize is the most rows one statement touches; a pass repeats a
	// statement until it comes back with fewer. Zero means 1000.
	BatchSize int
	// HistoryRetention is how long history rows are kept. Zero means
	// config.DefaultHistoryRetention.
	HistoryRetention time.Duration
	// LeaseWorkers is how many statements free ended leases at once. Many
	// leases ending together (a fleet of clients gone at once) are freed
	// sooner when batches run side by side; SKIP LOCKED keeps them apart.
	// Zero means 4.
	LeaseWorkers int
	// HistoryTimePerPass bounds the time one pass spends deleting history,
	// and again the time it spends folding history into the rollups.
	// A pass keeps deleting batches while they come back full, so that
	// retention keeps up however fast history is written, but stops once
	// this much time has passed since its first history batch (which always
	// runs): a backlog (after a long outage, or a shorter retention) is
	// worked off over several passes, and delays the release of ended leases
	// in the next pass by no more than this. Zero means half the Interval.
	HistoryTimePerPass time.Duration
	// Logger receives a line for every pass that did something, and errors.
	// Nil means slog.Default().
	Logger *slog.Logger
	// Leading, when set, tells whether this replica leads the job: passes
	// are skipped while it does not. Nil: every replica sweeps, which is
	// safe (SKIP LOCKED) and keeps the release deadline when a replica dies.
	Leading func() bool
	// OnPass, when set, is called after every pass with its result; tests
	// wait on it instead of sleeping.
	OnPass func(Result)
	// SnapshotAgeWarning: when a session of the database has held a
	// snapshot for longer than this, a warning names it, once a minute while
	// it lasts. Such a snapshot keeps every dead row version the hot path
	// leaves behind, and claims slow down as they pile up. Zero: no check.
	SnapshotAgeWarning time.Duration
	// TracerProvider, when set, traces every pass: a span whose children
	// are the pass's statements. Defaults to none.
	TracerProvider trace.TracerProvider
}

// horizonCheckEvery is how often the background job looks at the cleanup
// horizon, and horizonWarnEvery how often it repeats a warning.
const (
	horizonCheckEvery = 10 * time.Second
	horizonWarnEvery  = time.Minute
)

// Result says what one pass did.
type Result struct {
	LeasesReleased int
	KeysExpired    int
	// WaitersExpired counts registrations of waiting clients deleted once
	// expired: a replica that dies never withdraws its own.
	WaitersExpired int
	HistoryDeleted int
	// HistoryFolded is how many history rows were added to the rollups.
	HistoryFolded int
	// CountChangesFolded is how many count change rows were folded into the
	// pools' totals; EmptyPoolsRemoved how many pools without keys lost
	// their counts.
	CountChangesFolded int
	EmptyPoolsRemoved  int
	Err                error

	// ClaimRequestsDeleted is how many records of idempotent claims, past
	// their time, were deleted.
	ClaimRequestsDeleted int
	// CooldownsEnded is how many keys became claimable again once their
	// cooldown was over.
	CooldownsEnded int
}

// didWork reports whether the pass changed anything.
func (r Result) didWork() bool {
	return r.LeasesReleased > 0 || r.KeysExpired > 0 || r.WaitersExpired > 0 || r.HistoryDeleted > 0 || r.CooldownsEnded > 0
}

// Sweeper runs passes on a ticker until stopped.
type Sweeper struct {
	// Runner gives the sweeper Stop and Started.
	startstop.Runner
	store Store
	cfg   Config

	// Owned by the loop's goroutine.
	horizonChecked, horizonWarned time.Time
}

// New returns a sweeper over the store.
func New(store Store, cfg Config) *Sweeper {
	if cfg.Interval <= 0 {
		cfg.Interval = config.DefaultSweepInterval
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 1000
	}
	if cfg.HistoryRetention <= 0 {
		cfg.HistoryRetention = config.DefaultHistoryRetention
	}
	if cfg.LeaseWorkers <= 0 {
		cfg.LeaseWorkers = 4
	}
	if cfg.HistoryTimePerPass <= 0 {
		cfg.HistoryTimePerPass = cfg.Interval / 2
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Sweeper{store: store, cfg: cfg}
}

// Start runs passes in the background until Stop is called or ctx ends.
func (s *Sweeper) Start(ctx context.Context) error {
	return s.StartFunc(ctx, s.loop)
}

func (s *Sweeper) loop(ctx context.Context) {
	ticker := time.NewTicker(s.cfg.Interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		if s.cfg.Leading != nil && !s.cfg.Leading() {
			continue
		}
		result := s.tracedPass(ctx)
		switch {
		case result.Err != nil && ctx.Err() == nil:
			s.cfg.Logger.Warn("sweep failed", "error", result.Err, "leases_released", result.LeasesReleased,
				"keys_expired", result.KeysExpired, "waiters_expired", result.WaitersExpired, "history_deleted", result.HistoryDeleted)
		case result.didWork():
			s.cfg.Logger.Info("sweep", "leases_released", result.LeasesReleased, "keys_expired", result.KeysExpired,
				"cooldowns_ended", result.CooldownsEnded, "waiters_expired", result.WaitersExpired, "history_deleted", result.HistoryDeleted)
		}
		if s.cfg.OnPass != nil {
			s.cfg.OnPass(result)
		}
		s.checkHorizon(ctx)
	}
}

// tracedPass runs a pass, in a span of its own when tracing is on.
func (s *Sweeper) tracedPass(ctx context.Context) Result {
	if s.cfg.TracerProvider == nil {
		return s.RunOnce(ctx)
	}
	ctx, span := s.cfg.TracerProvider.Tracer("github.com/tokenorchestrator/tokenorchestrator/internal/sweeper").
		Start(ctx, "sweeper.pass")
	defer span.End()
	result := s.RunOnce(ctx)
	if span.IsRecording() {
		span.SetAttributes(attribute.Int("sweeper.leases_released", result.LeasesReleased),
			attribute.Int("sweeper.keys_expired", result.KeysExpired))
		if result.Err != nil {
			span.SetStatus(codes.Error, result.Err.Error())
		}
	}
	return result
}

// checkHorizon warns about a snapshot old enough to hurt, naming the
// session that holds it.
func (s *Sweeper) checkHorizon(ctx context.Context) {
	if s.cfg.SnapshotAgeWarning <= 0 || time.Since(s.horizonChecked) < horizonCheckEvery {
		return
	}
	s.horizonChecked = time.Now()
	h, err := s.store.CleanupHorizon(ctx)
	if err != nil || h.SnapshotAge < s.cfg.SnapshotAgeWarning || time.Since(s.horizonWarned) < horizonWarnEvery {
		return
	}
	s.horizonWarned = time.Now()
	s.cfg.Logger.Warn("an old snapshot holds back the database's cleanup; claims slow down while it lasts",
		"snapshot_age", h.SnapshotAge.Round(time.Second), "pid", h.HolderPID, "application_name", h.HolderApplication,
		"state", h.HolderState, "xmin_age_transactions", h.XminAge)
}

// RunOnce makes one pass: it frees every key whose lease has ended, deletes
// every key whose life has ended, every expired registration of waiting
// clients and every record of an idempotent claim past its time, a batch at
// a time, folds the count changes and removes the counts of up to BatchSize
// empty pools, then deletes history older than the retention for up to
// HistoryTimePerPass, and folds new history into the rollups for up to
// HistoryTimePerPass again. Lease releases come first, so that history never
// delays them within a pass.
func (s *Sweeper) RunOnce(ctx context.Context) Result {
	var result Result
	var err error
	result.LeasesReleased, err = s.drainParallel(ctx, s.store.ReleaseEndedLeases, s.cfg.LeaseWorkers)
	result.Err = errors.Join(result.Err, err)
	// Right after the leases: a cooldown that is over makes a key
	// claimable, and its statement wakes the clients waiting for one.
	result.CooldownsEnded, err = s.drain(ctx, s.store.EndCooldowns, time.Time{})
	result.Err = errors.Join(result.Err, err)
	result.KeysExpired, err = s.drain(ctx, s.store.DeleteExpired, time.Time{})
	result.Err = errors.Join(result.Err, err)
	result.WaitersExpired, err = s.drain(ctx, s.store.DeleteExpiredWaiters, time.Time{})
	result.Err = errors.Join(result.Err, err)
	result.CountChangesFolded, err = s.store.FoldCounts(ctx)
	result.Err = errors.Join(result.Err, err)
	result.EmptyPoolsRemoved, err = s.store.RemoveEmptyPools(ctx, s.cfg.BatchSize)
	result.Err = errors.Join(result.Err, err)
	result.ClaimRequestsDeleted, err = s.drain(ctx, s.store.DeleteExpiredClaimRequests, time.Time{})
	result.Err = errors.Join(result.Err, err)
	result.HistoryDeleted, err = s.drain(ctx, s.deleteOldHistory, time.Now().Add(s.cfg.HistoryTimePerPass))
	result.Err = errors.Join(result.Err, err)
	// After retention, so that a backlog is not folded only to be deleted.
	result.HistoryFolded, err = s.foldHistory(ctx, time.Now().Add(s.cfg.HistoryTimePerPass))
	result.Err = errors.Join(result.Err, err)
	return result
}

// foldBatches is how many of BatchSize a fold of history takes at once: a
// fold locks no key, and each one first looks at the running transactions,
// so it takes more rows than the batches that change keys.
const foldBatches = 10

// foldHistory folds batches of history until the rollups have caught up or
// the deadline has passed; the first batch always runs.
func (s *Sweeper) foldHistory(ctx context.Context, deadline time.Time) (int, error) {
	total := 0
	for {
		n, caughtUp, err := s.store.FoldHistory(ctx, foldBatches*s.cfg.BatchSize)
		total += n
		if err != nil || caughtUp || !time.Now().Before(deadline) {
			return total, err
		}
	}
}

func (s *Sweeper) deleteOldHistory(ctx context.Context, max int) (int, error) {
	return s.store.DeleteHistoryOlderThan(ctx, s.cfg.HistoryRetention, max)
}

// drainParallel runs drain in several workers at once and sums what they
// did. A worker that finds a short batch stops; the others may still be
// busy with full ones.
func (s *Sweeper) drainParallel(ctx context.Context, batch func(context.Context, int) (int, error), workers int) (int, error) {
	if workers <= 1 {
		return s.drain(ctx, batch, time.Time{})
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total int
		errs  error
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := s.drain(ctx, batch, time.Time{})
			mu.Lock()
			total += n
			errs = errors.Join(errs, err)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return total, errs
}

// drain repeats one batch statement until a batch comes back short, or,
// when deadline is set, until the deadline has passed; the first batch
// always runs.
func (s *Sweeper) drain(ctx context.Context, batch func(context.Context, int) (int, error), deadline time.Time) (int, error) {
	total := 0
	for {
		n, err := batch(ctx, s.cfg.BatchSize)
		total += n
		if err != nil || n < s.cfg.BatchSize || (!deadline.IsZero() && !time.Now().Before(deadline)) {
			return total, err
		}
	}
}
