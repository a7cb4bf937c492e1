package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tokenorchestrator/tokenorchestrator/client"
)

const keysHelp = `Usage: token-orchestrator keys COMMAND [flags] [ID]

Talk to a running server: create, lease, inspect, keep alive, release and
delete keys.

Commands:
%s
Run 'token-orchestrator keys COMMAND -h' for a command's flags.

` + exitCodesHelp

const defaultServer = "http://127.0.0.1:8080"

// keysCommand is one command of "keys".
type keysCommand struct {
	name, summary string
	// takesID: the command names a key, its one argument.
	takesID bool
	// flags adds the command's own flags and returns what it does.
	flags func(fs *flag.FlagSet) keysAction
}

// keysAction does the command's call and describes the outcome.
type keysAction func(ctx context.Context, c *client.Client, id string) (outcome, error)

// outcome is what a command prints: a headline and keys for people, or the
// server's answer as JSON.
type outcome struct {
	headline string
	keys     []client.Key
	// json is what --json prints.
	json any
}

var keysCommands = []keysCommand{
	{name: "create", summary: "create keys in a pool", flags: func(fs *flag.FlagSet) keysAction {
		pool := fs.String("pool", "", "the pool (default: the server's default pool)")
		count := fs.Int("count", 0, "create this many keys (1 to 10000) in one call; default one")
		return func(ctx context.Context, c *client.Client, _ string) (outcome, error) {
			if *count == 0 {
				key, err := c.CreateKey(ctx, *pool)
				return outcome{headline: "Created key " + key.ID + ".", keys: []client.Key{key}, json: key}, err
			}
			keys, err := c.CreateKeys(ctx, *pool, *count)
			if err != nil {
				return outcome{}, err
			}
			o := outcome{headline: fmt.Sprintf("Created %d keys.", len(keys)), json: map[string]any{"keys": keys}}
			for _, k := range keys {
				o.headline += "\n" + k.ID
			}
			return o, nil
		}
	}},
	{name: "get", summary: "lease a free key of a pool", flags: func(fs *flag.FlagSet) keysAction {
		pool := fs.String("pool", "", "the pool (default: the server's default pool)")
		wait := fs.Duration("wait", 0, "wait up to this long (at most 60s) for a key to become free")
		return func(ctx context.Context, c *client.Client, _ string) (outcome, error) {
			key, err := c.AssignKey(ctx, *pool, *wait)
			return outcome{
				headline: fmt.Sprintf("Leased key %s under lease token %s.\nKeep it: token-orchestrator keys keepalive %s --lease %s",
					key.ID, key.LeaseToken, key.ID, key.LeaseToken),
				keys: []client.Key{key}, json: key,
			}, err
		}
	}},
	{name: "info", summary: "show a key", takesID: true, flags: func(fs *flag.FlagSet) keysAction {
		return func(ctx context.Context, c *client.Client, id string) (outcome, error) {
			key, err := c.GetKey(ctx, id)
			return outcome{keys: []client.Key{key}, json: key}, err
		}
	}},
	{name: "release", summary: "unblock a key, ending its lease", takesID: true, flags: func(fs *flag.FlagSet) keysAction {
		lease := fs.String("lease", "", "end only this lease: refused (exit 1) if the key is held under another")
		return func(ctx context.Context, c *client.Client, id string) (outcome, error) {
			key, err := c.ReleaseKey(ctx, id, *lease)
			return outcome{headline: "Released key " + id + ".", keys: []client.Key{key}, json: key}, err
		}
	}},
	{name: "keepalive", summary: "keep a key, and its lease, alive", takesID: true, flags: func(fs *flag.FlagSet) keysAction {
		lease := fs.String("lease", "", "extend only this lease: refused (exit 1) if the key is held under another")
		return func(ctx context.Context, c *client.Client, id string) (outcome, error) {
			key, err := c.KeepAlive(ctx, id, *lease)
			return outcome{headline: "Kept key " + id + " alive.", keys: []client.Key{key}, json: key}, err
		}
	}},
	{name: "delete", summary: "delete a key for good", takesID: true, flags: func(fs *flag.FlagSet) keysAction {
		return func(ctx context.Context, c *client.Client, id string) (outcome, error) {
			key, err := c.DeleteKey(ctx, id)
			return outcome{headline: "Deleted key " + id + ".", json: key}, err
		}
	}},
}

func keys(args []string) int { return runKeys(args, os.Stdout, os.Stderr, os.Getenv) }

// runKeys runs "keys COMMAND ..." with the given output and environment.
func runKeys(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	var list strings.Builder
	for _, cmd := range keysCommands {
		usage := cmd.name
		if cmd.takesID {
			usage += " ID"
		}
		fmt.Fprintf(&list, "  %-14s %s\n", usage, cmd.summary)
	}
	fmt.Fprintf(&list, "  %-14s %s\n", "import [FILE]", "create keys from secrets, one per line of FILE or standard input")
	help := fmt.Sprintf(keysHelp, list.String())
	if len(args) == 0 {
		fmt.Fprintln(stderr, help)
		return exitUsage
	}
	if args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(stdout, help)
		return exitOK
	}
	if args[0] == "import" {
		// It reads a file or standard input, unlike the commands below.
		return runKeysImport(args[1:], stdout, stderr, getenv)
	}
	for _, cmd := range keysCommands {
		if cmd.name == args[0] {
			return cmd.run(args[1:], stdout, stderr, getenv)
		}
	}
	fmt.Fprintf(stderr, "token-orchestrator keys: unknown command %q\n\n%s\n", args[0], help)
	return exitUsage
}

func (cmd keysCommand) run(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	usage := "Usage: token-orchestrator keys " + cmd.name
	if cmd.takesID {
		usage += " ID"
	}
	fs := newFlagSet("token-orchestrator keys "+cmd.name, usage+" [flags]\n\nTo "+cmd.summary+".", stderr)
	action := cmd.flags(fs)
	server := fs.String("server", envOr(getenv, "TOKEN_ORCHESTRATOR_SERVER", defaultServer),
		"the server's URL (env TOKEN_ORCHESTRATOR_SERVER)")
	token := fs.String("token", getenv("TOKEN_ORCHESTRATOR_TOKEN"),
		"bearer token sent as 'Authorization: Bearer TOKEN' (env TOKEN_ORCHESTRATOR_TOKEN)")
	asJSON := fs.Bool("json", false, "print the key as JSON, as the server does (create --count: {\"keys\": [...]})")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long (a wait for a key comes on top)")
	positional, err := parseFlags(fs, args, stdout)
	if err != nil {
		return parseError(err)
	}
	var id string
	switch {
	case cmd.takesID && len(positional) != 1:
		return usageError(fs, "expected one key ID, got %d arguments", len(positional))
	case cmd.takesID:
		id = positional[0]
	case len(positional) > 0:
		return usageError(fs, "unexpected arguments: %s", strings.Join(positional, " "))
	}
	var opts []client.Option
	if *token != "" {
		opts = append(opts, client.WithToken(*token))
	}
	c, err := client.New(*server, opts...)
	if err != nil {
		return usageError(fs, "--server: %v", err)
	}
	if wait := fs.Lookup("wait"); wait != nil {
		// Waiting for a key comes on top of the timeout.
		d, _ := time.ParseDuration(wait.Value.String())
		*timeout += d
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	out, err := action(ctx, c, id)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		return exitFailed
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(out.json)
		return exitOK
	}
	if out.headline != "" {
		fmt.Fprintln(stdout, out.headline)
	}
	for _, key := range out.keys {
		printKey(stdout, key)
	}
	return exitOK
}

// printKey shows a key as a table for people.
func printKey(w io.Writer, k client.Key) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(name, value string) { fmt.Fprintf(tw, "  %s\t%s\n", name, value) }
	row("key", k.ID)
	row("pool", k.Pool)
	if k.IsBlocked {
		row("status", "blocked")
		if k.LeaseToken != "" {
			row("lease token", k.LeaseToken)
		}
		row("blocked at", formatTime(k.BlockedAt))
		row("lease ends", formatTime(k.LeaseExpiresAt))
	} else if k.CoolingUntil != nil {
		row("status", "cooling down until "+formatTime(k.CoolingUntil))
	} else {
		row("status", "free")
	}
	if len(k.Labels) > 0 {
		names := make([]string, 0, len(k.Labels))
		for name := range k.Labels {
			names = append(names, name)
		}
		sort.Strings(names)
		for i, name := range names {
			names[i] = name + "=" + k.Labels[name]
		}
		row("labels", strings.Join(names, " "))
	}
	if k.Secret != "" {
		// Shown to the holder only with --json, never on a screen by default.
		row("secret", "(held; --json prints it)")
	}
	row("created", formatTime(&k.CreatedAt))
	row("expires", formatTime(&k.ExpiresAt)+" unless kept alive")
	row("kept alive", formatTime(k.LastKeepAliveAt))
	row("times assigned", fmt.Sprint(k.TimesAssigned))
	_ = tw.Flush()
}

func formatTime(t *time.Time) string {
	if t == nil {
		return "never"
	}
	return t.UTC().Format("2006-01-02 15:04:05.000 UTC")
}

func envOr(getenv func(string) string, name, fallback string) string {
	if v := strings.TrimSpace(getenv(name)); v != "" {
		return v
	}
	return fallback
}
