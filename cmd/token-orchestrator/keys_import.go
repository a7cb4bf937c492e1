package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/tokenorchestrator/tokenorchestrator/client"
)

const keysImportHelp = `Usage: token-orchestrator keys import --pool POOL [--label NAME=VALUE ...] [FILE|-]

Creates one key per line of FILE (or of standard input, with - or no FILE),
the line being the key's secret: the credential it stands for, which the
server keeps encrypted and gives out only with a lease. Blank lines are
skipped; surrounding spaces are trimmed. Keys are sent in batches of at most
10,000; every key gets the labels given. A secret that a key of the pool
already carries stops the import at its batch (earlier batches stay
created). The server needs an encryption key (SECRET_KEY).`

// labelFlags collects --label NAME=VALUE, repeatable.
type labelFlags map[string]string

func (l labelFlags) String() string { return "" }

func (l labelFlags) Set(v string) error {
	name, value, err := splitLabel(v)
	if err != nil {
		return err
	}
	l[name] = value
	return nil
}

// splitLabel reads a --label NAME=VALUE; the server checks the rest.
func splitLabel(v string) (name, value string, err error) {
	name, value, ok := strings.Cut(v, "=")
	if !ok || name == "" || value == "" {
		return "", "", errors.New("expected NAME=VALUE")
	}
	return name, value, nil
}

// stdin is what "keys import -" reads; tests replace it.
var stdin io.Reader = os.Stdin

func runKeysImport(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := newFlagSet("token-orchestrator keys import", keysImportHelp, stderr)
	pool := fs.String("pool", "", "the pool (required)")
	labels := labelFlags{}
	fs.Var(labels, "label", "a label every key gets, NAME=VALUE (repeatable)")
	batchSize := fs.Int("batch", client.MaxImport, "keys per call (1 to 10000)")
	newClient := clientFlags(fs, getenv)
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after this long")
	positional, err := parseFlags(fs, args, stdout)
	if err != nil {
		return parseError(err)
	}
	switch {
	case *pool == "":
		return usageError(fs, "--pool is required")
	case len(positional) > 1:
		return usageError(fs, "expected at most one FILE, got %d arguments", len(positional))
	case *batchSize < 1 || *batchSize > client.MaxImport:
		return usageError(fs, "--batch must be 1 to %d", client.MaxImport)
	}
	in := stdin
	if len(positional) == 1 && positional[0] != "-" {
		f, err := os.Open(positional[0])
		if err != nil {
			return usageError(fs, "%v", err)
		}
		defer f.Close()
		in = f
	}
	c, err := newClient()
	if err != nil {
		return usageError(fs, "--server: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	var keyLabels map[string]string
	if len(labels) > 0 {
		keyLabels = labels
	}
	created := 0
	send := func(batch []client.NewKey) error {
		keys, err := c.ImportKeys(ctx, *pool, batch)
		if err != nil {
			return fmt.Errorf("after %d keys created: %w", created, err)
		}
		created += len(keys)
		fmt.Fprintf(stdout, "  %d keys created\n", created)
		return nil
	}
	scanner := bufio.NewScanner(in)
	// A secret may be up to 4 KiB; leave room for longer lines to be
	// refused by the server with a clear message rather than here.
	scanner.Buffer(make([]byte, 64<<10), 1<<20)
	batch := make([]client.NewKey, 0, *batchSize)
	line := 0
	for scanner.Scan() {
		line++
		secret := strings.TrimSpace(scanner.Text())
		if secret == "" {
			continue
		}
		batch = append(batch, client.NewKey{Secret: secret, Labels: keyLabels})
		if len(batch) == *batchSize {
			if err := send(batch); err != nil {
				fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
				return exitFailed
			}
			batch = batch[:0]
		}
	}
	if err := scanner.Err(); err != nil {
		// The error names the line, never its content.
		fmt.Fprintf(stderr, "%s: reading line %d: %v\n", fs.Name(), line+1, err)
		return exitFailed
	}
	if len(batch) > 0 {
		if err := send(batch); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
			return exitFailed
		}
	}
	fmt.Fprintf(stdout, "Imported %d keys into pool %s.\n", created, *pool)
	return exitOK
}
