package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tokenorchestrator/tokenorchestrator/client"
)

const keysImportHelp = `Usage: token-orchestrator keys import --pool POOL [flags] [FILE|-]

Creates one key per line of FILE (or of standard input, with - or no FILE).
A line is either
  plain:       the key's secret, surrounding spaces trimmed, or
  JSON lines:  {"secret": "sk-...", "name": "team-a", "labels": {"tier": "paid"}}
               (secret required; name and labels optional; nothing else).
The first line that is not blank decides for the whole input: JSON lines if
it starts with '{', plain otherwise; --format says it instead. Blank lines
are skipped. The secret is the credential the key stands for, which the
server keeps encrypted and gives out only with a lease, showing its last four
characters as a hint. Every key gets the --label labels; a JSON line's own
labels are added, and win over a --label of the same name.

The whole input is read and checked first: a malformed line, or a secret or
a name that two lines share, stops the import before anything is sent (exit
2), naming the lines. Keys are then sent in batches of at most 10,000. A
secret or a name that a key of the pool already has stops the import at its
batch, naming its line (earlier batches stay created), unless
--skip-existing, which skips such lines and counts them.

Prints the keys created (line, id, name, hint; --json: the server's keys,
each with its line). Keys with secrets in a pool that has no policy give it
one whose keys stay until deleted (or live --key-ttl): the import says so;
'token-orchestrator pools' shows and changes it. The server needs an
encryption key (SECRET_KEY).`

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

// Formats of the input of keys import.
const (
	formatAuto  = "auto"
	formatPlain = "plain"
	formatJSONL = "jsonl"
)

// importFlags are the flags of keys import.
type importFlags struct {
	fs           *flag.FlagSet
	pool         *string
	labels       labelFlags
	format       *string
	skipExisting *bool
	keyTTL       *time.Duration
	batchSize    *int
	asJSON       *bool
	newClient    func() (*client.Client, error)
	timeout      *time.Duration
}

func newImportFlags(stderr io.Writer, getenv func(string) string) importFlags {
	fs := newFlagSet("token-orchestrator keys import", keysImportHelp, stderr)
	f := importFlags{fs: fs, labels: labelFlags{}}
	f.pool = fs.String("pool", "", "the pool (required)")
	fs.Var(f.labels, "label", "a label every key gets, NAME=VALUE (repeatable)")
	f.format = fs.String("format", formatAuto, "the input's lines: plain (one secret a line), jsonl (JSON lines), or auto (JSON lines if the first starts with '{')")
	f.skipExisting = fs.Bool("skip-existing", false, "skip the lines whose secret or name a key of the pool already has, instead of stopping")
	f.keyTTL = fs.Duration("key-ttl", 0, "a pool without a policy gets one whose keys live this long unless kept alive (default: keys stay until deleted)")
	f.batchSize = fs.Int("batch", client.MaxImport, "keys per call (1 to 10000)")
	f.asJSON = fs.Bool("json", false, `print {"pool", "keys": [...], "skipped": [...], "policyCreated"}: the keys as the server answers them, each with its "line"`)
	f.newClient = clientFlags(fs, getenv)
	f.timeout = fs.Duration("timeout", 10*time.Minute, "give up after this long")
	return f
}

// inputKey is a key to import, with the line it came from.
type inputKey struct {
	line int
	key  client.NewKey
}

// importedKey is a key created, with the line it came from.
type importedKey struct {
	line int
	key  client.Key
}

// skippedLine is a line that --skip-existing skipped.
type skippedLine struct {
	Line int `json:"line"`
	// Reason is what a key of the pool had already: secret or name.
	Reason string `json:"reason"`
}

func runKeysImport(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	f := newImportFlags(stderr, getenv)
	fs := f.fs
	positional, err := parseFlags(fs, args, stdout)
	if err != nil {
		return parseError(err)
	}
	switch {
	case *f.pool == "":
		return usageError(fs, "--pool is required")
	case len(positional) > 1:
		return usageError(fs, "expected at most one FILE, got %d arguments", len(positional))
	case *f.batchSize < 1 || *f.batchSize > client.MaxImport:
		return usageError(fs, "--batch must be 1 to %d", client.MaxImport)
	case *f.format != formatAuto && *f.format != formatPlain && *f.format != formatJSONL:
		return usageError(fs, "--format must be auto, plain or jsonl, got %q", *f.format)
	case *f.keyTTL < 0:
		return usageError(fs, "--key-ttl must be positive")
	}
	in := stdin
	if len(positional) == 1 && positional[0] != "-" {
		file, err := os.Open(positional[0])
		if err != nil {
			return usageError(fs, "%v", err)
		}
		defer file.Close()
		in = file
	}
	c, err := f.newClient()
	if err != nil {
		return usageError(fs, "--server: %v", err)
	}
	keys, err := readImport(in, *f.format, f.labels)
	var bad errBadValue
	switch {
	case errors.As(err, &bad):
		return badValue(fs, "%v", err)
	case err != nil:
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		return exitFailed
	}

	ctx, cancel := context.WithTimeout(context.Background(), *f.timeout)
	defer cancel()
	var (
		created       []importedKey
		skipped       []skippedLine
		policyCreated bool
	)
	opts := client.ImportOptions{SkipExisting: *f.skipExisting, KeyTTL: *f.keyTTL}
	for start := 0; start < len(keys); start += *f.batchSize {
		batch := keys[start:min(start+*f.batchSize, len(keys))]
		newKeys := make([]client.NewKey, len(batch))
		for i, k := range batch {
			newKeys[i] = k.key
		}
		res, err := c.Import(ctx, *f.pool, newKeys, opts)
		if err == nil {
			var more []importedKey
			var left []skippedLine
			if more, left, err = matchLines(batch, res); err == nil {
				created, skipped = append(created, more...), append(skipped, left...)
				policyCreated = policyCreated || res.PolicyCreated
				continue
			}
		}
		if len(created) > 0 {
			printImported(stdout, *f.asJSON, *f.pool, created, skipped, policyCreated, *f.keyTTL)
		}
		fmt.Fprintf(stderr, "%s: batch of lines %d to %d: %v\n", fs.Name(), batch[0].line, batch[len(batch)-1].line, byLine(err, batch))
		if len(created) > 0 {
			fmt.Fprintf(stderr, "%s: the lines before were imported: %s (listed above)\n", fs.Name(), count(len(created), "key", "keys"))
		}
		if !*f.skipExisting && (errors.Is(err, client.ErrDuplicateSecret) || errors.Is(err, client.ErrDuplicateName)) {
			fmt.Fprintf(stderr, "%s: --skip-existing skips the lines whose secret or name the pool has already\n", fs.Name())
		}
		return exitFailed
	}
	printImported(stdout, *f.asJSON, *f.pool, created, skipped, policyCreated, *f.keyTTL)
	return exitOK
}

// readImport reads the whole input, checking every line, before anything
// is sent. A line's problem is an errBadValue that names the line, never
// its content.
func readImport(in io.Reader, format string, labels map[string]string) ([]inputKey, error) {
	scanner := bufio.NewScanner(in)
	// A secret may be up to 4 KiB; leave room for longer lines to be
	// refused by the server with a clear message rather than here.
	scanner.Buffer(make([]byte, 64<<10), 1<<20)
	var keys []inputKey
	secrets := map[string]int{}
	names := map[string]int{}
	line := 0
	for scanner.Scan() {
		line++
		text := strings.TrimSpace(scanner.Text())
		if text == "" {
			continue
		}
		if format == formatAuto {
			format = formatPlain
			if strings.HasPrefix(text, "{") {
				format = formatJSONL
			}
		}
		key := client.NewKey{Secret: text}
		if format == formatJSONL {
			var err error
			if key, err = parseJSONLine(text); err != nil {
				return nil, newBadValue("line %d: %v", line, err)
			}
		}
		if len(labels) > 0 || len(key.Labels) > 0 {
			merged := make(map[string]string, len(labels)+len(key.Labels))
			for name, value := range labels {
				merged[name] = value
			}
			for name, value := range key.Labels {
				merged[name] = value
			}
			key.Labels = merged
		}
		if earlier, ok := secrets[key.Secret]; ok {
			return nil, newBadValue("line %d has the same secret as line %d; nothing was imported", line, earlier)
		}
		secrets[key.Secret] = line
		if key.Name != "" {
			if earlier, ok := names[key.Name]; ok {
				return nil, newBadValue("line %d has the same name (%s) as line %d; nothing was imported", line, key.Name, earlier)
			}
			names[key.Name] = line
		}
		keys = append(keys, inputKey{line: line, key: key})
	}
	if err := scanner.Err(); err != nil {
		// The error names the line, never its content.
		return nil, fmt.Errorf("reading line %d: %w", line+1, err)
	}
	if len(keys) == 0 {
		return nil, newBadValue("the input has no secrets; nothing was imported")
	}
	return keys, nil
}

// parseJSONLine reads a line of JSON lines: an object of secret, name,
// labels and seats, and nothing else.
func parseJSONLine(text string) (client.NewKey, error) {
	var entry struct {
		Secret string            `json:"secret"`
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels"`
		Seats  int               `json:"seats"`
	}
	dec := json.NewDecoder(strings.NewReader(text))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&entry); err != nil {
		return client.NewKey{}, fmt.Errorf(`expected {"secret": "...", "name": "...", "labels": {...}, "seats": N}: %w`, err)
	}
	if entry.Seats < 0 || entry.Seats > 1000 {
		return client.NewKey{}, fmt.Errorf(`"seats" must be between 1 and 1000, got %d`, entry.Seats)
	}
	if dec.More() {
		return client.NewKey{}, errors.New("expected one JSON object on the line")
	}
	if entry.Secret == "" {
		return client.NewKey{}, errors.New(`no "secret"`)
	}
	return client.NewKey{Secret: entry.Secret, Name: entry.Name, Labels: entry.Labels, Seats: entry.Seats}, nil
}

// matchLines gives each key that a batch created, and each it skipped, the
// line it came from: the server answers the keys created in the order
// sent, and the skipped ones by their index in the batch.
func matchLines(batch []inputKey, res client.ImportResult) ([]importedKey, []skippedLine, error) {
	if len(res.Keys)+len(res.Skipped) != len(batch) {
		return nil, nil, fmt.Errorf("the server answered %d keys created and %d skipped for %d sent", len(res.Keys), len(res.Skipped), len(batch))
	}
	skip := make(map[int]bool, len(res.Skipped))
	var skipped []skippedLine
	for _, s := range res.Skipped {
		if s.Index < 0 || s.Index >= len(batch) || skip[s.Index] {
			return nil, nil, fmt.Errorf("the server skipped key %d of %d sent", s.Index, len(batch))
		}
		skip[s.Index] = true
		skipped = append(skipped, skippedLine{Line: batch[s.Index].line, Reason: s.Reason})
	}
	created := make([]importedKey, 0, len(res.Keys))
	next := 0
	for i, k := range batch {
		if !skip[i] {
			created = append(created, importedKey{line: k.line, key: res.Keys[next]})
			next++
		}
	}
	return created, skipped, nil
}

// keysIndex is how the server names a key of an import: keys[i].
var keysIndex = regexp.MustCompile(`keys\[(\d+)\]`)

// byLine rewrites the server's keys[i] in an error as the line the key
// came from.
func byLine(err error, batch []inputKey) error {
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) {
		return err
	}
	named := *apiErr
	named.Detail = keysIndex.ReplaceAllStringFunc(apiErr.Detail, func(m string) string {
		i, convErr := strconv.Atoi(keysIndex.FindStringSubmatch(m)[1])
		if convErr != nil || i >= len(batch) {
			return m
		}
		return "line " + strconv.Itoa(batch[i].line)
	})
	return &named
}

// printImported shows what an import created and skipped, and the policy
// it gave the pool. keyTTL is the --key-ttl given, zero for none.
func printImported(w io.Writer, asJSON bool, pool string, created []importedKey, skipped []skippedLine, policyCreated bool, keyTTL time.Duration) {
	if asJSON {
		body := struct {
			Pool          string            `json:"pool"`
			Keys          []json.RawMessage `json:"keys"`
			Skipped       []skippedLine     `json:"skipped"`
			PolicyCreated bool              `json:"policyCreated"`
		}{Pool: pool, Keys: []json.RawMessage{}, Skipped: skipped, PolicyCreated: policyCreated}
		if body.Skipped == nil {
			body.Skipped = []skippedLine{}
		}
		for _, k := range created {
			body.Keys = append(body.Keys, withLine(k))
		}
		printJSON(w, body)
		return
	}
	if len(created) > 0 {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "LINE\tKEY\tNAME\tHINT")
		for _, k := range created {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", k.line, k.key.ID, orDash(k.key.Name), orDash(k.key.SecretHint))
		}
		_ = tw.Flush()
	}
	fmt.Fprintf(w, "Imported %s into pool %s.\n", count(len(created), "key", "keys"), pool)
	if len(skipped) > 0 {
		const shown = 20
		var lines []string
		for i, s := range skipped {
			if i == shown {
				lines = append(lines, fmt.Sprintf("and %d more", len(skipped)-shown))
				break
			}
			lines = append(lines, fmt.Sprintf("line %d (%s)", s.Line, s.Reason))
		}
		fmt.Fprintf(w, "Skipped %s whose secret or name the pool has already: %s.\n", count(len(skipped), "line", "lines"), strings.Join(lines, ", "))
	}
	switch {
	case policyCreated && keyTTL == 0:
		fmt.Fprintf(w, "Pool %s had no policy: it now has one whose keys stay until deleted (token-orchestrator pools get %s).\n", pool, pool)
	case policyCreated:
		fmt.Fprintf(w, "Pool %s had no policy: it now has one whose keys live %s unless kept alive (token-orchestrator pools get %s).\n", pool, keyTTL, pool)
	case keyTTL != 0 && len(created) > 0:
		fmt.Fprintf(w, "Pool %s has a policy already: --key-ttl changed nothing (token-orchestrator pools set %s --key-ttl %s changes it).\n", pool, pool, keyTTL)
	}
}

// withLine writes a key as the server does, with the line it came from.
func withLine(k importedKey) json.RawMessage {
	raw, err := json.Marshal(k.key)
	if err != nil {
		return json.RawMessage("null")
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(raw, &fields) != nil {
		return raw
	}
	fields["line"] = json.RawMessage(strconv.Itoa(k.line))
	out, err := json.Marshal(fields)
	if err != nil {
		return raw
	}
	return out
}

// orDash shows an empty value as "-", so that a table's columns stay
// apart.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// count writes n with the noun's singular or plural.
func count(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}
