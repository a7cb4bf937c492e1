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
	"github.com/tokenorchestrator/tokenorchestrator/internal/reports"
	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
)

func report(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	return runReport(ctx, args, os.Getenv, os.Stdout, os.Stderr)
}

// runReport prints one report read from the database: the same figures as
// GET /reports/NAME, as a table, CSV or JSON. It returns the exit code: 2
// for bad usage or parameters (nothing was queried), 1 when the database
// fails.
func runReport(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("token-orchestrator report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	env := func(name, fallback string) string {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			return v
		}
		return fallback
	}
	// Without DATABASE_URL, the embedded database that serve starts.
	embedded := "postgres://postgres@127.0.0.1:" + env("EMBEDDED_PG_PORT", strconv.Itoa(config.DefaultEmbeddedPort)) + "/postgres?sslmode=disable"
	var (
		databaseURL = fs.String("database-url", env("DATABASE_URL", embedded), "PostgreSQL URL (env DATABASE_URL; default the embedded database of serve)")
		from        = fs.String("from", "", "start of the range: an RFC 3339 time, or a duration before now such as 6h (default: 24h before -to)")
		to          = fs.String("to", "now", "end of the range (exclusive): an RFC 3339 time, a duration before now, or now")
		pool        = fs.String("pool", "", "only this pool (default: every pool)")
		limit       = fs.Int("limit", reports.DefaultLimit, "most rows of the leases report")
		format      = fs.String("format", "table", "table, csv or json")
		reportURL   = fs.String("report-database-url", env("REPORT_DATABASE_URL", ""), "PostgreSQL URL of a streaming standby to read from instead (env REPORT_DATABASE_URL)")
		maxLag      = fs.Duration("report-max-lag", config.DefaultReportMaxLag, "refuse a standby replaying further behind than this (env REPORT_MAX_LAG)")
		fallback    = fs.Bool("report-fallback", false, "read from DATABASE_URL when the standby cannot be read or is too far behind (env REPORT_FALLBACK)")
	)
	if v := env("REPORT_MAX_LAG", ""); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			*maxLag = d
		} else {
			fmt.Fprintf(stderr, "token-orchestrator report: REPORT_MAX_LAG: %q is not a positive duration\n", v)
			return 2
		}
	}
	if v := env("REPORT_FALLBACK", ""); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			fmt.Fprintf(stderr, "token-orchestrator report: REPORT_FALLBACK: %q is not true or false\n", v)
			return 2
		}
		*fallback = b
	}
	fs.Usage = func() { reportUsage(fs) }
	// The report's name may come before or after the flags.
	var name string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if name == "" && fs.NArg() > 0 {
		name = fs.Arg(0)
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return 2
		}
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "token-orchestrator report: unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return 2
	}
	rep, ok := reports.Find(name)
	if !ok {
		if name != "" {
			fmt.Fprintf(stderr, "token-orchestrator report: unknown report %q\n\n", name)
		}
		fs.Usage()
		return 2
	}

	now := time.Now()
	params := reports.Params{Pool: *pool, Limit: *limit}
	var err error
	if params.To, err = parseWhen(*to, now); err != nil {
		fmt.Fprintln(stderr, "token-orchestrator report: -to:", err)
		return 2
	}
	params.From = params.To.Add(-reports.DefaultRange)
	if *from != "" {
		if params.From, err = parseWhen(*from, now); err != nil {
			fmt.Fprintln(stderr, "token-orchestrator report: -from:", err)
			return 2
		}
	}
	if *format != "table" && *format != "csv" && *format != "json" {
		fmt.Fprintf(stderr, "token-orchestrator report: -format must be table, csv or json, got %q\n", *format)
		return 2
	}
	if *limit < 1 {
		fmt.Fprintf(stderr, "token-orchestrator report: -limit must be between 1 and %d, got %d\n", reports.MaxLimit, *limit)
		return 2
	}
	if err := params.Validate(); err != nil {
		fmt.Fprintln(stderr, "token-orchestrator report:", err)
		return 2
	}

	// Pools connect when first used: with a standby, the primary is only
	// reached when falling back to it.
	db, code := reportPool(ctx, *databaseURL, "DATABASE_URL", stderr)
	if db == nil {
		return code
	}
	defer db.Close()
	storeCfg := store.Config{MaxStandbyLag: *maxLag, ReportFallback: *fallback}
	if *reportURL != "" {
		if storeCfg.Standby, code = reportPool(ctx, *reportURL, "REPORT_DATABASE_URL", stderr); storeCfg.Standby == nil {
			return code
		}
		defer storeCfg.Standby.Close()
	}
	src, err := store.New(db, storeCfg).Reports(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "token-orchestrator report:", describeDBError(err))
		return 1
	}
	table, err := rep.Run(ctx, src, params)
	if err != nil {
		fmt.Fprintln(stderr, "token-orchestrator report:", describeDBError(err))
		return 1
	}
	if f := table.Freshness; *reportURL != "" && *format != "json" {
		// JSON carries it in the document; the other formats keep stdout
		// to the rows.
		fmt.Fprintf(stderr, "read from the %s, %.3fs behind the primary\n", f.Source, f.ReplayLag.Seconds())
	}
	switch *format {
	case "csv":
		err = reports.WriteCSV(stdout, table)
	case "json":
		err = reports.WriteJSON(stdout, rep, params, table)
	default:
		err = reports.WriteText(stdout, table)
	}
	if err != nil {
		fmt.Fprintln(stderr, "token-orchestrator report:", err)
		return 1
	}
	return 0
}

// reportPool returns a pool over url, or nil and the exit code.
func reportPool(ctx context.Context, url, setting string, stderr io.Writer) (*pgxpool.Pool, int) {
	pgxCfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		fmt.Fprintf(stderr, "token-orchestrator report: %s: %v\n", setting, err)
		return nil, 2
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
		return nil, 1
	}
	return db, 0
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
	if errors.Is(err, store.ErrUnavailable) {
		return err.Error() + "\n  is the database running? set DATABASE_URL or -database-url"
	}
	return err.Error()
}

func reportUsage(fs *flag.FlagSet) {
	out := fs.Output()
	fmt.Fprintln(out, "Usage: token-orchestrator report NAME [flags]\n\nPrints a report of the key history, read from the database.\n\nReports:")
	for _, r := range reports.All {
		fmt.Fprintf(out, "  %-16s %s\n", r.Name, r.Summary)
	}
	fmt.Fprintln(out, "\nHourly reports show the UTC hours that overlap [-from, -to); a range covers at most "+
		strconv.Itoa(int(reports.MaxRange/(24*time.Hour)))+" days.\n\nFlags:")
	fs.PrintDefaults()
}
