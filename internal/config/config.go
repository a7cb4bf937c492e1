// Package config reads the server's settings from flags and the environment.
// Every flag has an environment variable of the same meaning; a flag given on
// the command line wins.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tokenorchestrator/tokenorchestrator/internal/leader"
	"github.com/tokenorchestrator/tokenorchestrator/internal/metrics"
	"github.com/tokenorchestrator/tokenorchestrator/internal/secrets"
	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
	"github.com/tokenorchestrator/tokenorchestrator/internal/sweeper"
	"github.com/tokenorchestrator/tokenorchestrator/internal/wakeup"
)

// Config is the server's whole configuration.
type Config struct {
	// DatabaseURL of the shared PostgreSQL. Defaults to empty: an embedded
	// PostgreSQL under DataDir.
	DatabaseURL string
	// ReportDatabaseURL, when set, is a streaming hot standby of the
	// database that reports and the dashboard's charts read from.
	// Defaults to empty: they read from the primary.
	ReportDatabaseURL string
	// ReportMaxLag is how far behind the primary the standby's replay may
	// be for reports to read from it. Defaults to DefaultReportMaxLag.
	ReportMaxLag time.Duration
	// ReportFallback lets reports read from the primary while the standby
	// cannot be read or is too far behind. Defaults to false: they answer
	// 503 instead.
	ReportFallback bool
	// ReportStatementTimeout bounds each statement of a report read from
	// the primary. Defaults to DefaultReportStatementTimeout.
	ReportStatementTimeout time.Duration
	// DataDir holds the embedded PostgreSQL's data, kept across restarts.
	// Defaults to DefaultDataDir.
	DataDir string
	// EmbeddedPort is the loopback port of the embedded PostgreSQL.
	// Defaults to DefaultEmbeddedPort.
	EmbeddedPort int
	// Addr is the HTTP listen address. Defaults to DefaultAddr.
	Addr string
	// KeyTTL: a key not kept alive for this long is deleted. Defaults to
	// DefaultKeyTTL.
	KeyTTL time.Duration
	// LeaseTTL: a lease not kept alive for this long ends. Defaults to
	// DefaultLeaseTTL.
	LeaseTTL time.Duration
	// SweepInterval between two passes of the background job's services
	// that bound what clients see (sweeper.Config.Interval). Defaults to
	// DefaultSweepInterval.
	SweepInterval time.Duration
	// HistoryRetention: history rows older than this are deleted by the
	// background job. Defaults to DefaultHistoryRetention.
	HistoryRetention time.Duration
	// SnapshotAgeWarning: a database session holding a snapshot longer than
	// this is named in a warning (it holds back the cleanup of the hot
	// tables). Defaults to DefaultSnapshotAgeWarning; 0 turns the check
	// off.
	SnapshotAgeWarning time.Duration
	// LeaderElection makes one replica at a time run the background job.
	// Defaults to false: every replica runs it.
	LeaderElection bool
	// LeaderTTL is the term of the job's leader; when the leader dies,
	// another takes over within LeaderTTL and a third of it. Defaults to
	// DefaultLeaderTTL.
	LeaderTTL time.Duration
	// DebugAddr, when set, serves Go's profiler (net/http/pprof) on its own
	// listener, apart from the API.
	DebugAddr string
	// DBMaxConns is the size of the connection pool to the database.
	// Defaults to DefaultDBMaxConns.
	DBMaxConns int
	// WaitersDBConns bounds the connections that the work for waiting
	// clients (GET /keys?wait=: registrations, polls, their claims) uses at
	// once. It is below DBMaxConns, so that requests that do not wait
	// always find a connection. Defaults to DefaultWaitersDBConns, or to
	// DBMaxConns - 1 when that is smaller (at least 1).
	WaitersDBConns int
	// MaxWaiters caps the clients waiting for a key at once on this
	// replica; past it GET /keys?wait= answers 503 at once. Defaults to
	// DefaultMaxWaiters.
	MaxWaiters int
	// MaxWaitedPools caps the distinct pools that clients wait on at once
	// on this replica; past it a wait on another pool answers 503 at once.
	// Defaults to DefaultMaxWaitedPools.
	MaxWaitedPools int
	// MetricsMaxPools caps the distinct pool label values of the metrics;
	// later pools are counted under pool="_other". Defaults to
	// DefaultMetricsMaxPools.
	MetricsMaxPools int
	// DBTimeout bounds every database call; past it the request answers 503.
	// Defaults to DefaultDBTimeout.
	DBTimeout time.Duration
	// ShutdownTimeout bounds how long in-flight requests may take to finish
	// at shutdown, after the drain delay. Defaults to
	// DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// DrainDelay is how long the server keeps serving after it is told to
	// stop, readiness failing, so that load balancers stop sending it
	// requests before it closes its listener. Defaults to DefaultDrainDelay.
	DrainDelay time.Duration
	// MigrateTimeout bounds how long start-up may spend applying
	// migrations. A CREATE INDEX CONCURRENTLY waits for every transaction
	// older than itself, and a build cut short leaves an invalid index to
	// build again, so it is generous. Defaults to DefaultMigrateTimeout.
	MigrateTimeout time.Duration
	// CORSOrigins may call the API from a browser; "*" allows any.
	// Defaults to none.
	CORSOrigins []string
	// LogLevel of the structured logs. Defaults to info.
	LogLevel slog.Level
	// LogFormat is "text" or "json". Defaults to text.
	LogFormat string

	// Access control and the limits of the HTTP server: see access.go.
	Access

	// Secrets seals the credentials keys carry: the current encryption key
	// (SECRET_KEY or SECRET_KEY_FILE) and older ones that must still
	// decrypt (SECRET_KEYS_OLD or SECRET_KEYS_OLD_FILE). Defaults to none:
	// keys with secrets are refused. See secrets.go.
	Secrets *secrets.Keyring
}

// The defaults of the settings, in the order of Config's fields, for the
// flags' help text and the commands beside serve. A setting of one
// component (the store, the sweeper, the elector, the wake-up hub, the
// metrics) has the default that the component owns and applies to a zero
// value; it is only named here. The others are the server's own, written
// here.
const (
	DefaultReportMaxLag           = store.MaxStandbyLagDefault
	DefaultReportStatementTimeout = store.ReportStatementTimeoutDefault
	DefaultDataDir                = ".data"
	DefaultEmbeddedPort           = 54329
	DefaultAddr                   = "127.0.0.1:8080"
	DefaultKeyTTL                 = 5 * time.Minute
	DefaultLeaseTTL               = 60 * time.Second
	DefaultSweepInterval          = sweeper.IntervalDefault
	DefaultHistoryRetention       = sweeper.HistoryRetentionDefault
	DefaultSnapshotAgeWarning     = sweeper.SnapshotAgeWarningDefault
	DefaultLeaderTTL              = leader.TTLDefault
	DefaultDBMaxConns             = 20
	DefaultWaitersDBConns         = wakeup.DBCallsDefault
	DefaultMaxWaiters             = wakeup.MaxWaitersDefault
	DefaultMaxWaitedPools         = wakeup.MaxPoolsDefault
	DefaultMetricsMaxPools        = metrics.DefaultMaxPools
	DefaultDBTimeout              = store.QueryTimeoutDefault
	DefaultShutdownTimeout        = 15 * time.Second
	DefaultDrainDelay             = 5 * time.Second
	DefaultMigrateTimeout         = 10 * time.Minute
)

// durationText writes a default duration as a flag's default, as it would
// be typed: 720h, 5m, 60s.
func durationText(d time.Duration) string {
	if d < 2*time.Minute && d%time.Second == 0 {
		return strconv.Itoa(int(d/time.Second)) + "s"
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// EnvOr returns the variable name as getenv gives it, without surrounding
// space, or fallback when it is unset or blank: how Load, and the commands
// beside serve, read the environment.
func EnvOr(getenv func(string) string, name, fallback string) string {
	if v := strings.TrimSpace(getenv(name)); v != "" {
		return v
	}
	return fallback
}

// Load parses args (without the program name) over the environment given by
// getenv. Invalid values are refused with a message naming the setting.
func Load(args []string, getenv func(string) string, output io.Writer) (Config, error) {
	fs := flag.NewFlagSet("token-orchestrator", flag.ContinueOnError)
	fs.SetOutput(output)
	env := func(name, fallback string) string { return EnvOr(getenv, name, fallback) }

	var (
		cfg                                        Config
		keyTTL, leaseTTL, sweep, dbTimeout, shutdn string
		migrateTimeout, drainDelay                 string
		retention, snapshotWarning                 string
		cors, level                                string
		port, maxConns, waitersConns               string
		maxWaiters, maxWaitedPools                 string
		metricsMaxPools                            string
		election, leaderTTL                        string
		reportMaxLag, reportFallback, reportStmt   string
	)
	fs.StringVar(&cfg.DatabaseURL, "database-url", env("DATABASE_URL", ""), "PostgreSQL URL; empty starts an embedded PostgreSQL under -data-dir (env DATABASE_URL)")
	fs.StringVar(&cfg.ReportDatabaseURL, "report-database-url", env("REPORT_DATABASE_URL", ""), "PostgreSQL URL of a streaming hot standby that reports read from; empty: the primary (env REPORT_DATABASE_URL)")
	fs.StringVar(&reportMaxLag, "report-max-lag", env("REPORT_MAX_LAG", durationText(DefaultReportMaxLag)), "reports refuse a standby replaying further behind than this (env REPORT_MAX_LAG)")
	fs.StringVar(&reportFallback, "report-fallback", env("REPORT_FALLBACK", "false"), "reports read from the primary while the standby cannot be read or is too far behind (env REPORT_FALLBACK)")
	fs.StringVar(&reportStmt, "report-statement-timeout", env("REPORT_STATEMENT_TIMEOUT", durationText(DefaultReportStatementTimeout)), "statement_timeout of report statements on the primary (env REPORT_STATEMENT_TIMEOUT)")
	fs.StringVar(&cfg.DataDir, "data-dir", env("DATA_DIR", DefaultDataDir), "directory of the embedded PostgreSQL's data (env DATA_DIR)")
	fs.StringVar(&port, "embedded-port", env("EMBEDDED_PG_PORT", strconv.Itoa(DefaultEmbeddedPort)), "loopback port of the embedded PostgreSQL (env EMBEDDED_PG_PORT)")
	fs.StringVar(&cfg.Addr, "addr", env("ADDR", DefaultAddr), "HTTP listen address (env ADDR)")
	fs.StringVar(&keyTTL, "key-ttl", env("KEY_TTL", durationText(DefaultKeyTTL)), "life of a key after creation or keep-alive (env KEY_TTL)")
	fs.StringVar(&leaseTTL, "lease-ttl", env("LEASE_TTL", durationText(DefaultLeaseTTL)), "life of a lease after its claim or keep-alive (env LEASE_TTL)")
	fs.StringVar(&sweep, "sweep-interval", env("SWEEP_INTERVAL", durationText(DefaultSweepInterval)), "interval of the background job's services that free ended leases, end cooldowns and delete expired keys (env SWEEP_INTERVAL)")
	fs.StringVar(&retention, "history-retention", env("HISTORY_RETENTION", durationText(DefaultHistoryRetention)), "age after which history rows are deleted, at least 1h (env HISTORY_RETENTION)")
	fs.StringVar(&snapshotWarning, "snapshot-age-warning", env("SNAPSHOT_AGE_WARNING", durationText(DefaultSnapshotAgeWarning)), "warn when a database session holds a snapshot longer than this; 0 turns it off (env SNAPSHOT_AGE_WARNING)")
	fs.StringVar(&election, "leader-election", env("LEADER_ELECTION", "false"), "run the background job on one elected replica at a time (env LEADER_ELECTION)")
	fs.StringVar(&leaderTTL, "leader-ttl", env("LEADER_TTL", durationText(DefaultLeaderTTL)), "term of the job's leader; a dead leader is replaced within 4/3 of it (env LEADER_TTL)")
	fs.StringVar(&cfg.DebugAddr, "debug-addr", env("DEBUG_ADDR", ""), "address for Go's profiler (/debug/pprof/), e.g. 127.0.0.1:6060; empty: off (env DEBUG_ADDR)")
	fs.StringVar(&maxConns, "db-max-conns", env("DB_MAX_CONNS", strconv.Itoa(DefaultDBMaxConns)), "connections to the database (env DB_MAX_CONNS)")
	fs.StringVar(&maxWaiters, "max-waiters", env("MAX_WAITERS", strconv.Itoa(DefaultMaxWaiters)), "clients that may wait for a key at once on this replica; past it ?wait= answers 503 (env MAX_WAITERS)")
	fs.StringVar(&maxWaitedPools, "max-waited-pools", env("MAX_WAITED_POOLS", strconv.Itoa(DefaultMaxWaitedPools)), "pools that clients may wait on at once on this replica; past it ?wait= on another pool answers 503 (env MAX_WAITED_POOLS)")
	fs.StringVar(&metricsMaxPools, "metrics-max-pools", env("METRICS_MAX_POOLS", strconv.Itoa(DefaultMetricsMaxPools)), "pools that get a pool label value of their own in the metrics; later ones count under pool=\"_other\" (env METRICS_MAX_POOLS)")
	fs.StringVar(&waitersConns, "waiters-db-conns", env("WAITERS_DB_CONNS", ""), fmt.Sprintf("connections that the work for waiting clients may use at once, below DB_MAX_CONNS; empty: %d, or DB_MAX_CONNS-1 when smaller (env WAITERS_DB_CONNS)", DefaultWaitersDBConns))
	fs.StringVar(&dbTimeout, "db-timeout", env("DB_TIMEOUT", durationText(DefaultDBTimeout)), "bound on every database call; past it requests answer 503 (env DB_TIMEOUT)")
	fs.StringVar(&migrateTimeout, "migrate-timeout", env("MIGRATE_TIMEOUT", durationText(DefaultMigrateTimeout)), "time start-up may spend applying migrations; index builds wait for older transactions (env MIGRATE_TIMEOUT)")
	fs.StringVar(&drainDelay, "drain-delay", env("DRAIN_DELAY", durationText(DefaultDrainDelay)), "at shutdown, time readiness fails while requests are still served, for load balancers to notice (env DRAIN_DELAY)")
	fs.StringVar(&shutdn, "shutdown-timeout", env("SHUTDOWN_TIMEOUT", durationText(DefaultShutdownTimeout)), "time in-flight requests get to finish at shutdown, after the drain delay (env SHUTDOWN_TIMEOUT)")
	fs.StringVar(&cors, "cors-origins", env("CORS_ORIGINS", ""), "comma-separated origins allowed to call the API from a browser, or * (env CORS_ORIGINS)")
	fs.StringVar(&level, "log-level", env("LOG_LEVEL", "info"), "debug, info, warn or error (env LOG_LEVEL)")
	fs.StringVar(&cfg.LogFormat, "log-format", env("LOG_FORMAT", "text"), "text or json (env LOG_FORMAT)")
	var access accessFlags
	access.register(fs, env)
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}

	var errs []error
	var err error
	duration := func(name, value string, min time.Duration) time.Duration {
		d, err := time.ParseDuration(value)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %q is not a duration (use e.g. 500ms, 30s, 5m)", name, value))
		case d < min:
			errs = append(errs, fmt.Errorf("%s: %s is below the minimum of %s", name, value, min))
		}
		return d
	}
	cfg.KeyTTL = duration("KEY_TTL", keyTTL, time.Millisecond)
	cfg.LeaseTTL = duration("LEASE_TTL", leaseTTL, time.Millisecond)
	cfg.SweepInterval = duration("SWEEP_INTERVAL", sweep, time.Millisecond)
	cfg.DBTimeout = duration("DB_TIMEOUT", dbTimeout, 10*time.Millisecond)
	// Shorter than a lease or an hour, history would lose the starts of
	// leases still running and the reports their hours.
	cfg.HistoryRetention = duration("HISTORY_RETENTION", retention, time.Hour)
	cfg.LeaderTTL = duration("LEADER_TTL", leaderTTL, 30*time.Millisecond)
	cfg.SnapshotAgeWarning = duration("SNAPSHOT_AGE_WARNING", snapshotWarning, 0)
	if cfg.LeaderElection, err = strconv.ParseBool(election); err != nil {
		errs = append(errs, fmt.Errorf("LEADER_ELECTION: %q is not true or false", election))
	}
	cfg.ShutdownTimeout = duration("SHUTDOWN_TIMEOUT", shutdn, 0)
	cfg.DrainDelay = duration("DRAIN_DELAY", drainDelay, 0)
	cfg.MigrateTimeout = duration("MIGRATE_TIMEOUT", migrateTimeout, time.Second)
	cfg.ReportMaxLag = duration("REPORT_MAX_LAG", reportMaxLag, time.Millisecond)
	cfg.ReportStatementTimeout = duration("REPORT_STATEMENT_TIMEOUT", reportStmt, time.Millisecond)
	if cfg.ReportFallback, err = strconv.ParseBool(reportFallback); err != nil {
		errs = append(errs, fmt.Errorf("REPORT_FALLBACK: %q is not true or false", reportFallback))
	}

	if cfg.DatabaseURL != "" {
		if u, err := url.Parse(cfg.DatabaseURL); err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			errs = append(errs, errors.New("DATABASE_URL: must be a postgres:// or postgresql:// URL"))
		}
	}
	if cfg.ReportDatabaseURL != "" {
		if u, err := url.Parse(cfg.ReportDatabaseURL); err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			errs = append(errs, errors.New("REPORT_DATABASE_URL: must be a postgres:// or postgresql:// URL"))
		}
	}
	if cfg.EmbeddedPort, err = strconv.Atoi(port); err != nil || cfg.EmbeddedPort < 1 || cfg.EmbeddedPort > 65535 {
		errs = append(errs, fmt.Errorf("EMBEDDED_PG_PORT: %q is not a port number", port))
	}
	if n, err := strconv.Atoi(maxConns); err != nil || n < 1 || n > 1000 {
		errs = append(errs, fmt.Errorf("DB_MAX_CONNS: %q is not a number from 1 to 1000", maxConns))
	} else {
		cfg.DBMaxConns = n
	}
	count := func(name, value string, max int) int {
		n, err := strconv.Atoi(value)
		if err != nil || n < 1 || n > max {
			errs = append(errs, fmt.Errorf("%s: %q is not a number from 1 to %d", name, value, max))
		}
		return n
	}
	cfg.MaxWaiters = count("MAX_WAITERS", maxWaiters, 1000000)
	cfg.MaxWaitedPools = count("MAX_WAITED_POOLS", maxWaitedPools, 1000000)
	cfg.MetricsMaxPools = count("METRICS_MAX_POOLS", metricsMaxPools, 1000000)
	// One connection at least stays for requests that do not wait, unless
	// the pool has only one.
	waitersLimit := max(1, cfg.DBMaxConns-1)
	if waitersConns == "" {
		cfg.WaitersDBConns = min(DefaultWaitersDBConns, waitersLimit)
	} else if n, err := strconv.Atoi(waitersConns); err != nil || n < 1 || n > waitersLimit {
		errs = append(errs, fmt.Errorf("WAITERS_DB_CONNS: %q is not a number from 1 to %d (below DB_MAX_CONNS, so that requests that do not wait always find a connection)", waitersConns, waitersLimit))
	} else {
		cfg.WaitersDBConns = n
	}
	if cfg.DebugAddr != "" {
		if _, _, err := net.SplitHostPort(cfg.DebugAddr); err != nil {
			errs = append(errs, fmt.Errorf("DEBUG_ADDR: %q is not host:port", cfg.DebugAddr))
		}
	}
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		errs = append(errs, fmt.Errorf("ADDR: %q is not host:port (e.g. :8080 or 127.0.0.1:8080)", cfg.Addr))
	}
	if err := cfg.LogLevel.UnmarshalText([]byte(level)); err != nil {
		errs = append(errs, fmt.Errorf("LOG_LEVEL: %q is not one of debug, info, warn, error", level))
	}
	if cfg.LogFormat != "text" && cfg.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("LOG_FORMAT: %q is not text or json", cfg.LogFormat))
	}
	for _, origin := range strings.Split(cors, ",") {
		origin = strings.TrimSpace(origin)
		if origin == "" {
			continue
		}
		if origin != "*" {
			u, err := url.Parse(origin)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" {
				errs = append(errs, fmt.Errorf("CORS_ORIGINS: %q is not an origin like https://example.com", origin))
				continue
			}
		}
		cfg.CORSOrigins = append(cfg.CORSOrigins, origin)
	}
	errs = append(errs, access.apply(&cfg, env)...)
	cfg.Secrets, err = LoadSecrets(getenv)
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return Config{}, err
	}
	return cfg, nil
}
