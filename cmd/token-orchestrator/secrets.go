package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tokenorchestrator/tokenorchestrator/internal/config"
	"github.com/tokenorchestrator/tokenorchestrator/internal/lease"
	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
)

const secretsHelp = `Usage: token-orchestrator secrets rotate [flags]

Re-encrypts every key's secret sealed under an older encryption key
(SECRET_KEYS_OLD or SECRET_KEYS_OLD_FILE) under the current one (SECRET_KEY
or SECRET_KEY_FILE), with its new duplicate digest. It works in batches,
each its own short transaction that skips rows a request is changing, and
prints its progress; run it again to finish what a stop or a busy row left.
Once it reports nothing left, the older keys may be removed from the
configuration. Servers keep serving meanwhile: they open rows under every
configured key.`

// secretsFlags adds the flags of "secrets rotate".
func secretsFlags(fs *flag.FlagSet, getenv func(string) string) (databaseURL *string, batch *int, timeout *time.Duration) {
	databaseURL = fs.String("database-url", getenv("DATABASE_URL"), "PostgreSQL URL (env DATABASE_URL); required")
	batch = fs.Int("batch", 500, "rows re-encrypted per transaction (1 to 10000)")
	timeout = fs.Duration("timeout", time.Hour, "give up after this long")
	return databaseURL, batch, timeout
}

// secretsWords tells completion the one command of "secrets" and its flags.
func secretsWords() words {
	fs := flag.NewFlagSet("secrets rotate", flag.ContinueOnError)
	secretsFlags(fs, noEnv)
	return words{subcommands: []subcommand{{name: "rotate", summary: "re-encrypt every secret under the current encryption key", flags: fs}}}
}

func runSecrets(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := newFlagSet("token-orchestrator secrets rotate", secretsHelp, stderr)
	databaseURL, batch, timeout := secretsFlags(fs, getenv)
	if len(args) == 0 || args[0] != "rotate" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			fs.SetOutput(stdout)
			fs.Usage()
			return exitOK
		}
		fs.Usage()
		return exitUsage
	}
	positional, err := parseFlags(fs, args[1:], stdout)
	if err != nil {
		return parseError(err)
	}
	switch {
	case len(positional) > 0:
		return usageError(fs, "unexpected arguments: %v", positional)
	case *databaseURL == "":
		return usageError(fs, "--database-url (or DATABASE_URL) is required")
	case *batch < 1 || *batch > lease.MaxCreate:
		return usageError(fs, "--batch must be 1 to %d", lease.MaxCreate)
	}
	keyring, err := config.LoadSecrets(getenv)
	if err != nil {
		fmt.Fprintf(stderr, "token-orchestrator secrets rotate: %v\n", err)
		return exitUsage
	}
	if !keyring.Enabled() {
		return usageError(fs, "SECRET_KEY (or SECRET_KEY_FILE) is required: it is the key rows are re-encrypted under")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	pool, err := pgxpool.New(ctx, *databaseURL)
	if err != nil {
		fmt.Fprintf(stderr, "token-orchestrator secrets rotate: DATABASE_URL: %v\n", err)
		return exitUsage
	}
	defer pool.Close()
	st := store.New(pool, store.Config{Secrets: keyring})
	fmt.Fprintf(stdout, "Re-encrypting under key %s.\n", keyring.CurrentID())
	total := 0
	for _, old := range keyring.IDs()[1:] {
		done, err := st.Reseal(ctx, old, *batch, func(done int) {
			fmt.Fprintf(stdout, "  key %s: %d re-encrypted\n", old, done)
		})
		if err != nil {
			fmt.Fprintf(stderr, "token-orchestrator secrets rotate: key %s, after %d rows: %v\n", old, done, err)
			return exitFailed
		}
		fmt.Fprintf(stdout, "Key %s: %d rows re-encrypted; none left.\n", old, done)
		total += done
	}
	fmt.Fprintf(stdout, "Done: %d rows re-encrypted under key %s.\n", total, keyring.CurrentID())
	return exitOK
}
