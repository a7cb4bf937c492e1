package config

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func env(vars map[string]string) func(string) string {
	return func(name string) string { return vars[name] }
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := Load(nil, env(nil), io.Discard)
	require.NoError(t, err)
	require.Equal(t, "", cfg.DatabaseURL)
	require.Equal(t, ".data", cfg.DataDir)
	require.Equal(t, "127.0.0.1:8080", cfg.Addr)
	require.Equal(t, 5*time.Minute, cfg.KeyTTL)
	require.Equal(t, 60*time.Second, cfg.LeaseTTL)
	require.Equal(t, time.Second, cfg.SweepInterval)
	require.Equal(t, 30*24*time.Hour, cfg.HistoryRetention)
	require.Equal(t, 10*time.Minute, cfg.MigrateTimeout)
	require.Equal(t, 5*time.Second, cfg.DrainDelay)
	require.Equal(t, slog.LevelInfo, cfg.LogLevel)
	require.Empty(t, cfg.CORSOrigins)
	require.Equal(t, 20, cfg.DBMaxConns)
	require.Equal(t, DefaultWaitersDBConns, cfg.WaitersDBConns)
	require.Equal(t, 10000, cfg.MaxWaiters)
	require.Equal(t, 1000, cfg.MaxWaitedPools)
	require.Equal(t, 1000, cfg.MetricsMaxPools)
	require.Equal(t, "", cfg.ReportDatabaseURL, "reports read the primary")
	require.Equal(t, 30*time.Second, cfg.ReportMaxLag)
	require.False(t, cfg.ReportFallback)
	require.Equal(t, 60*time.Second, cfg.ReportStatementTimeout)
}

// Waiting clients never get every connection: unless configured, their
// share is the default or, in a smaller pool, all connections but one.
func TestWaitersLeaveAConnectionToOtherRequests(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		vars map[string]string
		want int
	}{
		{map[string]string{"DB_MAX_CONNS": "3"}, 2},
		{map[string]string{"DB_MAX_CONNS": "1"}, 1},
		{map[string]string{"DB_MAX_CONNS": "50", "WAITERS_DB_CONNS": "10"}, 10},
		{map[string]string{"DB_MAX_CONNS": "4", "WAITERS_DB_CONNS": "3"}, 3},
	} {
		cfg, err := Load(nil, env(tc.vars), io.Discard)
		require.NoError(t, err, "%v", tc.vars)
		require.Equal(t, tc.want, cfg.WaitersDBConns, "%v", tc.vars)
	}
}

func TestEnvironmentAndFlags(t *testing.T) {
	t.Parallel()
	cfg, err := Load([]string{"-lease-ttl", "2s", "-addr", ":9000"}, env(map[string]string{
		"DATABASE_URL":             "postgres://u@db:5432/keys",
		"KEY_TTL":                  "10m",
		"LEASE_TTL":                "30s",
		"SWEEP_INTERVAL":           "250ms",
		"HISTORY_RETENTION":        "48h",
		"CORS_ORIGINS":             "https://a.example.com, http://localhost:3000",
		"LOG_LEVEL":                "debug",
		"ADDR":                     "127.0.0.1:1",
		"ALLOW_OPEN":               "true",
		"MAX_WAITERS":              "500",
		"MAX_WAITED_POOLS":         "20",
		"REPORT_DATABASE_URL":      "postgres://u@standby:5432/keys",
		"REPORT_MAX_LAG":           "2m",
		"REPORT_FALLBACK":          "true",
		"REPORT_STATEMENT_TIMEOUT": "15s",
	}), io.Discard)
	require.NoError(t, err)
	require.Equal(t, "postgres://u@db:5432/keys", cfg.DatabaseURL)
	require.Equal(t, 10*time.Minute, cfg.KeyTTL)
	require.Equal(t, 2*time.Second, cfg.LeaseTTL, "a flag wins over the environment")
	require.Equal(t, ":9000", cfg.Addr)
	require.Equal(t, 250*time.Millisecond, cfg.SweepInterval)
	require.Equal(t, 48*time.Hour, cfg.HistoryRetention)
	require.Equal(t, []string{"https://a.example.com", "http://localhost:3000"}, cfg.CORSOrigins)
	require.Equal(t, slog.LevelDebug, cfg.LogLevel)
	require.Equal(t, 500, cfg.MaxWaiters)
	require.Equal(t, 20, cfg.MaxWaitedPools)
	require.Equal(t, "postgres://u@standby:5432/keys", cfg.ReportDatabaseURL)
	require.Equal(t, 2*time.Minute, cfg.ReportMaxLag)
	require.True(t, cfg.ReportFallback)
	require.Equal(t, 15*time.Second, cfg.ReportStatementTimeout)
}

func TestInvalidValuesAreRefusedWithTheirName(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		vars    map[string]string
		message string
	}{
		{map[string]string{"KEY_TTL": "five minutes"}, "KEY_TTL"},
		{map[string]string{"LEASE_TTL": "-1s"}, "LEASE_TTL"},
		{map[string]string{"LEASE_TTL": "0s"}, "LEASE_TTL"},
		{map[string]string{"SWEEP_INTERVAL": "1"}, "SWEEP_INTERVAL"},
		{map[string]string{"HISTORY_RETENTION": "30d"}, "HISTORY_RETENTION"},
		{map[string]string{"HISTORY_RETENTION": "59m"}, "HISTORY_RETENTION"},
		{map[string]string{"DATABASE_URL": "mysql://x"}, "DATABASE_URL"},
		{map[string]string{"ADDR": "8080"}, "ADDR"},
		{map[string]string{"LOG_LEVEL": "loud"}, "LOG_LEVEL"},
		{map[string]string{"CORS_ORIGINS": "example.com"}, "CORS_ORIGINS"},
		{map[string]string{"DB_MAX_CONNS": "0"}, "DB_MAX_CONNS"},
		{map[string]string{"WAITERS_DB_CONNS": "0"}, "WAITERS_DB_CONNS"},
		{map[string]string{"MAX_WAITERS": "0"}, "MAX_WAITERS"},
		{map[string]string{"MAX_WAITED_POOLS": "many"}, "MAX_WAITED_POOLS"},
		{map[string]string{"WAITERS_DB_CONNS": "20"}, "WAITERS_DB_CONNS: \"20\" is not a number from 1 to 19"},
		{map[string]string{"DB_MAX_CONNS": "4", "WAITERS_DB_CONNS": "4"}, "WAITERS_DB_CONNS"},
		{map[string]string{"EMBEDDED_PG_PORT": "70000"}, "EMBEDDED_PG_PORT"},
		{map[string]string{"REPORT_DATABASE_URL": "standby:5432"}, "REPORT_DATABASE_URL"},
		{map[string]string{"REPORT_MAX_LAG": "0s"}, "REPORT_MAX_LAG"},
		{map[string]string{"REPORT_FALLBACK": "maybe"}, "REPORT_FALLBACK"},
		{map[string]string{"REPORT_STATEMENT_TIMEOUT": "1 minute"}, "REPORT_STATEMENT_TIMEOUT"},
	} {
		_, err := Load(nil, env(tc.vars), io.Discard)
		require.ErrorContains(t, err, tc.message, "%v", tc.vars)
	}
	_, err := Load([]string{"-nope"}, env(nil), io.Discard)
	require.Error(t, err)
	cfg, err := Load([]string{"-history-retention", "2h"}, env(nil), io.Discard)
	require.NoError(t, err)
	require.Equal(t, 2*time.Hour, cfg.HistoryRetention)
	_, err = Load([]string{"extra"}, env(nil), io.Discard)
	require.Error(t, err)
}

// A default duration reads in the help as one would type it.
func TestDurationText(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]string{
		DefaultHistoryRetention: "720h", DefaultKeyTTL: "5m", DefaultLeaseTTL: "60s", DefaultSweepInterval: "1s",
		DefaultMigrateTimeout: "10m", DefaultShutdownTimeout: "15s", 90 * time.Minute: "1h30m", 1500 * time.Millisecond: "1.5s",
	} {
		require.Equal(t, want, durationText(d))
		parsed, err := time.ParseDuration(want)
		require.NoError(t, err)
		require.Equal(t, d, parsed)
	}
}
