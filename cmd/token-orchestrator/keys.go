package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tokenorchestrator/tokenorchestrator/client"
	"github.com/tokenorchestrator/tokenorchestrator/internal/config"
)

const keysHelp = `Usage: token-orchestrator keys COMMAND [flags] [ID]

Talk to a running server: create, lease, list, inspect, keep alive, release
and delete keys.

Commands:
%s
Run 'token-orchestrator keys COMMAND -h' for a command's flags.

` + exitCodesHelp

// defaultServer is where serve listens by default.
const defaultServer = "http://" + config.DefaultAddr

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
	// write, when set, prints the outcome for people instead.
	write func(io.Writer)
	// json is what --json prints.
	json any
}

// errBadValue is a flag value that the command refuses before calling the
// server: a usage error.
type errBadValue string

func (e errBadValue) Error() string { return string(e) }

func newBadValue(format string, args ...any) error { return errBadValue(fmt.Sprintf(format, args...)) }

// keysCommands are the commands of "keys", in the order of the help: one
// line each, the command itself beside its kind.
var keysCommands = []keysCommand{keysCreate, keysGet, keysList, keysInfo, keysRelease, keysKeepAlive, keysDelete}

var keysCreate = keysCommand{name: "create", summary: "create keys in a pool", flags: func(fs *flag.FlagSet) keysAction {
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
}}

var keysGet = keysCommand{name: "get", summary: "claim a free key of a pool (exit 3 when none is free)", flags: func(fs *flag.FlagSet) keysAction {
	pool := fs.String("pool", "", "the pool (default: the server's default pool)")
	wait := fs.Duration("wait", 0, "wait up to this long (at most 60s) for a key to become free")
	var labels []string
	fs.Func("label", "claim only a key that carries this label, NAME=VALUE; repeatable, all must match (the first is the one searched by)", func(v string) error {
		if _, _, err := splitLabel(v); err != nil {
			return err
		}
		labels = append(labels, v)
		return nil
	})
	return func(ctx context.Context, c *client.Client, _ string) (outcome, error) {
		key, err := c.ClaimKey(ctx, *pool, *wait, client.WithLabels(labels...))
		return outcome{
			headline: fmt.Sprintf("Leased key %s under lease token %s.\nKeep it: token-orchestrator keys keepalive %s --lease %s",
				key.ID, key.LeaseToken, key.ID, key.LeaseToken),
			keys: []client.Key{key}, json: key,
		}, err
	}
}}

var keysList = keysCommand{name: "list", summary: "list the keys of a pool, in id order, without claiming any", flags: func(fs *flag.FlagSet) keysAction {
	pool := fs.String("pool", "", "the pool (default: the server's default pool)")
	limit := fs.Int("limit", 100, "list at most this many keys; 0 lists every key")
	after := fs.String("after", "", "start after this key id (the last of a previous listing)")
	return func(ctx context.Context, c *client.Client, _ string) (outcome, error) {
		if *limit < 0 {
			return outcome{}, newBadValue("--limit must be 0 or more, got %d", *limit)
		}
		page := client.KeyPage{Pool: *pool, NextAfter: *after}
		var keys []client.Key
		// Page by page, each one index range on the server, however large
		// the pool.
		for {
			size := client.MaxPageSize
			if *limit > 0 {
				size = min(size, *limit-len(keys))
			}
			next, err := c.ListKeys(ctx, *pool, page.NextAfter, size)
			if err != nil {
				return outcome{}, err
			}
			keys = append(keys, next.Keys...)
			page = next
			if page.NextAfter == "" || (*limit > 0 && len(keys) >= *limit) {
				break
			}
		}
		page.Keys = keys
		o := outcome{json: listJSON(page), write: func(w io.Writer) { printKeyList(w, page) }}
		return o, nil
	}
}}

var keysInfo = keysCommand{name: "info", summary: "show a key", takesID: true, flags: func(fs *flag.FlagSet) keysAction {
	return func(ctx context.Context, c *client.Client, id string) (outcome, error) {
		key, err := c.GetKey(ctx, id)
		return outcome{keys: []client.Key{key}, json: key}, err
	}
}}

var keysRelease = keysCommand{name: "release", summary: "release a key, ending its lease", takesID: true, flags: func(fs *flag.FlagSet) keysAction {
	lease := fs.String("lease", "", "end only this lease: refused (exit 1) if the key is held under another")
	return func(ctx context.Context, c *client.Client, id string) (outcome, error) {
		key, err := c.ReleaseKey(ctx, id, *lease)
		return outcome{headline: "Released key " + id + ".", keys: []client.Key{key}, json: key}, err
	}
}}

var keysKeepAlive = keysCommand{name: "keepalive", summary: "keep a key, and its lease, alive", takesID: true, flags: func(fs *flag.FlagSet) keysAction {
	lease := fs.String("lease", "", "extend only this lease: refused (exit 1) if the key is held under another")
	return func(ctx context.Context, c *client.Client, id string) (outcome, error) {
		key, err := c.KeepAlive(ctx, id, *lease)
		return outcome{headline: "Kept key " + id + " alive.", keys: []client.Key{key}, json: key}, err
	}
}}

var keysDelete = keysCommand{name: "delete", summary: "delete a key for good", takesID: true, flags: func(fs *flag.FlagSet) keysAction {
	return func(ctx context.Context, c *client.Client, id string) (outcome, error) {
		key, err := c.DeleteKey(ctx, id)
		return outcome{headline: "Deleted key " + id + ".", json: key}, err
	}
}}

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
	fmt.Fprintf(stderr, "token-orchestrator keys: unknown command %q\n%s\n%s\n", args[0], didYouMean(args[0], keysNames()), help)
	return exitUsage
}

// keysNames are the commands of "keys": those of keysCommands, and import,
// which reads a file or standard input and so runs apart.
func keysNames() []string {
	names := make([]string, 0, len(keysCommands)+1)
	for _, cmd := range keysCommands {
		names = append(names, cmd.name)
	}
	return append(names, "import")
}

// keysWords tells completion the commands of "keys" and their flags.
func keysWords() words {
	var w words
	for _, cmd := range keysCommands {
		w.subcommands = append(w.subcommands, subcommand{name: cmd.name, summary: cmd.summary, flags: cmd.flagSet(io.Discard, noEnv).fs})
	}
	w.subcommands = append(w.subcommands, subcommand{name: "import", summary: "create keys from secrets, one per line of a file or standard input"})
	return w
}

// keysFlags are the flags of a command of "keys", parsed.
type keysFlags struct {
	fs *flag.FlagSet
	// action is what the command does.
	action    keysAction
	newClient func() (*client.Client, error)
	asJSON    *bool
	timeout   *time.Duration
}

// flagSet defines the command's flags.
func (cmd keysCommand) flagSet(stderr io.Writer, getenv func(string) string) keysFlags {
	usage := "Usage: token-orchestrator keys " + cmd.name
	if cmd.takesID {
		usage += " ID"
	}
	fs := newFlagSet("token-orchestrator keys "+cmd.name, usage+" [flags]\n\nTo "+cmd.summary+".", stderr)
	return keysFlags{
		fs:        fs,
		action:    cmd.flags(fs),
		newClient: clientFlags(fs, getenv),
		asJSON:    fs.Bool("json", false, "print the answer as JSON, as the server does (create --count: {\"keys\": [...]})"),
		timeout:   fs.Duration("timeout", 30*time.Second, "give up after this long (a wait for a key comes on top)"),
	}
}

func (cmd keysCommand) run(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	f := cmd.flagSet(stderr, getenv)
	fs := f.fs
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
	c, err := f.newClient()
	if err != nil {
		return usageError(fs, "--server: %v", err)
	}
	if wait := fs.Lookup("wait"); wait != nil {
		// Waiting for a key comes on top of the timeout.
		d, _ := time.ParseDuration(wait.Value.String())
		*f.timeout += d
	}
	ctx, cancel := context.WithTimeout(context.Background(), *f.timeout)
	defer cancel()
	out, err := f.action(ctx, c, id)
	var bad errBadValue
	switch {
	case errors.As(err, &bad):
		return badValue(fs, "%v", err)
	case errors.Is(err, client.ErrNoKeyAvailable):
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		return exitNoKey
	case err != nil:
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		return exitFailed
	}
	if *f.asJSON {
		printJSON(stdout, out.json)
		return exitOK
	}
	if out.write != nil {
		out.write(stdout)
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
	if k.ExpiresAt != nil {
		row("expires", formatTime(k.ExpiresAt)+" unless kept alive")
	} else {
		row("expires", "never: the key stays until deleted")
	}
	row("kept alive", formatTime(k.LastKeepAliveAt))
	row("times assigned", fmt.Sprint(k.TimesAssigned))
	_ = tw.Flush()
}

// listJSON is a listing as the server writes a page of it: the keys, and
// the after of the keys that follow, null when none does.
func listJSON(page client.KeyPage) any {
	body := struct {
		Pool      string       `json:"pool"`
		Keys      []client.Key `json:"keys"`
		NextAfter *string      `json:"nextAfter"`
	}{Pool: page.Pool, Keys: page.Keys}
	if body.Keys == nil {
		body.Keys = []client.Key{}
	}
	if page.NextAfter != "" {
		body.NextAfter = &page.NextAfter
	}
	return body
}

// printKeyList shows a listing as a table, one key a line.
func printKeyList(w io.Writer, page client.KeyPage) {
	if len(page.Keys) == 0 {
		fmt.Fprintf(w, "Pool %s has no keys.\n", page.Pool)
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tSTATUS\tLEASE ENDS\tEXPIRES\tASSIGNED")
	for _, k := range page.Keys {
		status, leaseEnds := "free", "-"
		if k.IsBlocked {
			status, leaseEnds = "blocked", formatTime(k.LeaseExpiresAt)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", k.ID, status, leaseEnds, formatTime(k.ExpiresAt), k.TimesAssigned)
	}
	_ = tw.Flush()
	noun := "keys"
	if len(page.Keys) == 1 {
		noun = "key"
	}
	fmt.Fprintf(w, "%d %s of pool %s.\n", len(page.Keys), noun, page.Pool)
	if page.NextAfter != "" {
		fmt.Fprintf(w, "More follow: token-orchestrator keys list --pool %s --after %s\n", page.Pool, page.NextAfter)
	}
}

// printJSON writes v indented, as the server's answers read best.
func printJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func formatTime(t *time.Time) string {
	if t == nil {
		return "never"
	}
	return t.UTC().Format("2006-01-02 15:04:05.000 UTC")
}

// clientFlags adds the flags of every command that talks to a server, and
// returns what makes the client they describe once they are parsed.
func clientFlags(fs *flag.FlagSet, getenv func(string) string) func() (*client.Client, error) {
	server := fs.String("server", config.EnvOr(getenv, "TOKEN_ORCHESTRATOR_SERVER", defaultServer),
		"the server's URL (env TOKEN_ORCHESTRATOR_SERVER)")
	token := fs.String("token", getenv("TOKEN_ORCHESTRATOR_TOKEN"),
		"bearer token sent as 'Authorization: Bearer TOKEN' (env TOKEN_ORCHESTRATOR_TOKEN)")
	return func() (*client.Client, error) {
		var opts []client.Option
		if *token != "" {
			opts = append(opts, client.WithToken(*token))
		}
		return client.New(*server, opts...)
	}
}

// noEnv is an empty environment, for flag sets made only to be described.
func noEnv(string) string { return "" }
