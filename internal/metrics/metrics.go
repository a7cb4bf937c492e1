// Package metrics holds the server's Prometheus collectors, each server on
// its own registry so that several servers can live in one process.
package metrics

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tokenorchestrator/tokenorchestrator/internal/buildinfo"
	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
	"github.com/tokenorchestrator/tokenorchestrator/internal/sweeper"
)

// DefaultMaxPools is how many distinct pools get a label value of their
// own unless configured.
const DefaultMaxPools = 1000

// OtherPool is the pool label of every pool past the cap.
const OtherPool = "_other"

// Config holds the settings of the collectors.
type Config struct {
	// Counts, when set, is read at every scrape for the per-pool key
	// gauges. Defaults to none: no such gauges.
	Counts func(context.Context) ([]store.PoolCounts, error)
	// Logger receives the failures of scrape-time reads. Defaults to
	// slog.Default().
	Logger *slog.Logger
	// MaxPools caps the distinct values of the pool label: pool names come
	// from clients, and each would be new series of every per-pool metric.
	// The first MaxPools pools seen get their own value; later ones are
	// counted under OtherPool. Defaults to DefaultMaxPools.
	MaxPools int
}

// Metrics is the set of collectors of one server.
type Metrics struct {
	registry *prometheus.Registry
	logger   *slog.Logger
	pools    *poolLabels
	// dbPools collects the statistics of the pools given to WatchPool.
	dbPools         *pgxPoolCollector
	requests        *prometheus.CounterVec
	requestDuration *prometheus.HistogramVec
	claims          *prometheus.CounterVec
	noFreeKey       *prometheus.CounterVec
	releases        *prometheus.CounterVec
	leaseExpiries   *prometheus.CounterVec
	cooldowns       *prometheus.CounterVec
	waitSeconds     *prometheus.HistogramVec
	leaseDuration   *prometheus.HistogramVec
	leasesReleased  prometheus.Counter
	keysExpired     prometheus.Counter
	waitersExpired  prometheus.Counter
	historyDeleted  prometheus.Counter
	historyFolded   prometheus.Counter
	sweepPasses     *prometheus.CounterVec
	sweepErrors     *prometheus.CounterVec
	sweepRows       *prometheus.CounterVec
	sweepDuration   *prometheus.HistogramVec
	leading         prometheus.Gauge

	// shared tells whether this replica exports the database-wide gauges
	// (see ExportSharedWhile); nil: always.
	sharedMu sync.RWMutex
	shared   func() bool
}

// New registers the collectors. counts, when not nil, is read at every
// scrape for the per-pool gauges.
func New(counts func(context.Context) ([]store.PoolCounts, error), logger *slog.Logger) *Metrics {
	return NewWithConfig(Config{Counts: counts, Logger: logger})
}

// NewWithConfig registers the collectors.
func NewWithConfig(cfg Config) *Metrics {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxPools <= 0 {
		cfg.MaxPools = DefaultMaxPools
	}
	pool := []string{"pool"}
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		logger:   cfg.Logger,
		pools:    &poolLabels{max: cfg.MaxPools, seen: map[string]struct{}{}},
		dbPools:  &pgxPoolCollector{},
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenorchestrator_http_requests_total",
			Help: "HTTP requests by route, method and status code.",
		}, []string{"route", "method", "code"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tokenorchestrator_http_request_duration_seconds",
			Help:    "HTTP request latency by route and method.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"route", "method"}),
		claims: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenorchestrator_claims_total",
			Help: "Keys claimed through GET /keys, by pool (a repeated idempotent claim is not counted again).",
		}, pool),
		noFreeKey: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenorchestrator_no_free_key_total",
			Help: "Claims answered 404 because no key of the pool was free (after the wait, for a waiting claim), by pool.",
		}, pool),
		releases: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenorchestrator_releases_total",
			Help: "Leases ended by a release (PUT /keys/{id}), by pool; a release of a free key is not counted.",
		}, pool),
		leaseExpiries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenorchestrator_lease_expiries_total",
			Help: "Leases ended by this replica's background job because nobody kept them alive, by pool.",
		}, pool),
		cooldowns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenorchestrator_cooldowns_total",
			Help: "Keys released with a cooldown, by pool.",
		}, pool),
		waitSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tokenorchestrator_claim_wait_seconds",
			Help:    "How long claims with ?wait= waited, by outcome (claimed, no_free_key, unknown_pool, error).",
			Buckets: []float64{.001, .005, .01, .05, .1, .25, .5, 1, 2.5, 5, 10, 20, 30, 45, 60},
		}, []string{"outcome"}),
		leaseDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tokenorchestrator_lease_duration_seconds",
			Help:    "How long leases lasted, by the database clock, by how they ended: released (claim to release) or expired (claim to the lease's deadline).",
			Buckets: []float64{.01, .05, .1, .5, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600},
		}, []string{"ended"}),
		leasesReleased: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tokenorchestrator_sweeper_leases_released_total",
			Help: "Leases ended by the background job because nobody kept them alive.",
		}),
		keysExpired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tokenorchestrator_sweeper_keys_expired_total",
			Help: "Keys deleted by the background job because nobody kept them alive.",
		}),
		waitersExpired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tokenorchestrator_sweeper_waiter_registrations_expired_total",
			Help: "Registrations of waiting clients deleted by the background job once expired (left by replicas that died).",
		}),
		historyDeleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tokenorchestrator_sweeper_history_deleted_total",
			Help: "History rows deleted by the background job because they were older than the retention.",
		}),
		historyFolded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tokenorchestrator_sweeper_history_folded_total",
			Help: "History rows added by the background job to the rollups that reports and the dashboard's charts read.",
		}),
		sweepPasses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenorchestrator_sweeper_passes_total",
			Help: "Passes of the background job's services on this replica, failed ones included, by service.",
		}, []string{"service"}),
		sweepErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenorchestrator_sweeper_errors_total",
			Help: "Passes of the background job's services that failed, by service.",
		}, []string{"service"}),
		sweepRows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenorchestrator_sweeper_rows_total",
			Help: "Rows changed by the passes of the background job's services, by service.",
		}, []string{"service"}),
		sweepDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tokenorchestrator_sweeper_pass_duration_seconds",
			Help:    "How long the passes of the background job's services took, by service.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"service"}),
		leading: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tokenorchestrator_sweeper_leading",
			Help: "1 while this replica leads the background job (with LEADER_ELECTION), else 0.",
		}),
	}
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "tokenorchestrator_build_info",
		Help: "Always 1; the labels tell the build that runs.",
		ConstLabels: prometheus.Labels{
			"version": buildinfo.Version(), "revision": buildinfo.Revision(), "goversion": buildinfo.GoVersion(),
		},
	})
	buildInfo.Set(1)
	m.registry.MustRegister(m.requests, m.requestDuration,
		m.claims, m.noFreeKey, m.releases, m.leaseExpiries, m.cooldowns, m.waitSeconds, m.leaseDuration,
		m.leasesReleased, m.keysExpired, m.waitersExpired, m.historyDeleted, m.historyFolded,
		m.sweepPasses, m.sweepErrors, m.sweepRows, m.sweepDuration, m.leading,
		buildInfo, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Every service's series exist from the start, at zero.
	for _, service := range sweeper.ServiceNames() {
		m.sweepPasses.WithLabelValues(service)
		m.sweepErrors.WithLabelValues(service)
		m.sweepRows.WithLabelValues(service)
	}
	if cfg.Counts != nil {
		m.registry.MustRegister(&poolCollector{counts: cfg.Counts, logger: cfg.Logger, shared: m.exportShared, pools: m.pools})
	}
	return m
}

// Handler serves the metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

// Registry is where the collectors are registered, for tests that read
// the metrics without HTTP.
func (m *Metrics) Registry() *prometheus.Registry { return m.registry }

// ExportSharedWhile makes the database-wide gauges (the pools' key counts,
// the cleanup horizon, the standby's lag) exported only while exporting
// returns true. They are the same on every replica, so with leader
// election only the leader of the background job exports them, and a sum
// across replicas stays right. Without it (nil, the default) every replica
// exports them, and dashboards take max by (pool) across replicas.
func (m *Metrics) ExportSharedWhile(exporting func() bool) {
	m.sharedMu.Lock()
	m.shared = exporting
	m.sharedMu.Unlock()
}

func (m *Metrics) exportShared() bool {
	m.sharedMu.RLock()
	shared := m.shared
	m.sharedMu.RUnlock()
	return shared == nil || shared()
}

// ObserveRequest records one served request. route must come from a fixed
// set (the router's patterns); the method may be anything a client sent.
func (m *Metrics) ObserveRequest(route, method string, status int, elapsed time.Duration) {
	method = methodLabel(method)
	m.requests.WithLabelValues(route, method, statusLabel(status)).Inc()
	m.requestDuration.WithLabelValues(route, method).Observe(elapsed.Seconds())
}

// ObserveClaim counts a key claimed from the pool.
func (m *Metrics) ObserveClaim(pool string) { m.claims.WithLabelValues(m.pools.label(pool)).Inc() }

// ObserveNoFreeKey counts a claim on the pool answered with no key.
func (m *Metrics) ObserveNoFreeKey(pool string) {
	m.noFreeKey.WithLabelValues(m.pools.label(pool)).Inc()
}

// ObserveCooldown counts a key of the pool released with a cooldown.
func (m *Metrics) ObserveCooldown(pool string) {
	m.cooldowns.WithLabelValues(m.pools.label(pool)).Inc()
}

// Outcomes of a waiting claim, the values of the outcome label of
// tokenorchestrator_claim_wait_seconds.
const (
	WaitClaimed   = "claimed"
	WaitNoFreeKey = "no_free_key"
	// WaitUnknownPool: the pool had no keys (at once, or when the wait
	// ended: they were deleted meanwhile).
	WaitUnknownPool = "unknown_pool"
	WaitError       = "error"
)

// ObserveWait records how long a claim with ?wait= waited, and how it
// ended (WaitClaimed, WaitNoFreeKey, WaitUnknownPool or WaitError).
func (m *Metrics) ObserveWait(outcome string, waited time.Duration) {
	m.waitSeconds.WithLabelValues(outcome).Observe(waited.Seconds())
}

// ObserveLeasesEnded counts leases that a statement of this replica ended,
// released or expired, and records how long they lasted.
func (m *Metrics) ObserveLeasesEnded(ended []store.EndedLease) {
	for _, e := range ended {
		counter, label := m.releases, "released"
		if e.Expired {
			counter, label = m.leaseExpiries, "expired"
		}
		counter.WithLabelValues(m.pools.label(e.Pool)).Inc()
		if e.Cooldown {
			m.ObserveCooldown(e.Pool)
		}
		if e.Duration >= 0 {
			m.leaseDuration.WithLabelValues(label).Observe(e.Duration.Seconds())
		}
	}
}

// methodLabel keeps the methods of HTTP and counts any other as "other".
// The method is the client's choice and is counted before any token is
// checked: taken as it is, every made-up method would be a new series, and
// anyone could grow the metrics without end.
func methodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return method
	default:
		return "other"
	}
}

// SetLeading records whether this replica leads the background job.
func (m *Metrics) SetLeading(leading bool) {
	if leading {
		m.leading.Set(1)
	} else {
		m.leading.Set(0)
	}
}

// ObserveSweep records one pass of one service of the background job.
func (m *Metrics) ObserveSweep(pass sweeper.Pass) {
	m.sweepPasses.WithLabelValues(pass.Service).Inc()
	m.sweepRows.WithLabelValues(pass.Service).Add(float64(pass.Rows()))
	m.sweepDuration.WithLabelValues(pass.Service).Observe(pass.Duration.Seconds())
	m.leasesReleased.Add(float64(pass.LeasesReleased))
	m.keysExpired.Add(float64(pass.KeysExpired))
	m.waitersExpired.Add(float64(pass.WaitersExpired))
	m.historyDeleted.Add(float64(pass.HistoryDeleted))
	m.historyFolded.Add(float64(pass.HistoryFolded))
	if pass.Err != nil {
		m.sweepErrors.WithLabelValues(pass.Service).Inc()
	}
}

func statusLabel(status int) string {
	const digits = "0123456789"
	if status < 100 || status > 999 {
		return "other"
	}
	return string([]byte{digits[status/100], digits[status/10%10], digits[status%10]})
}

// poolLabels hands out the pool label values: a pool's own name for the
// first max pools seen, OtherPool for any later one. A pool keeps its value
// for the life of the process, so that its series never jump.
type poolLabels struct {
	mu   sync.RWMutex
	max  int
	seen map[string]struct{}
}

func (p *poolLabels) label(pool string) string {
	p.mu.RLock()
	_, ok := p.seen[pool]
	full := len(p.seen) >= p.max
	p.mu.RUnlock()
	switch {
	case ok:
		return pool
	case full:
		return OtherPool
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.seen[pool]; ok {
		return pool
	}
	if len(p.seen) >= p.max {
		return OtherPool
	}
	p.seen[pool] = struct{}{}
	return pool
}

// WatchWaiters exports, at every scrape, how many clients wait for a key
// on this replica.
func (m *Metrics) WatchWaiters(waiting func() int) {
	m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tokenorchestrator_waiters",
		Help: "Clients waiting for a key (GET /keys?wait=) on this replica.",
	}, func() float64 { return float64(waiting()) }))
}

var (
	poolKeysDesc = prometheus.NewDesc("tokenorchestrator_pool_keys",
		"Seats of the pool's keys by state: free, or blocked (held under a lease); a key of one seat counts once. Database-wide: see docs/operations.md on summing across replicas.", []string{"pool", "state"}, nil)
)

// poolCollector reads the per-pool counters at scrape time; they are kept
// by the database, so every replica reads the same numbers.
type poolCollector struct {
	counts func(context.Context) ([]store.PoolCounts, error)
	logger *slog.Logger
	shared func() bool
	pools  *poolLabels
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) { ch <- poolKeysDesc }

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	if !c.shared() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	pools, err := c.counts(ctx)
	if err != nil {
		c.logger.Warn("pool gauges unavailable", "error", err)
		return
	}
	// Pools past the cap are summed under one label value: two series of
	// the same labels may not be exported.
	type freeHeld struct{ free, held int64 }
	byLabel := make(map[string]*freeHeld, len(pools))
	var order []string
	for _, p := range pools {
		label := c.pools.label(p.Pool)
		fb := byLabel[label]
		if fb == nil {
			fb = &freeHeld{}
			byLabel[label] = fb
			order = append(order, label)
		}
		fb.free += p.Free()
		fb.held += p.Held
	}
	for _, label := range order {
		fb := byLabel[label]
		ch <- prometheus.MustNewConstMetric(poolKeysDesc, prometheus.GaugeValue, float64(fb.free), label, "free")
		// "blocked" is the label value dashboards select for held keys
		// ("Words" in docs/api.md).
		ch <- prometheus.MustNewConstMetric(poolKeysDesc, prometheus.GaugeValue, float64(fb.held), label, "blocked")
	}
}

var (
	snapshotAgeDesc = prometheus.NewDesc("tokenorchestrator_db_oldest_snapshot_age_seconds",
		"How long the oldest open snapshot of another database session has been held: dead row versions younger than it cannot be removed. Database-wide: see docs/operations.md on summing across replicas.", nil, nil)
	xminAgeDesc = prometheus.NewDesc("tokenorchestrator_db_xmin_age_transactions",
		"Age in transactions of the oldest xmin that holds back cleanup, of a session or a replication slot. Database-wide: see docs/operations.md on summing across replicas.", nil, nil)
)

// WatchHorizon exports, at every scrape, what holds back the database's
// cleanup of dead row versions.
func (m *Metrics) WatchHorizon(horizon func(context.Context) (store.Horizon, error), logger *slog.Logger) {
	m.registry.MustRegister(&horizonCollector{horizon: horizon, logger: logger, shared: m.exportShared})
}

type horizonCollector struct {
	horizon func(context.Context) (store.Horizon, error)
	logger  *slog.Logger
	shared  func() bool
}

func (c *horizonCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- snapshotAgeDesc
	ch <- xminAgeDesc
}

func (c *horizonCollector) Collect(ch chan<- prometheus.Metric) {
	if !c.shared() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	h, err := c.horizon(ctx)
	if err != nil {
		c.logger.Warn("cleanup horizon unavailable", "error", err)
		return
	}
	ch <- prometheus.MustNewConstMetric(snapshotAgeDesc, prometheus.GaugeValue, h.SnapshotAge.Seconds())
	ch <- prometheus.MustNewConstMetric(xminAgeDesc, prometheus.GaugeValue, float64(h.XminAge))
}

var (
	standbyLagDesc = prometheus.NewDesc("tokenorchestrator_report_standby_replay_lag_seconds",
		"How far the replay of the standby that reports read from (REPORT_DATABASE_URL) is behind the primary: 0 while it has replayed everything it received. Absent while the standby cannot be read or has replayed nothing since it started. The same on every replica: see docs/operations.md on summing across replicas.", nil, nil)
	standbyUpDesc = prometheus.NewDesc("tokenorchestrator_report_standby_up",
		"1 while the standby that reports read from answers this replica and is in recovery, else 0.", nil, nil)
)

// WatchStandby exports, at every scrape, whether the reports' standby can
// be read and how far behind it replays. Whether it answers is this
// replica's own view and always exported; the lag is the standby's, and
// exported like the other database-wide gauges.
func (m *Metrics) WatchStandby(status func(context.Context) (store.StandbyStatus, error), logger *slog.Logger) {
	m.registry.MustRegister(&standbyCollector{status: status, logger: logger, shared: m.exportShared})
}

type standbyCollector struct {
	status func(context.Context) (store.StandbyStatus, error)
	logger *slog.Logger
	shared func() bool
}

func (c *standbyCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- standbyLagDesc
	ch <- standbyUpDesc
}

func (c *standbyCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := c.status(ctx)
	if err != nil {
		c.logger.Warn("report standby unavailable", "error", err)
	}
	up := 0.0
	if err == nil && st.InRecovery {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(standbyUpDesc, prometheus.GaugeValue, up)
	if err == nil && st.LagKnown && c.shared() {
		ch <- prometheus.MustNewConstMetric(standbyLagDesc, prometheus.GaugeValue, st.ReplayLag.Seconds())
	}
}

// The connection pools' statistics, labelled by database: "primary"
// (DATABASE_URL) or "reports" (REPORT_DATABASE_URL).
var (
	dbConnsDesc = prometheus.NewDesc("tokenorchestrator_db_pool_conns",
		"Connections of this replica's pool by state: acquired (in use), idle, total (both, and those being opened), max (the pool's size).",
		[]string{"database", "state"}, nil)
	dbAcquiresDesc = prometheus.NewDesc("tokenorchestrator_db_pool_acquires_total",
		"Connections taken from the pool.", []string{"database"}, nil)
	dbAcquireSecondsDesc = prometheus.NewDesc("tokenorchestrator_db_pool_acquire_seconds_total",
		"Time spent taking connections from the pool, waits for a free one included.", []string{"database"}, nil)
	dbEmptyAcquiresDesc = prometheus.NewDesc("tokenorchestrator_db_pool_empty_acquires_total",
		"Acquires that found no idle connection and waited for one to be freed or opened.", []string{"database"}, nil)
	dbCanceledAcquiresDesc = prometheus.NewDesc("tokenorchestrator_db_pool_canceled_acquires_total",
		"Acquires given up because their context ended first.", []string{"database"}, nil)
)

// WatchPool exports, at every scrape, the statistics of a connection pool
// of this replica under the given database label. The pools share one
// collector: two collectors describing the same metrics would be refused
// by the registry.
func (m *Metrics) WatchPool(database string, pool *pgxpool.Pool) {
	m.dbPools.mu.Lock()
	defer m.dbPools.mu.Unlock()
	if len(m.dbPools.pools) == 0 {
		m.registry.MustRegister(m.dbPools)
	}
	m.dbPools.pools = append(m.dbPools.pools, watchedPool{database: database, stat: pool.Stat})
}

type pgxPoolCollector struct {
	mu    sync.Mutex
	pools []watchedPool
}

type watchedPool struct {
	database string
	stat     func() *pgxpool.Stat
}

func (c *pgxPoolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- dbConnsDesc
	ch <- dbAcquiresDesc
	ch <- dbAcquireSecondsDesc
	ch <- dbEmptyAcquiresDesc
	ch <- dbCanceledAcquiresDesc
}

func (c *pgxPoolCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	pools := c.pools
	c.mu.Unlock()
	for _, p := range pools {
		p.collect(ch)
	}
}

func (p watchedPool) collect(ch chan<- prometheus.Metric) {
	s := p.stat()
	gauge := func(state string, v int32) {
		ch <- prometheus.MustNewConstMetric(dbConnsDesc, prometheus.GaugeValue, float64(v), p.database, state)
	}
	gauge("acquired", s.AcquiredConns())
	gauge("idle", s.IdleConns())
	gauge("total", s.TotalConns())
	gauge("max", s.MaxConns())
	ch <- prometheus.MustNewConstMetric(dbAcquiresDesc, prometheus.CounterValue, float64(s.AcquireCount()), p.database)
	ch <- prometheus.MustNewConstMetric(dbAcquireSecondsDesc, prometheus.CounterValue, s.AcquireDuration().Seconds(), p.database)
	ch <- prometheus.MustNewConstMetric(dbEmptyAcquiresDesc, prometheus.CounterValue, float64(s.EmptyAcquireCount()), p.database)
	ch <- prometheus.MustNewConstMetric(dbCanceledAcquiresDesc, prometheus.CounterValue, float64(s.CanceledAcquireCount()), p.database)
}
