// Package sweeper is the background job that ends what nobody kept alive:
// it frees keys whose lease has ended and deletes keys whose life has ended.
// It also folds the pools' count changes into their totals, removes the
// counts of pools left without keys and the expired registrations of
// waiting clients (those of replicas that died), removes history older
// than the retention, and folds new history into the rollups that reports
// and the dashboard's charts read.
//
// Each of these chores is a Service of its own, with its own interval, its
// own passes and its own log lines; a Maintainer starts and stops them all
// together. The chores that bound what clients see (the release of ended
// leases, the end of cooldowns, the deletion of expired keys) run every
// Interval, SWEEP_INTERVAL; the cleanups that only keep tables small run
// less often.
//
// It is safe to run on every replica at once: each batch is one short
// statement that locks its rows with SKIP LOCKED, so two sweepers never work
// on the same key and neither stalls a claim for long.
package sweeper

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"go.opentelemetry.io/otel/trace"

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

// The defaults of Config, which New applies to a zero value. The server's
// configuration shows them as the defaults of its flags.
const (
	// IntervalDefault is the default of Config.Interval, SWEEP_INTERVAL.
	IntervalDefault = time.Second
	// BatchSizeDefault is the default of Config.BatchSize.
	BatchSizeDefault = 1000
	// HistoryRetentionDefault is the default of Config.HistoryRetention,
	// HISTORY_RETENTION.
	HistoryRetentionDefault = 30 * 24 * time.Hour
	// LeaseWorkersDefault is the default of Config.LeaseWorkers.
	LeaseWorkersDefault = 4
	// HistoryRetentionIntervalDefault is the least default of
	// Config.HistoryRetentionInterval.
	HistoryRetentionIntervalDefault = time.Minute
	// ClaimRequestIntervalDefault is the least default of
	// Config.ClaimRequestInterval.
	ClaimRequestIntervalDefault = 10 * time.Second
	// HorizonIntervalDefault is the default of Config.HorizonInterval.
	HorizonIntervalDefault = 10 * time.Second
	// SnapshotAgeWarningDefault is the SNAPSHOT_AGE_WARNING the server's
	// configuration gives Config.SnapshotAgeWarning unless told otherwise.
	// Config's own zero value turns the check off.
	SnapshotAgeWarningDefault = 5 * time.Minute
)

// Config holds the sweeper's settings.
type Config struct {
	// Interval between passes of the services whose work clients see or
	// wait for: the release of ended leases, the end of cooldowns, the
	// deletion of expired keys, and the cleanup of waiters' registrations,
	// the fold of the pools' counts (and removal of empty pools) and the
	// fold of history into the rollups. A lease that nobody keeps alive is
	// released no later than LEASE_TTL + Interval (plus the pass's own
	// duration). Defaults to IntervalDefault.
	Interval time.Duration
	// HistoryRetentionInterval between passes that delete history older
	// than the retention: a retention of days gains nothing from passes
	// every second. Defaults to HistoryRetentionIntervalDefault, or to
	// Interval when that is longer.
	HistoryRetentionInterval time.Duration
	// ClaimRequestInterval between passes that delete the expired records
	// of idempotent claims: a claim never reads an expired record, so they
	// only take room until then. Defaults to ClaimRequestIntervalDefault,
	// or to Interval when that is longer.
	ClaimRequestInterval time.Duration
	// HorizonInterval between looks at the database's cleanup horizon,
	// when SnapshotAgeWarning is set. Defaults to HorizonIntervalDefault.
	HorizonInterval time.Duration
	// BatchSize is the most rows one statement touches; a pass repeats a
	// statement until it comes back with fewer. Defaults to
	// BatchSizeDefault.
	BatchSize int
	// HistoryRetention is how long history rows are kept. Defaults to
	// HistoryRetentionDefault.
	HistoryRetention time.Duration
	// LeaseWorkers is how many statements free ended leases at once. Many
	// leases ending together (a fleet of clients gone at once) are freed
	// sooner when batches run side by side; SKIP LOCKED keeps them apart.
	// Defaults to LeaseWorkersDefault.
	LeaseWorkers int
	// HistoryTimePerPass bounds the time one pass of history retention
	// spends deleting history, and the time one pass of the history fold
	// spends folding it into the rollups. A pass keeps deleting batches
	// while they come back full, so that retention keeps up however fast
	// history is written, but stops once this much time has passed since
	// its first batch (which always runs): a backlog (after a long outage,
	// or a shorter retention) is worked off over several passes, and the
	// database is never given over to it for long. Defaults to half the
	// interval of the service.
	HistoryTimePerPass time.Duration
	// Logger receives a line for every pass that did something, and errors.
	// Defaults to slog.Default().
	Logger *slog.Logger
	// Leading, when set, tells whether this replica leads the job: every
	// service skips its passes while it does not. Defaults to none: every
	// replica sweeps, which is safe (SKIP LOCKED) and keeps the release
	// deadline when a replica dies.
	Leading func() bool
	// OnPass, when set, is called after every pass of every service with
	// what it did; tests wait on it instead of sleeping, and the metrics
	// count passes with it. The services call it from their own
	// goroutines, possibly at once. Defaults to none.
	OnPass func(Pass)
	// SnapshotAgeWarning: when a session of the database has held a
	// snapshot for longer than this, a warning names it, once a minute while
	// it lasts. Such a snapshot keeps every dead row version the hot path
	// leaves behind, and claims slow down as they pile up. Defaults to zero:
	// no check (the server's configuration gives SnapshotAgeWarningDefault).
	SnapshotAgeWarning time.Duration
	// TracerProvider, when set, traces every pass: a span whose children
	// are the pass's statements. Defaults to none.
	TracerProvider trace.TracerProvider
}

// withDefaults returns the configuration with every zero value replaced by
// its default.
func (c Config) withDefaults() Config {
	c.Interval = cmp.Or(c.Interval, IntervalDefault)
	c.HistoryRetentionInterval = cmp.Or(c.HistoryRetentionInterval, max(HistoryRetentionIntervalDefault, c.Interval))
	c.ClaimRequestInterval = cmp.Or(c.ClaimRequestInterval, max(ClaimRequestIntervalDefault, c.Interval))
	c.HorizonInterval = cmp.Or(c.HorizonInterval, HorizonIntervalDefault)
	c.BatchSize = cmp.Or(c.BatchSize, BatchSizeDefault)
	c.HistoryRetention = cmp.Or(c.HistoryRetention, HistoryRetentionDefault)
	c.LeaseWorkers = cmp.Or(c.LeaseWorkers, LeaseWorkersDefault)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// validate reports every setting that is out of range, all at once.
func (c Config) validate() error {
	var errs []error
	for _, d := range []struct {
		name  string
		value time.Duration
	}{
		{"Interval", c.Interval},
		{"HistoryRetentionInterval", c.HistoryRetentionInterval},
		{"ClaimRequestInterval", c.ClaimRequestInterval},
		{"HorizonInterval", c.HorizonInterval},
		{"HistoryRetention", c.HistoryRetention},
	} {
		if d.value < 0 {
			errs = append(errs, fmt.Errorf("%s must be positive (zero for the default), not %s", d.name, d.value))
		}
	}
	if c.BatchSize < 0 {
		errs = append(errs, fmt.Errorf("BatchSize must be positive (zero for the default), not %d", c.BatchSize))
	}
	if c.LeaseWorkers < 0 {
		errs = append(errs, fmt.Errorf("LeaseWorkers must be positive (zero for the default), not %d", c.LeaseWorkers))
	}
	if c.HistoryTimePerPass < 0 {
		errs = append(errs, fmt.Errorf("HistoryTimePerPass must be positive (zero for half of each service's interval), not %s", c.HistoryTimePerPass))
	}
	if c.SnapshotAgeWarning < 0 {
		errs = append(errs, fmt.Errorf("SnapshotAgeWarning must be positive (zero turns the check off), not %s", c.SnapshotAgeWarning))
	}
	return errors.Join(errs...)
}

// Result says what passes did: one pass of one service (which sets only
// its own counts), or the sum of several.
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

// count is one of a Result's counts, under the name its log lines, span
// attributes and metrics use.
type count struct {
	name string
	n    int
}

// counts returns the Result's counts, in a fixed order.
func (r Result) counts() []count {
	return []count{
		{"leases_released", r.LeasesReleased},
		{"cooldowns_ended", r.CooldownsEnded},
		{"keys_expired", r.KeysExpired},
		{"waiters_expired", r.WaitersExpired},
		{"count_changes_folded", r.CountChangesFolded},
		{"empty_pools_removed", r.EmptyPoolsRemoved},
		{"claim_requests_deleted", r.ClaimRequestsDeleted},
		{"history_deleted", r.HistoryDeleted},
		{"history_folded", r.HistoryFolded},
	}
}

// Rows is how many rows the passes changed, all counts together.
func (r Result) Rows() int {
	n := 0
	for _, c := range r.counts() {
		n += c.n
	}
	return n
}

// add adds other's counts and error to r.
func (r *Result) add(other Result) {
	r.LeasesReleased += other.LeasesReleased
	r.CooldownsEnded += other.CooldownsEnded
	r.KeysExpired += other.KeysExpired
	r.WaitersExpired += other.WaitersExpired
	r.CountChangesFolded += other.CountChangesFolded
	r.EmptyPoolsRemoved += other.EmptyPoolsRemoved
	r.ClaimRequestsDeleted += other.ClaimRequestsDeleted
	r.HistoryDeleted += other.HistoryDeleted
	r.HistoryFolded += other.HistoryFolded
	r.Err = errors.Join(r.Err, other.Err)
}

// Pass is one pass of one service: which, how long it took, what it did.
type Pass struct {
	// Service is the service's name, one of ServiceNames.
	Service  string
	Duration time.Duration
	Result
}

// The names of the services, in the order a Maintainer runs them.
const (
	// ServiceLeases frees the keys whose lease has ended.
	ServiceLeases = "leases"
	// ServiceCooldowns makes keys whose cooldown is over claimable again,
	// waking the clients that wait for one.
	ServiceCooldowns = "cooldowns"
	// ServiceKeys deletes the keys whose life has ended.
	ServiceKeys = "keys"
	// ServiceWaiters deletes expired registrations of waiting clients.
	ServiceWaiters = "waiters"
	// ServicePoolCounts folds the pools' count changes into their totals
	// and removes the counts of pools left without keys.
	ServicePoolCounts = "pool_counts"
	// ServiceClaimRequests deletes the expired records of idempotent
	// claims.
	ServiceClaimRequests = "claim_requests"
	// ServiceHistoryRetention deletes history older than the retention.
	ServiceHistoryRetention = "history_retention"
	// ServiceHistoryRollups folds new history into the rollups.
	ServiceHistoryRollups = "history_rollups"
	// ServiceHorizon warns of a snapshot old enough to hold back the
	// database's cleanup; it runs only with Config.SnapshotAgeWarning.
	ServiceHorizon = "horizon"
)

// ServiceNames returns the names of every service a Maintainer may run, in
// the order it runs them.
func ServiceNames() []string {
	return []string{ServiceLeases, ServiceCooldowns, ServiceKeys, ServiceWaiters, ServicePoolCounts,
		ServiceClaimRequests, ServiceHistoryRetention, ServiceHistoryRollups, ServiceHorizon}
}

// Maintainer starts and stops the services of the background job together.
type Maintainer struct {
	// Runner gives the maintainer Stop and Started.
	startstop.Runner
	cfg      Config
	services []*Service
}

// concurrentPasses is how many of a maintainer's services run a pass at
// once. Each pass holds a connection (the leases' pass up to LeaseWorkers),
// and the pool keeps the connections it opened: with every service free to
// run at once, an idle replica held nine connections instead of five, and
// replicas side by side ran a database out of connection slots. Two keep
// a slow pass (retention, a fold's backlog) from holding up the others.
const concurrentPasses = 2

// New returns the services over the store, ready to start. It panics when
// cfg holds a value out of range (a negative interval, say): the server's
// configuration refuses such values before they get here.
func New(st Store, cfg Config) *Maintainer {
	if err := cfg.validate(); err != nil {
		panic(fmt.Errorf("sweeper: invalid configuration: %w", err))
	}
	cfg = cfg.withDefaults()
	c := &chores{store: st, cfg: cfg}
	m := &Maintainer{cfg: cfg}
	slots := make(chan struct{}, concurrentPasses)
	add := func(name string, interval time.Duration, run func(context.Context) Result) {
		m.services = append(m.services, &Service{name: name, interval: interval, run: run, cfg: &m.cfg, slots: slots})
	}
	add(ServiceLeases, cfg.Interval, c.releaseEndedLeases)
	// Right after the leases: a cooldown that is over makes a key
	// claimable, and its statement wakes the clients waiting for one.
	add(ServiceCooldowns, cfg.Interval, c.endCooldowns)
	add(ServiceKeys, cfg.Interval, c.deleteExpiredKeys)
	add(ServiceWaiters, cfg.Interval, c.deleteExpiredWaiters)
	add(ServicePoolCounts, cfg.Interval, c.foldPoolCounts)
	add(ServiceClaimRequests, cfg.ClaimRequestInterval, c.deleteExpiredClaimRequests)
	add(ServiceHistoryRetention, cfg.HistoryRetentionInterval, c.deleteOldHistory)
	// After retention, in RunOnce, so that a backlog is not folded only to
	// be deleted.
	add(ServiceHistoryRollups, cfg.Interval, c.foldHistory)
	if cfg.SnapshotAgeWarning > 0 {
		h := &horizonCheck{store: st, cfg: cfg}
		add(ServiceHorizon, cfg.HorizonInterval, h.check)
	}
	// Services of one interval start their tickers apart, spread over it,
	// so that they do not all take a connection at the same moment.
	for i, s := range m.services {
		s.offset = time.Duration(i) * s.interval / time.Duration(len(m.services))
	}
	return m
}

// Services returns the services, in the order RunOnce runs them.
func (m *Maintainer) Services() []*Service {
	return slices.Clone(m.services)
}

// Service returns the service of that name, or nil.
func (m *Maintainer) Service(name string) *Service {
	for _, s := range m.services {
		if s.name == name {
			return s
		}
	}
	return nil
}

// Start starts every service, each running its passes in the background
// until Stop is called or ctx ends.
func (m *Maintainer) Start(ctx context.Context) error {
	return m.StartWith(ctx, func() (func(context.Context), error) {
		for i, s := range m.services {
			if err := s.Start(ctx); err != nil {
				stopAll(m.services[:i])
				return nil, err
			}
		}
		return func(ctx context.Context) {
			<-ctx.Done()
			stopAll(m.services)
		}, nil
	})
}

// stopAll stops the services one after the other.
func stopAll(services []*Service) {
	for _, s := range services {
		s.Stop()
	}
}

// RunOnce makes one pass of every service that changes rows (all but the
// horizon check), one after the
// other, and returns what they did together: it frees every key whose lease
// has ended, ends the cooldowns that are over, deletes every key whose life
// has ended and every expired registration of waiting clients, a batch at a
// time, folds the count changes and removes the counts of up to BatchSize
// empty pools, deletes every record of an idempotent claim past its time,
// then deletes history older than the retention for up to
// HistoryTimePerPass, and folds new history into the rollups for up to
// HistoryTimePerPass again. It ignores Leading and OnPass, and traces
// nothing: it is for tests and tools that want the job done now.
func (m *Maintainer) RunOnce(ctx context.Context) Result {
	var result Result
	for _, s := range m.services {
		if s.name != ServiceHorizon {
			result.add(s.RunOnce(ctx))
		}
	}
	return result
}
