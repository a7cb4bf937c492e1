package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tokenorchestrator/tokenorchestrator/internal/migrate"
	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
)

const migrateHelp = `Usage: token-orchestrator migrate up|down|status [flags]

Manage the database schema. The server applies pending migrations by itself
at start (under a lock, so replicas starting together apply each once);
these commands are for operators.

  up      apply every pending migration
  status  list every migration and whether it is applied
  down    roll back the most recent migration. This DROPS the tables it
          created, with every key and history row in them. It is refused
          unless --yes is given. Stop every server first.`

// migrateActions are the actions of migrate, for completion and typo
// suggestions; migrateHelp describes them.
var migrateActions = []subcommand{
	{name: "up", summary: "apply every pending migration"},
	{name: "status", summary: "list every migration and whether it is applied"},
	{name: "down", summary: "roll back the most recent migration, dropping its data (with --yes)"},
}

func migrateFlags(fs *flag.FlagSet, getenv func(string) string) (databaseURL *string, yes *bool, timeout *time.Duration) {
	databaseURL = fs.String("database-url", getenv("DATABASE_URL"), "PostgreSQL URL (env DATABASE_URL); required")
	yes = fs.Bool("yes", false, "confirm 'down', which deletes data")
	// As long as the server's MIGRATE_TIMEOUT: an index built concurrently
	// waits for every transaction older than itself.
	timeout = fs.Duration("timeout", 10*time.Minute, "give up after this long")
	return databaseURL, yes, timeout
}

func migrateWords() words {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	migrateFlags(fs, noEnv)
	return words{flags: fs, subcommands: migrateActions}
}

func runMigrate(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := newFlagSet("token-orchestrator migrate", migrateHelp, stderr)
	databaseURL, yes, timeout := migrateFlags(fs, getenv)
	positional, err := parseFlags(fs, args, stdout)
	if err != nil {
		return parseError(err)
	}
	if len(positional) != 1 {
		return usageError(fs, "expected one of up, down, status")
	}
	action := positional[0]
	switch {
	case action != "up" && action != "down" && action != "status":
		var names []string
		for _, a := range migrateActions {
			names = append(names, a.name)
		}
		msg := fmt.Sprintf("unknown action %q; expected up, down or status", action)
		if suggestion := didYouMean(action, names); suggestion != "" {
			msg += "\n" + strings.TrimSuffix(suggestion, "\n")
		}
		return usageError(fs, "%s", msg)
	case action == "down" && !*yes:
		return usageError(fs, "'down' drops tables and their data; add --yes to confirm")
	case *databaseURL == "":
		return usageError(fs, "set DATABASE_URL or --database-url")
	}

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	pool, err := pgxpool.New(ctx, *databaseURL)
	if err != nil {
		return usageError(fs, "--database-url: %v", err)
	}
	defer pool.Close()
	if err := migrateAction(ctx, pool, action, stdout); err != nil {
		fmt.Fprintf(stderr, "token-orchestrator migrate %s: %v\n", action, err)
		return exitFailed
	}
	return exitOK
}

func migrateAction(ctx context.Context, pool *pgxpool.Pool, action string, stdout io.Writer) error {
	switch action {
	case "up":
		applied, err := migrate.Apply(ctx, pool)
		if err != nil {
			return err
		}
		if len(applied) == 0 {
			fmt.Fprintln(stdout, "Every migration was already applied.")
		}
		for _, version := range applied {
			fmt.Fprintf(stdout, "Applied migration %d.\n", version)
		}
		// The server would refuse to start on such a schema: say so now.
		return store.New(pool, store.Config{}).CheckIndexes(ctx)
	case "down":
		version, err := migrate.RollBack(ctx, pool)
		if errors.Is(err, migrate.ErrNothingToRollBack) {
			fmt.Fprintln(stdout, "No migration is applied: nothing to roll back.")
			return nil
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "Rolled back migration %d.\n", version)
		return nil
	default:
		migrations, err := migrate.Status(ctx, pool)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "VERSION\tFILE\tAPPLIED")
		for _, m := range migrations {
			applied := "pending"
			if m.Applied() {
				applied = m.AppliedAt.UTC().Format("2006-01-02 15:04:05 UTC")
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\n", m.Version, m.File, applied)
		}
		return tw.Flush()
	}
}
