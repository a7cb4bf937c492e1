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

// serverGroup is a command whose subcommands each call a server: keys,
// pools. Its help, its "did you mean" and its completion are made from its
// table.
type serverGroup struct {
	name string
	// help is the group's help; %s is where the list of its commands goes.
	help     string
	commands []serverCommand
	// apart are subcommands that run on their own: keys import reads a
	// file or standard input.
	apart []apartCommand
	// jsonHelp describes the --json of the group's commands.
	jsonHelp string
}

// serverCommand is one command of a serverGroup.
type serverCommand struct {
	name, summary string
	// arg is what the command takes besides its flags.
	arg argument
	// flags adds the command's own flags and returns what it does.
	flags func(fs *flag.FlagSet) serverAction
}

// argument is the one argument a command takes, if any.
type argument struct {
	// usage is how the usage line writes it ("ID"); empty for a command
	// that takes none. what names it in messages ("key ID").
	usage, what string
	// orFlag is a flag that the command takes instead of the argument
	// (keys info --name).
	orFlag string
}

var (
	keyID       = argument{usage: "ID", what: "key ID"}
	keyIDOrName = argument{usage: "ID|--name NAME", what: "key ID", orFlag: "name"}
)

// apartCommand is a subcommand of a serverGroup that runs on its own.
type apartCommand struct {
	name, usage, summary string
	run                  func(args []string, stdout, stderr io.Writer, getenv func(string) string) int
	// flags describes its flags, for completion.
	flags func() *flag.FlagSet
}

// serverAction does the command's call and describes the outcome; arg is the
// command's argument ("" when it takes none, or got its flag instead).
type serverAction func(ctx context.Context, c *client.Client, arg string) (outcome, error)

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
var keysCommands = []serverCommand{keysCreate, keysGet, keysList, keysInfo, keysRelease, keysKeepAlive, keysDelete}

// keysGroup is "keys": its commands, and import.
var keysGroup = serverGroup{
	name: "keys", help: keysHelp, commands: keysCommands,
	apart: []apartCommand{{name: "import", usage: "import [FILE]",
		summary: "create keys from secrets, one per line of FILE or standard input (plain or JSON lines)",
		run:     runKeysImport, flags: func() *flag.FlagSet { return newImportFlags(io.Discard, noEnv).fs }}},
	jsonHelp: "print the answer as JSON, as the server does (create --count: {\"keys\": [...]})",
}

var keysCreate = serverCommand{name: "create", summary: "create keys in a pool", flags: func(fs *flag.FlagSet) serverAction {
	pool := fs.String("pool", "", "the pool (default: the server's default pool)")
	count := fs.Int("count", 0, "create this many keys (1 to 10000) in one call; default one")
	seats := fs.Int("seats", 0, "seats of each key (1 to 1000): how many leases may hold it at once (default: the pool's policy's, or 1)")
	return func(ctx context.Context, c *client.Client, _ string) (outcome, error) {
		if *seats != 0 {
			n := max(*count, 1)
			keys, err := c.CreateKeysWithSeats(ctx, *pool, n, *seats)
			if err != nil {
				return outcome{}, err
			}
			o := outcome{headline: fmt.Sprintf("Created %d keys of %d seats each.", len(keys), *seats), json: map[string]any{"keys": keys}}
			for _, k := range keys {
				o.headline += "\n" + k.ID
			}
			return o, nil
		}
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

var keysGet = serverCommand{name: "get", summary: "claim a free key of a pool (exit 3 when none is free)", flags: func(fs *flag.FlagSet) serverAction {
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

var keysList = serverCommand{name: "list", summary: "list the keys of a pool, in id order, without claiming any", flags: func(fs *flag.FlagSet) serverAction {
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

var keysInfo = serverCommand{name: "info", summary: "show a key, found by its id or its name", arg: keyIDOrName, flags: func(fs *flag.FlagSet) serverAction {
	byName := keyNameFlags(fs)
	return func(ctx context.Context, c *client.Client, id string) (outcome, error) {
		var key client.Key
		pool, name, err := byName()
		switch {
		case err != nil:
			return outcome{}, err
		case name != "":
			key, err = c.GetKeyByName(ctx, pool, name)
		default:
			key, err = c.GetKey(ctx, id)
		}
		return outcome{keys: []client.Key{key}, json: key}, err
	}
}}

var keysRelease = serverCommand{name: "release", summary: "release a key, ending its lease", arg: keyID, flags: func(fs *flag.FlagSet) serverAction {
	lease := fs.String("lease", "", "end only this lease: refused (exit 1) if the key is held under another")
	return func(ctx context.Context, c *client.Client, id string) (outcome, error) {
		key, err := c.ReleaseKey(ctx, id, *lease)
		return outcome{headline: "Released key " + id + ".", keys: []client.Key{key}, json: key}, err
	}
}}

var keysKeepAlive = serverCommand{name: "keepalive", summary: "keep a key, and its lease, alive", arg: keyID, flags: func(fs *flag.FlagSet) serverAction {
	lease := fs.String("lease", "", "extend only this lease: refused (exit 1) if the key is held under another")
	return func(ctx context.Context, c *client.Client, id string) (outcome, error) {
		key, err := c.KeepAlive(ctx, id, *lease)
		return outcome{headline: "Kept key " + id + " alive.", keys: []client.Key{key}, json: key}, err
	}
}}

var keysDelete = serverCommand{name: "delete", summary: "delete a key for good, found by its id or its name", arg: keyIDOrName, flags: func(fs *flag.FlagSet) serverAction {
	byName := keyNameFlags(fs)
	return func(ctx context.Context, c *client.Client, id string) (outcome, error) {
		pool, name, err := byName()
		if err != nil {
			return outcome{}, err
		}
		if name == "" {
			key, err := c.DeleteKey(ctx, id)
			return outcome{headline: "Deleted key " + id + ".", json: key}, err
		}
		key, err := c.DeleteKeyByName(ctx, pool, name)
		return outcome{headline: fmt.Sprintf("Deleted key %s (%s of pool %s).", key.ID, name, key.Pool), json: key}, err
	}
}}

// keyNameFlags adds --name and --pool, which find a key by its name
// instead of its id, and returns what reads them.
func keyNameFlags(fs *flag.FlagSet) func() (pool, name string, err error) {
	name := fs.String("name", "", "the key's name, instead of its ID")
	pool := fs.String("pool", "", "with --name: the key's pool (default: the server's default pool)")
	return func() (string, string, error) {
		if *pool != "" && *name == "" {
			return "", "", newBadValue("--pool goes with --name: a key ID names the key alone")
		}
		return *pool, *name, nil
	}
}

// runKeys runs "keys COMMAND ..." with the given output and environment.
func runKeys(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	return keysGroup.run(args, stdout, stderr, getenv)
}

// keysNames are the commands of "keys".
func keysNames() []string { return keysGroup.names() }

// keysWords tells completion the commands of "keys" and their flags.
func keysWords() words { return keysGroup.words() }

// run runs "GROUP COMMAND ..." with the given output and environment.
func (g serverGroup) run(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	var list strings.Builder
	tw := tabwriter.NewWriter(&list, 0, 0, 2, ' ', 0)
	for _, cmd := range g.commands {
		usage := cmd.name
		if cmd.arg.usage != "" {
			usage += " " + cmd.arg.usage
		}
		fmt.Fprintf(tw, "  %s\t%s\n", usage, cmd.summary)
	}
	for _, cmd := range g.apart {
		fmt.Fprintf(tw, "  %s\t%s\n", cmd.usage, cmd.summary)
	}
	_ = tw.Flush()
	help := fmt.Sprintf(g.help, list.String())
	if len(args) == 0 {
		fmt.Fprintln(stderr, help)
		return exitUsage
	}
	if args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(stdout, help)
		return exitOK
	}
	for _, cmd := range g.apart {
		if cmd.name == args[0] {
			return cmd.run(args[1:], stdout, stderr, getenv)
		}
	}
	for _, cmd := range g.commands {
		if cmd.name == args[0] {
			return cmd.run(g, args[1:], stdout, stderr, getenv)
		}
	}
	fmt.Fprintf(stderr, "token-orchestrator %s: unknown command %q\n%s\n%s\n", g.name, args[0], didYouMean(args[0], g.names()), help)
	return exitUsage
}

// names are the group's commands: those of its table, then those that run
// apart.
func (g serverGroup) names() []string {
	names := make([]string, 0, len(g.commands)+len(g.apart))
	for _, cmd := range g.commands {
		names = append(names, cmd.name)
	}
	for _, cmd := range g.apart {
		names = append(names, cmd.name)
	}
	return names
}

// words tells completion the group's commands and their flags.
func (g serverGroup) words() words {
	var w words
	for _, cmd := range g.commands {
		w.subcommands = append(w.subcommands, subcommand{name: cmd.name, summary: cmd.summary, flags: cmd.flagSet(g, io.Discard, noEnv).fs})
	}
	for _, cmd := range g.apart {
		w.subcommands = append(w.subcommands, subcommand{name: cmd.name, summary: cmd.summary, flags: cmd.flags()})
	}
	return w
}

// serverFlags are the flags of a command of a serverGroup, parsed.
type serverFlags struct {
	fs *flag.FlagSet
	// action is what the command does.
	action    serverAction
	newClient func() (*client.Client, error)
	asJSON    *bool
	timeout   *time.Duration
}

// flagSet defines the command's flags.
func (cmd serverCommand) flagSet(g serverGroup, stderr io.Writer, getenv func(string) string) serverFlags {
	usage := "Usage: token-orchestrator " + g.name + " " + cmd.name
	if cmd.arg.usage != "" {
		usage += " " + cmd.arg.usage
	}
	fs := newFlagSet("token-orchestrator "+g.name+" "+cmd.name, usage+" [flags]\n\nTo "+cmd.summary+".", stderr)
	f := serverFlags{fs: fs, action: cmd.flags(fs), newClient: clientFlags(fs, getenv), asJSON: fs.Bool("json", false, g.jsonHelp)}
	timeoutHelp := "give up after this long"
	if fs.Lookup("wait") != nil {
		timeoutHelp += " (a wait for a key comes on top)"
	}
	f.timeout = fs.Duration("timeout", 30*time.Second, timeoutHelp)
	return f
}

func (cmd serverCommand) run(g serverGroup, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	f := cmd.flagSet(g, stderr, getenv)
	fs := f.fs
	positional, err := parseFlags(fs, args, stdout)
	if err != nil {
		return parseError(err)
	}
	var arg string
	instead := cmd.arg.orFlag != "" && fs.Lookup(cmd.arg.orFlag).Value.String() != ""
	switch {
	case cmd.arg.usage == "" && len(positional) > 0:
		return usageError(fs, "unexpected arguments: %s", strings.Join(positional, " "))
	case instead && len(positional) > 0:
		return usageError(fs, "expected a %s or --%s, not both", cmd.arg.what, cmd.arg.orFlag)
	case instead:
	case cmd.arg.usage != "" && len(positional) != 1 && cmd.arg.orFlag != "":
		return usageError(fs, "expected one %s, got %d arguments (or --%s instead)", cmd.arg.what, len(positional), cmd.arg.orFlag)
	case cmd.arg.usage != "" && len(positional) != 1:
		return usageError(fs, "expected one %s, got %d arguments", cmd.arg.what, len(positional))
	case cmd.arg.usage != "":
		arg = positional[0]
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
	out, err := f.action(ctx, c, arg)
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
	if k.Name != "" {
		row("name", k.Name)
	}
	if k.SecretHint != "" {
		row("secret hint", "..."+k.SecretHint)
	}
	switch {
	case k.IsBlocked:
		row("status", "blocked")
		if k.LeaseToken != "" {
			row("lease token", k.LeaseToken)
		}
		row("blocked at", formatTime(k.BlockedAt))
		row("lease ends", formatTime(k.LeaseExpiresAt))
	case k.CoolingUntil != nil:
		row("status", "cooling down until "+formatTime(k.CoolingUntil))
	default:
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
	if k.Seats > 1 {
		row("seats", seatsText(k)+" held")
	}
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
	fmt.Fprintln(tw, "KEY\tNAME\tHINT\tSEATS HELD\tSTATUS\tLEASE ENDS\tEXPIRES\tASSIGNED")
	for _, k := range page.Keys {
		status, leaseEnds := "free", "-"
		if k.IsBlocked {
			status = "blocked"
		}
		if k.LeaseExpiresAt != nil {
			leaseEnds = formatTime(k.LeaseExpiresAt)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", k.ID, orDash(k.Name), orDash(k.SecretHint), seatsText(k), status, leaseEnds,
			formatTime(k.ExpiresAt), k.TimesAssigned)
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "%s of pool %s.\n", count(len(page.Keys), "key", "keys"), page.Pool)
	if page.NextAfter != "" {
		fmt.Fprintf(w, "More follow: token-orchestrator keys list --pool %s --after %s\n", page.Pool, page.NextAfter)
	}
}

// seatsText is a key's held seats of its seats, "1/3"; "?/3" where the
// server did not count them.
func seatsText(k client.Key) string {
	held := "?"
	if k.SeatsHeld != nil {
		held = fmt.Sprint(*k.SeatsHeld)
	}
	return fmt.Sprintf("%s/%d", held, k.Seats)
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
