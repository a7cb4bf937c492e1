// Package metrics holds the server's Prometheus collectors, each server on
// its own registry so that several servers can live in one process.
package metrics

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
	"github.com/tokenorchestrator/tokenorchestrator/internal/sweeper"
)

// Metrics is the set of collectors of one server.
type Metrics struct {
	registry        *prometheus.Registry
	requests        *prometheus.CounterVec
	requestDuration *prometheus.HistogramVec
	leasesReleased  prometheus.Counter
	keysExpired     prometheus.Counter
	waitersExpired  prometheus.Counter
	historyDeleted  prometheus.Counter
	sweepErrors     prometheus.Counter
	leading         prometheus.Gauge
}

// New registers the collectors. counts, when not nil, is read at every
// scrape for the per-pool gauges.
func New(counts func(context.Context) ([]store.PoolCounts, error), logger *slog.Logger) *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenorchestrator_http_requests_total",
			Help: "HTTP requests by route, method and status.",
		}, []string{"route", "method", "status"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tokenorchestrator_http_request_duration_seconds",
			Help:    "HTTP request latency by route and method.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"route", "method"}),
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
		sweepErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tokenorchestrator_sweeper_errors_total",
			Help: "Passes of the background job that failed.",
		}),
	}
	m.leading = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "tokenorchestrator_sweeper_leading",
		Help: "1 while this replica leads the background job (with LEADER_ELECTION), else 0.",
	})
	m.registry.MustRegister(m.leading)
	m.registry.MustRegister(m.requests, m.requestDuration, m.leasesReleased, m.keysExpired, m.waitersExpired, m.historyDeleted, m.sweepErrors,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if counts != nil {
		m.registry.MustRegister(&poolCollector{counts: counts, logger: logger})
	}
	return m
}

// Handler serves the metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

// ObserveRequest records one served request. route must come from a fixed
// set (the router's patterns); the method may be anything a client sent.
func (m *Metrics) ObserveRequest(route, method string, status int, elapsed time.Duration) {
	method = methodLabel(method)
	m.requests.WithLabelValues(route, method, statusLabel(status)).Inc()
	m.requestDuration.WithLabelValues(route, method).Observe(elapsed.Seconds())
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

// ObserveSweep records one pass of the background job.
func (m *Metrics) ObserveSweep(result sweeper.Result) {
	m.leasesReleased.Add(float64(result.LeasesReleased))
	m.keysExpired.Add(float64(result.KeysExpired))
	m.waitersExpired.Add(float64(result.WaitersExpired))
	m.historyDeleted.Add(float64(result.HistoryDeleted))
	if result.Err != nil {
		m.sweepErrors.Inc()
	}
}

func statusLabel(status int) string {
	const digits = "0123456789"
	if status < 100 || status > 999 {
		return "other"
	}
	return string([]byte{digits[status/100], digits[status/10%10], digits[status%10]})
}

var (
	poolKeysDesc = prometheus.NewDesc("tokenorchestrator_pool_keys",
		"Keys in the pool by state (free, blocked).", []string{"pool", "state"}, nil)
)

// poolCollector reads the per-pool counters at scrape time; they are kept
// by the database, so every replica reports the same numbers.
type poolCollector struct {
	counts func(context.Context) ([]store.PoolCounts, error)
	logger *slog.Logger
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) { ch <- poolKeysDesc }

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	pools, err := c.counts(ctx)
	if err != nil {
		c.logger.Warn("pool gauges unavailable", "error", err)
		return
	}
	for _, p := range pools {
		ch <- prometheus.MustNewConstMetric(poolKeysDesc, prometheus.GaugeValue, float64(p.Free()), p.Pool, "free")
		ch <- prometheus.MustNewConstMetric(poolKeysDesc, prometheus.GaugeValue, float64(p.Blocked), p.Pool, "blocked")
	}
}

var (
	snapshotAgeDesc = prometheus.NewDesc("tokenorchestrator_db_oldest_snapshot_age_seconds",
		"How long the oldest open snapshot of another database session has been held: dead row versions younger than it cannot be removed. Database-wide: every replica reports the same value (use max() across replicas).", nil, nil)
	xminAgeDesc = prometheus.NewDesc("tokenorchestrator_db_xmin_age_transactions",
		"Age in transactions of the oldest xmin that holds back cleanup, of a session or a replication slot. Database-wide (use max() across replicas).", nil, nil)
)

// WatchHorizon exports, at every scrape, what holds back the database's
// cleanup of dead row versions.
func (m *Metrics) WatchHorizon(horizon func(context.Context) (store.Horizon, error), logger *slog.Logger) {
	m.registry.MustRegister(&horizonCollector{horizon: horizon, logger: logger})
}

type horizonCollector struct {
	horizon func(context.Context) (store.Horizon, error)
	logger  *slog.Logger
}

func (c *horizonCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- snapshotAgeDesc
	ch <- xminAgeDesc
}

func (c *horizonCollector) Collect(ch chan<- prometheus.Metric) {
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
		"How far the replay of the standby that reports read from (REPORT_DATABASE_URL) is behind the primary: 0 while it has replayed everything it received. Absent while the standby cannot be read or has replayed nothing since it started.", nil, nil)
	standbyUpDesc = prometheus.NewDesc("tokenorchestrator_report_standby_up",
		"1 while the standby that reports read from answers and is in recovery, else 0.", nil, nil)
)

// WatchStandby exports, at every scrape, whether the reports' standby can
// be read and how far behind it replays.
func (m *Metrics) WatchStandby(status func(context.Context) (store.StandbyStatus, error), logger *slog.Logger) {
	m.registry.MustRegister(&standbyCollector{status: status, logger: logger})
}

type standbyCollector struct {
	status func(context.Context) (store.StandbyStatus, error)
	logger *slog.Logger
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
	if err == nil && st.LagKnown {
		ch <- prometheus.MustNewConstMetric(standbyLagDesc, prometheus.GaugeValue, st.ReplayLag.Seconds())
	}
}
