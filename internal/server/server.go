// Package server assembles the service: database (shared or embedded),
// migrations, store, background job, metrics and HTTP API, and takes them
// down again in order.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/trace"

	"github.com/tokenorchestrator/tokenorchestrator/internal/api"
	"github.com/tokenorchestrator/tokenorchestrator/internal/claim"
	"github.com/tokenorchestrator/tokenorchestrator/internal/config"
	"github.com/tokenorchestrator/tokenorchestrator/internal/leader"
	"github.com/tokenorchestrator/tokenorchestrator/internal/metrics"
	"github.com/tokenorchestrator/tokenorchestrator/internal/migrate"
	"github.com/tokenorchestrator/tokenorchestrator/internal/pgembed"
	"github.com/tokenorchestrator/tokenorchestrator/internal/startstop"
	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
	"github.com/tokenorchestrator/tokenorchestrator/internal/sweeper"
	"github.com/tokenorchestrator/tokenorchestrator/internal/wakeup"
)

// Server is one replica of the service.
type Server struct {
	cfg     config.Config
	logger  *slog.Logger
	cluster *pgembed.Cluster
	pool    *pgxpool.Pool
	// standby is the pool of REPORT_DATABASE_URL; nil without it.
	standby *pgxpool.Pool
	store   *store.Store
	sweeper *sweeper.Maintainer
	elector *leader.Elector // nil unless LEADER_ELECTION
	waiters *wakeup.Hub
	// replication logs changes of the database's replication mode.
	replication *replicationWatch
	// profiler is nil unless DEBUG_ADDR.
	profiler *profiler
	http     *http.Server
	// draining is set once the server has been told to stop.
	draining atomic.Bool
	// afterDrainDelay is time.After; tests end the drain delay themselves.
	afterDrainDelay func(time.Duration) <-chan time.Time
	// tracerProvider is nil unless tracing is on.
	tracerProvider trace.TracerProvider
}

// Option changes how New builds the server.
type Option func(*options)

type options struct {
	tracerProvider trace.TracerProvider
}

// WithTracerProvider traces the requests, the statements that serve them
// and the batches they share with tracer provider tp. Without it nothing is
// traced.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(o *options) { o.tracerProvider = tp }
}

// New connects to the database (starting the embedded one when no URL is
// configured), applies the migrations and builds the service. Nothing is
// served until Serve.
func New(ctx context.Context, cfg config.Config, logger *slog.Logger, opts ...Option) (_ *Server, err error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	s := &Server{cfg: cfg, logger: logger, afterDrainDelay: time.After, tracerProvider: o.tracerProvider}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	dsn := cfg.DatabaseURL
	if dsn == "" {
		s.cluster, err = pgembed.Start(ctx, pgembed.Config{
			DataDir: filepath.Join(cfg.DataDir, "postgres"),
			Port:    cfg.EmbeddedPort,
			Logger:  logger,
		})
		if err != nil {
			return nil, fmt.Errorf("embedded PostgreSQL: %w", err)
		}
		dsn = s.cluster.URL()
	}
	if s.pool, err = connect(ctx, dsn, "DATABASE_URL", "token-orchestrator", cfg.DBMaxConns, cfg, s.tracerProvider); err != nil {
		return nil, err
	}
	if err = migrateWithRetry(ctx, s.pool, cfg.MigrateTimeout, logger); err != nil {
		return nil, err
	}
	if cfg.ReportDatabaseURL != "" {
		// Reports are few and long: a share of the primary's connections
		// is enough, and bounds what they ask of the standby.
		if s.standby, err = connect(ctx, cfg.ReportDatabaseURL, "REPORT_DATABASE_URL", "token-orchestrator reports", max(2, cfg.DBMaxConns/4), cfg, s.tracerProvider); err != nil {
			return nil, err
		}
	}
	// The store's statements feed the metrics, and the metrics read the
	// pools' counts through the store: the counts are bound once both exist.
	var st *store.Store
	m := metrics.NewWithConfig(metrics.Config{
		Counts:   func(ctx context.Context) ([]store.PoolCounts, error) { return st.CountPools(ctx) },
		Logger:   logger,
		MaxPools: cfg.MetricsMaxPools,
	})
	st = store.New(s.pool, store.Config{
		KeyTTL: cfg.KeyTTL, LeaseTTL: cfg.LeaseTTL, QueryTimeout: cfg.DBTimeout,
		Standby: s.standby, MaxStandbyLag: cfg.ReportMaxLag, ReportFallback: cfg.ReportFallback,
		ReportStatementTimeout: cfg.ReportStatementTimeout,
		OnLeasesEnded:          m.ObserveLeasesEnded,
		OnCooldown:             m.ObserveCooldown,
		TracerProvider:         s.tracerProvider,
		Secrets:                cfg.Secrets,
	})
	s.store = st
	if err = s.store.CheckIndexes(ctx); err != nil {
		return nil, err
	}
	m.WatchHorizon(s.store.CleanupHorizon, logger)
	m.WatchPool("primary", s.pool)
	m.WatchReplication(s.store.ReplicationState, logger)
	s.replication = &replicationWatch{state: s.store.ReplicationState, logger: logger}
	if s.standby != nil {
		m.WatchStandby(s.store.StandbyStatus, logger)
		m.WatchPool("reports", s.standby)
	}
	sweeperCfg := sweeper.Config{
		Interval:           cfg.SweepInterval,
		HistoryRetention:   cfg.HistoryRetention,
		Logger:             logger,
		OnPass:             m.ObserveSweep,
		SnapshotAgeWarning: cfg.SnapshotAgeWarning,
		TracerProvider:     s.tracerProvider,
	}
	if cfg.LeaderElection {
		s.elector = leader.New(s.store, leader.Config{Name: "sweeper", TTL: cfg.LeaderTTL, Logger: logger, OnChange: m.SetLeading})
		sweeperCfg.Leading = s.elector.Leading
		// The database-wide gauges come from the leader alone, so that
		// they may be summed across replicas.
		m.ExportSharedWhile(s.elector.Leading)
	}
	s.sweeper = sweeper.New(s.store, sweeperCfg)
	s.waiters = wakeup.New(s.store, wakeup.Config{
		DBCalls: cfg.WaitersDBConns, MaxWaiters: cfg.MaxWaiters, MaxPools: cfg.MaxWaitedPools, Logger: logger,
	})
	m.WatchWaiters(s.waiters.Waiters)
	handler := api.New(api.Config{
		Store:       s.store,
		Claims:      claim.New(claim.Config{Store: s.store, Waiters: s.waiters, Metrics: m}),
		Logger:      logger,
		Metrics:     m,
		CORSOrigins: cfg.CORSOrigins,
		Ready:       s.ready(),
		// Nil unless tracing is on.
		TracerProvider: s.tracerProvider,
		Auth: api.Auth{
			AdminToken: cfg.AdminToken, ClientToken: cfg.ClientToken,
			PublicHealth: cfg.PublicHealth, PublicMetrics: cfg.PublicMetrics,
		},
	})
	s.http = newHTTPServer(handler, cfg, logger)
	if cfg.DebugAddr != "" {
		s.profiler = &profiler{addr: cfg.DebugAddr, logger: logger}
	}
	return s, nil
}

// MaxHeaderBytes bounds the request line and headers; a longer one is
// answered 431 by net/http before any handler runs.
const MaxHeaderBytes = 64 << 10

// newHTTPServer bounds what a client may hold: the time to send its headers
// and its request, to read the answer, and to sit idle between requests,
// and the size of its headers.
func newHTTPServer(handler http.Handler, cfg config.Config, logger *slog.Logger) *http.Server {
	writeTimeout := cfg.WriteTimeout
	if writeTimeout == 0 {
		// Long enough for the longest wait for a key plus the claim itself.
		writeTimeout = api.MaxWait + cfg.DBTimeout + 10*time.Second
	}
	return &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
}

// Serve starts the background job and serves HTTP on l until ctx ends, then
// shuts down gracefully (see drain): readiness fails and waiting clients are
// answered at once, requests are still served for DrainDelay, then no new
// connections are taken and in-flight requests finish (within
// ShutdownTimeout), the job stops, and the database is closed.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	// The services outlive ctx: the shutdown below stops them, in order.
	background := context.WithoutCancel(ctx)
	for _, svc := range s.services() {
		if err := svc.Start(background); err != nil {
			// Only the profiler can fail to start; the service runs without it.
			s.logger.Warn("profiler", "error", err)
		}
	}
	errc := make(chan error, 1)
	go func() { errc <- s.http.Serve(l) }()
	s.logger.Info("serving", "addr", l.Addr().String(), "key_ttl", s.cfg.KeyTTL, "lease_ttl", s.cfg.LeaseTTL,
		"sweep_interval", s.cfg.SweepInterval, "embedded_db", s.cluster != nil, "access", s.accessMode())

	var serveErr error
	select {
	case serveErr = <-errc:
	case <-ctx.Done():
		s.drain(errc)
		shutdownCtx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
		if err := s.http.Shutdown(shutdownCtx); err != nil {
			s.logger.Warn("in-flight requests did not finish in time", "error", err)
			_ = s.http.Close()
		}
		cancel()
		if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
			serveErr = err
		}
	}
	// The elector resigns as it stops: another replica takes over at once.
	// The sweeper stops in close, which also runs when New fails.
	startstop.StopAll(s.services()[1:]...)
	s.close()
	s.logger.Info("stopped")
	return serveErr
}

// drain is the first part of a shutdown, while the listener still takes
// connections. Readiness fails at once, so that load balancers stop sending
// requests here; for DrainDelay, until they have, requests are still
// served. Clients that wait for a key are answered at once, 503 with
// Retry-After, and new waits are refused the same way unless a key is free
// at once: a wait may last longer than the server has left
// (ShutdownTimeout is shorter than the longest wait), and a client told
// now retries on another replica instead of being cut off. It returns early
// if the HTTP server stops by itself (errc), leaving its error in errc.
func (s *Server) drain(errc chan error) {
	s.logger.Info("shutting down", "drain_delay", s.cfg.DrainDelay)
	s.draining.Store(true)
	s.waiters.Close()
	if s.cfg.DrainDelay <= 0 {
		return
	}
	select {
	case <-s.afterDrainDelay(s.cfg.DrainDelay):
	case err := <-errc:
		errc <- err
	}
}

// Run listens on the configured address and serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	l, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		s.close()
		return fmt.Errorf("listen on %s: %w", s.cfg.Addr, err)
	}
	return s.Serve(ctx, l)
}

// accessMode describes who may call the API, for the start-up log; it
// never shows a token.
func (s *Server) accessMode() string {
	switch {
	case s.cfg.Open():
		return "open: no token set"
	case s.cfg.ClientToken == "":
		return "admin token only"
	default:
		return "admin and client tokens"
	}
}

// services returns the background services in the order they start: the
// sweeper first, then those that stop before it.
func (s *Server) services() []startstop.Service {
	services := []startstop.Service{s.sweeper, s.waiters, s.replication}
	if s.elector != nil {
		services = append(services, s.elector)
	}
	if s.profiler != nil {
		services = append(services, s.profiler)
	}
	return services
}

func (s *Server) close() {
	if s.sweeper != nil {
		s.sweeper.Stop()
	}
	if s.store != nil {
		s.store.Close()
	}
	if s.pool != nil {
		s.pool.Close()
	}
	if s.standby != nil {
		s.standby.Close()
	}
	if s.cluster != nil {
		if err := s.cluster.Stop(); err != nil {
			s.logger.Warn("embedded PostgreSQL", "error", err)
		}
	}
}

// ready reports whether the server is not shutting down, the database
// answers and the schema is current.
// Once the migrations have been seen applied they stay applied, so only the
// database is checked after that.
func (s *Server) ready() func(context.Context) error {
	var migrated atomic.Bool
	return func(ctx context.Context) error {
		if s.draining.Load() {
			return api.ErrShuttingDown
		}
		if err := s.store.Ping(ctx); err != nil {
			return err
		}
		if migrated.Load() {
			return nil
		}
		pending, err := migrate.Pending(ctx, s.pool)
		if err != nil {
			return fmt.Errorf("migration status: %w", err)
		}
		if pending {
			return migrate.ErrPending
		}
		migrated.Store(true)
		return nil
	}
}

// sessionSettings are set on every session of the service, unless the
// URL sets them (?jit=on wins).
var sessionSettings = map[string]string{
	// The planner's cost of a claim on a large pool passes jit_above_cost,
	// and compiling it takes far longer (hundreds of milliseconds) than the
	// statement ever runs. No statement of the service gains from JIT.
	"jit": "off",
	// Every statement runs as a prepared statement, and PostgreSQL's
	// default re-plans one for every execution while a custom plan looks
	// cheaper than the generic one, which for the claim and release
	// statements (a dozen nodes over four tables) costs more than executing
	// them: one key per statement ran 14% faster with the generic plan. The
	// generic plan of every statement is held to its indexes by
	// TestQueryPlansUseIndexes.
	"plan_cache_mode": "force_generic_plan",
	// Every statement of the service is an index lookup or a short range,
	// yet on tables never analysed a generic plan may take a range for tens
	// of thousands of rows and gather workers for it: a two-minute chart on
	// 1,000,000 keys spent 35–45 ms of its 47 ms starting two workers that
	// found 81 rows, against 1 ms without them. A client polling such a
	// call would also hold the server's few workers (max_worker_processes)
	// for everyone.
	"max_parallel_workers_per_gather": "0",
}

// connect returns a pool of up to maxConns connections over dsn, read
// from the named setting; with tp, every statement is traced.
func connect(ctx context.Context, dsn, setting, application string, maxConns int, cfg config.Config, tp trace.TracerProvider) (*pgxpool.Pool, error) {
	poolCfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", setting, err)
	}
	poolCfg.MaxConns = int32(maxConns)
	poolCfg.ConnConfig.ConnectTimeout = cfg.DBTimeout
	if poolCfg.ConnConfig.RuntimeParams == nil {
		poolCfg.ConnConfig.RuntimeParams = map[string]string{}
	}
	poolCfg.ConnConfig.RuntimeParams["application_name"] = application
	for name, value := range sessionSettings {
		if _, set := poolCfg.ConnConfig.RuntimeParams[name]; !set {
			poolCfg.ConnConfig.RuntimeParams[name] = value
		}
	}
	if tp != nil {
		poolCfg.ConnConfig.Tracer = store.NewTracer(tp)
	}
	if setting == "DATABASE_URL" {
		poolCfg.AfterConnect = refuseUnreplicatedPrimary
	}
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return nil, fmt.Errorf("database pool: %w", err)
	}
	return pool, nil
}

// databaseStartWait is how long start-up waits for a database that does
// not answer yet, e.g. one that starts beside the service.
const databaseStartWait = time.Minute

// migrateWithRetry waits up to databaseStartWait for the database to
// answer, then applies the migrations, retrying failures (a connection
// lost, another replica's lock) for up to timeout. The migrations get their
// own timeout, far longer than the wait for the database: an index built
// concurrently waits for every older transaction, and a build cut short is
// started over.
func migrateWithRetry(ctx context.Context, pool *pgxpool.Pool, timeout time.Duration, logger *slog.Logger) error {
	if err := waitForDatabase(ctx, pool, logger); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := migrate.Up(ctx, pool)
		if err == nil {
			return nil
		}
		logger.Warn("migrations not applied yet; retrying", "error", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("migrations not applied within MIGRATE_TIMEOUT (%s): %w", timeout, err)
		case <-time.After(time.Second):
		}
	}
}

func waitForDatabase(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, databaseStartWait)
	defer cancel()
	for {
		err := pool.Ping(ctx)
		if err == nil {
			return nil
		}
		logger.Warn("database not reachable yet; retrying", "error", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("database not ready: %w", err)
		case <-time.After(time.Second):
		}
	}
}
