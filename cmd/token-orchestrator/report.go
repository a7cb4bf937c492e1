package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tokenorchestrator/tokenorchestrator/internal/config"
	"github.com/tokenorchestrator/tokenorchestrator/internal/lease"
	"github.com/tokenorchestrator/tokenorchestrator/internal/reports"
	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
)

// report runs the report command until it is done or interrupted.
func report(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	return runReport(ctx, args, getenv, stdout, stderr)
}

// reportOptions are the flags of report.
type reportOptions struct {
	databaseURL, from, to, pool, format, reportURL *string
	limit                                          *int
	maxLag                                         *time.Duration
	fallback                                       *bool
}

func reportFlags(fs *flag.FlagSet, getenv func(string) string) reportOptions {
	// Without DATABASE_URL, the embedded database that serve starts.
	embedded := "postgres://postgres@127.0.0.1:" + config.EnvOr(getenv, "EMBEDDED_PG_PORT", strconv.Itoa(config.DefaultEmbeddedPort)) + "/postgres?sslmode=disable"
	return reportOptions{
		databaseURL: fs.String("database-url", config.EnvOr(getenv, "DATABASE_URL", embedded), "PostgreSQL URL (env DATABASE_URL; default the embedded database of serve)"),
		from:        fs.String("from", "", "start of the range: an RFC 3339 time, or a duration before now such as 6h (default: 24h before -to)"),
		to:          fs.String("to", "now", "end of the range (exclusive): an RFC 3339 time, a duration before now, or now"),
		pool:        fs.String("pool", "", "only this pool (default: every pool)"),
		limit:       fs.Int("limit", reports.DefaultLimit, "most rows of the leases report"),
		format:      fs.String("format", "table", "table, csv or json"),
		reportURL:   fs.String("report-database-url", config.EnvOr(getenv, "REPORT_DATABASE_URL", ""), "PostgreSQL URL of a streaming standby to read from instead (env REPORT_DATABASE_URL)"),
		maxLag:      fs.Duration("report-max-lag", config.DefaultReportMaxLag, "refuse a standby replaying further behind than this (env REPORT_MAX_LAG)"),
		fallback:    fs.Bool("report-fallback", false, "read from DATABASE_URL when the standby cannot be read or is too far behind (env REPORT_FALLBACK)"),
	}
}

// reportNames are the reports, in the order of the help.
func reportNames() []string {
	names := make([]string, len(reports.All))
	for i, r := range reports.All {
		names[i] = r.Name
	}
	return names
}

func reportWords() words {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	reportFlags(fs, noEnv)
	w := words{flags: fs}
	for _, r := range reports.All {
		w.subcommands = append(w.subcommands, subcommand{name: r.Name, summary: r.Summary})
	}
	return w
}

// runReport prints one report read from the database: the same figures as
// GET /reports/NAME, as a table, CSV or JSON. It returns the exit code:
// exitUsage for bad usage or parameters (nothing was queried), exitFailed
// when the database fails.
func runReport(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := newFlagSet("token-orchestrator report", reportHelp(), stderr)
	opts := reportFlags(fs, getenv)
	if v := config.EnvOr(getenv, "REPORT_MAX_LAG", ""); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			*opts.maxLag = d
		} else {
			return badValue(fs, "REPORT_MAX_LAG: %q is not a positive duration", v)
		}
	}
	if v := config.EnvOr(getenv, "REPORT_FALLBACK", ""); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return badValue(fs, "REPORT_FALLBACK: %q is not true or false", v)
		}
		*opts.fallback = b
	}
	// The report's name may come before or after the flags.
	positional, err := parseFlags(fs, args, stdout)
	if err != nil {
		return parseError(err)
	}
	var name string
	if len(positional) > 0 {
		name, positional = positional[0], positional[1:]
	}
	if len(positional) > 0 {
		return badValue(fs, "unexpected arguments: %s", strings.Join(positional, " "))
	}
	rep, ok := reports.Find(name)
	if !ok {
		if name != "" {
			fmt.Fprintf(stderr, "%s: unknown report %q\n%s\n", fs.Name(), name, didYouMean(name, reportNames()))
		}
		fs.Usage()
		return exitUsage
	}

	now := time.Now()
	params := reports.Params{Pool: *opts.pool, Limit: *opts.limit}
	if params.To, err = parseWhen(*opts.to, now); err != nil {
		return badValue(fs, "-to: %v", err)
	}
	params.From = params.To.Add(-reports.DefaultRange)
	if *opts.from != "" {
		if params.From, err = parseWhen(*opts.from, now); err != nil {
			return badValue(fs, "-from: %v", err)
		}
	}
	if *opts.format != "table" && *opts.format != "csv" && *opts.format != "json" {
		return badValue(fs, "-format must be table, csv or json, got %q", *opts.format)
	}
	if *opts.limit < 1 {
		return badValue(fs, "-limit must be between 1 and %d, got %d", reports.MaxLimit, *opts.limit)
	}
	if err := params.Validate(); err != nil {
		return badValue(fs, "%v", err)
	}

	// Pools connect when first used: with a standby, the primary is only
	// reached when falling back to it.
	db, code := reportPool(ctx, *opts.databaseURL, "DATABASE_URL", stderr)
	if db == nil {
		return code
	}
	defer db.Close()
	storeCfg := store.Config{MaxStandbyLag: *opts.maxLag, ReportFallback: *opts.fallback}
	if *opts.reportURL != "" {
		if storeCfg.Standby, code = reportPool(ctx, *opts.reportURL, "REPORT_DATABASE_URL", stderr); storeCfg.Standby == nil {
			return code
		}
		defer storeCfg.Standby.Close()
	}
	src, err := store.New(db, storeCfg).Reports(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "token-orchestrator report:", describeDBError(err))
		return exitFailed
	}
	table, err := rep.Run(ctx, src, params)
	if err != nil {
		fmt.Fprintln(stderr, "token-orchestrator report:", describeDBError(err))
		return exitFailed
	}
	if f := table.Freshness; *opts.reportURL != "" && *opts.format != "json" {
		// JSON carries it in the document; the other formats keep stdout
		// to the rows.
		fmt.Fprintf(stderr, "read from the %s, %.3fs behind the primary\n", f.Source, f.ReplayLag.Seconds())
	}
	switch *opts.format {
	case "csv":
		err = reports.WriteCSV(stdout, table)
	case "json":
		err = reports.WriteJSON(stdout, rep, params, table)
	default:
		err = reports.WriteText(stdout, table)
	}
	if err != nil {
		fmt.Fprintln(stderr, "token-orchestrator report:", err)
		return exitFailed
	}
	return exitOK
}

// reportPool returns a pool over url, or nil and the exit code.
func reportPool(ctx context.Context, url, setting string, stderr io.Writer) (*pgxpool.Pool, int) {
	pgxCfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		fmt.Fprintf(stderr, "token-orchestrator report: %s: %v\n", setting, err)
		return nil, exitUsage
	}
	pgxCfg.MaxConns = 2
	pgxCfg.ConnConfig.ConnectTimeout = config.DefaultDBTimeout
	if pgxCfg.ConnConfig.RuntimeParams == nil {
		pgxCfg.ConnConfig.RuntimeParams = map[string]string{}
	}
	pgxCfg.ConnConfig.RuntimeParams["application_name"] = "token-orchestrator report"
	db, err := pgxpool.NewWithConfig(ctx, pgxCfg)
	if err != nil {
		fmt.Fprintln(stderr, "token-orchestrator report:", err)
		return nil, exitFailed
	}
	return db, exitOK
}

// parseWhen reads an RFC 3339 time, "now", or a duration before now.
func parseWhen(raw string, now time.Time) (time.Time, error) {
	if raw == "now" {
		return now, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, raw); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(raw); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time such as 2026-11-21T18:00:00Z nor a duration before now such as 6h", raw)
}

// describeDBError adds what to do to the errors an operator can fix.
func describeDBError(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "42883") {
		return err.Error() + "\n  the database has no report views yet: start token-orchestrator serve on it once to apply the migrations"
	}
	if errors.Is(err, store.ErrReportsUnavailable) {
		return err.Error() + "\n  is the standby running and streaming? check REPORT_DATABASE_URL, or set REPORT_FALLBACK=true to read the primary meanwhile"
	}
	if errors.Is(err, lease.ErrUnavailable) {
		return err.Error() + "\n  is the database running? set DATABASE_URL or -database-url"
	}
	return err.Error()
}

// reportHelp is the help of report, with the list of reports.
func reportHelp() string {
	var b strings.Builder
	b.WriteString("Usage: token-orchestrator report NAME [flags]\n\nPrints a report of the key history, read from the database.\n\nReports:\n")
	for _, r := range reports.All {
		fmt.Fprintf(&b, "  %-16s %s\n", r.Name, r.Summary)
	}
	fmt.Fprintf(&b, "\nHourly reports show the UTC hours that overlap [-from, -to); a range covers at most %d days.",
		int(reports.MaxRange/(24*time.Hour)))
	return b.String()
}
