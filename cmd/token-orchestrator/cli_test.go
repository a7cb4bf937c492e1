package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/client"
	"github.com/tokenorchestrator/tokenorchestrator/internal/buildinfo"
	"github.com/tokenorchestrator/tokenorchestrator/internal/reports"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/servertest"
)

// runMainWith runs the whole command line in the test's process.
func runMainWith(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	return run(t, runMain, env, args...)
}

// A binary stamped at link time, as make build and the Dockerfile stamp
// it, says so in version, --version and the overview; the command line as
// a process keeps its exit codes.
func TestVersionStampedAtLinkTime(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "token-orchestrator")
	const pkg = "github.com/tokenorchestrator/tokenorchestrator/internal/buildinfo"
	build := exec.Command("go", "build", "-o", bin,
		"-ldflags", "-X "+pkg+".version=v9.8.7-test -X "+pkg+".revision=0123456789abcdef", ".")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)

	binary := func(args ...string) (int, string, string) {
		cmd := exec.Command(bin, args...)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var exit *exec.ExitError
		if err != nil {
			require.ErrorAs(t, err, &exit)
			return exit.ExitCode(), stdout.String(), stderr.String()
		}
		return 0, stdout.String(), stderr.String()
	}
	want := fmt.Sprintf("token-orchestrator v9.8.7-test (revision 0123456789abcdef, %s)\n", buildinfo.GoVersion())
	for _, args := range [][]string{{"version"}, {"--version"}, {"-version"}} {
		code, stdout, stderr := binary(args...)
		require.Equal(t, exitOK, code, stderr)
		require.Equal(t, want, stdout, args)
	}
	code, stdout, _ := binary("version", "--json")
	require.Equal(t, exitOK, code)
	require.JSONEq(t, fmt.Sprintf(`{"version": "v9.8.7-test", "revision": "0123456789abcdef", "goVersion": %q}`, buildinfo.GoVersion()), stdout)
	code, stdout, _ = binary("--help")
	require.Equal(t, exitOK, code)
	require.True(t, strings.HasPrefix(stdout, want), stdout)

	code, _, stderr := binary("kees")
	require.Equal(t, exitUsage, code)
	require.Contains(t, stderr, `Did you mean "keys"?`)
	code, _, stderr = binary("keys", "get", "--server", "http://127.0.0.1:1", "--timeout", "2s")
	require.Equal(t, exitFailed, code)
	require.Contains(t, stderr, "connection refused")
}

// An unstamped build says what it knows.
func TestVersionUnstamped(t *testing.T) {
	t.Parallel()
	r := runMainWith(t, nil, "version")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, fmt.Sprintf("token-orchestrator %s (revision %s, %s)\n",
		buildinfo.Version(), buildinfo.Revision(), buildinfo.GoVersion()), r.stdout)
	require.Equal(t, exitUsage, runMainWith(t, nil, "version", "extra").code)
}

func TestHelp(t *testing.T) {
	t.Parallel()
	overview := runMainWith(t, nil, "help")
	require.Equal(t, exitOK, overview.code, overview.stderr)
	require.Empty(t, overview.stderr)
	require.True(t, strings.HasPrefix(overview.stdout, versionLine()+"\n"), overview.stdout)
	for _, name := range commandNames() {
		require.Regexp(t, `(?m)^  `+name+` +\S`, overview.stdout, "the overview lists every command")
	}
	for _, args := range [][]string{{"--help"}, {"-h"}, {"-help"}} {
		require.Equal(t, overview, runMainWith(t, nil, args...), args)
	}

	// Every command's help, and every keys command's, goes to stdout and
	// lists every exit code.
	helps := [][]string{{"help", "help"}}
	for _, name := range commandNames() {
		helps = append(helps, []string{"help", name}, []string{name, "--help"})
	}
	for group, names := range map[string][]string{"keys": keysNames(), "pools": poolsGroup.names()} {
		for _, name := range names {
			helps = append(helps, []string{"help", group, name}, []string{group, name, "-h"})
		}
	}
	for _, args := range helps {
		r := runMainWith(t, nil, args...)
		require.Equal(t, exitOK, r.code, "%v: %s", args, r.stderr)
		require.Empty(t, r.stderr, args)
		require.Contains(t, r.stdout, "Usage: token-orchestrator", args)
		require.Contains(t, r.stdout, exitCodesHelp, args)
		require.Equal(t, 1, strings.Count(r.stdout, "Exit codes:"), "%v: help is printed once", args)
	}

	// help COMMAND [SUB] is COMMAND [SUB] --help.
	for _, args := range [][]string{{"keys", "get"}, {"keys"}, {"keys", "import"}, {"pools"}, {"pools", "set"}, {"migrate", "up"}, {"report", "leases"}, {"stats"}, {"completion"}, {"exec"}, {"proxy"}} {
		require.Equal(t, runMainWith(t, nil, append(args, "--help")...), runMainWith(t, nil, append([]string{"help"}, args...)...), args)
	}
	require.Contains(t, runMainWith(t, nil, "help", "keys", "get").stdout, "--wait")
	serveHelp := runMainWith(t, nil, "help", "serve").stdout
	require.Contains(t, serveHelp, "-database-url")
	require.NotContains(t, serveHelp, "Usage of", "one usage line")

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"help", "nope"}, `unknown command "nope"`},
		{[]string{"help", "kees"}, `Did you mean "keys"?`},
		{[]string{"help", "keys", "nope"}, `unknown command "nope"`},
		{[]string{"help", "pools", "nope"}, `unknown command "nope"`},
	} {
		r := runMainWith(t, nil, tc.args...)
		require.Equal(t, exitUsage, r.code, tc.args)
		require.Contains(t, r.stderr, tc.want, tc.args)
		require.Empty(t, r.stdout, tc.args)
	}
}

func TestTypoSuggestions(t *testing.T) {
	t.Parallel()
	env := map[string]string{"TOKEN_ORCHESTRATOR_SERVER": "http://127.0.0.1:1", "DATABASE_URL": "postgres://postgres@127.0.0.1:1/none"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"kees"}, `unknown command "kees"` + "\n" + `Did you mean "keys"?`},
		{[]string{"serv"}, `Did you mean "serve"?`},
		{[]string{"hlep"}, `Did you mean "help"?`},
		{[]string{"stat"}, `Did you mean "stats"?`},
		{[]string{"migrat", "up"}, `Did you mean "migrate"?`},
		{[]string{"keys", "gte"}, `Did you mean "get"?`},
		{[]string{"keys", "delet", "ID"}, `Did you mean "delete"?`},
		{[]string{"keys", "keep"}, `Did you mean "keepalive"?`},
		{[]string{"keys", "get", "--pol", "p"}, `Did you mean "--pool"?`},
		{[]string{"keys", "imprt"}, `Did you mean "import"?`},
		{[]string{"keys", "import", "--skip-exist"}, `Did you mean "--skip-existing"?`},
		{[]string{"keys", "info", "--nme", "x"}, `Did you mean "--name"?`},
		{[]string{"pols"}, `Did you mean "pools"?`},
		{[]string{"pools", "st", "p"}, `Did you mean "set"?`},
		{[]string{"pools", "delte", "p"}, `Did you mean "delete"?`},
		{[]string{"pools", "set", "p", "--key-tll", "1h"}, `Did you mean "--key-ttl"?`},
		{[]string{"migrate", "stauts"}, `Did you mean "status"?`},
		{[]string{"report", "leasse"}, `Did you mean "leases"?`},
		{[]string{"report", "lease-activty", "--format", "csv"}, `Did you mean "lease-activity"?`},
		{[]string{"completion", "bahs"}, `Did you mean "bash"?`},
		{[]string{"exce"}, `Did you mean "exec"?`},
		{[]string{"proxi"}, `Did you mean "proxy"?`},
		{[]string{"exec", "--evn", "K", "true"}, `Did you mean "--env"?`},
		{[]string{"proxy", "--upstrem", "https://x"}, `Did you mean "--upstream"?`},
		{[]string{"completion", "bsh"}, `Did you mean one of "bash", "zsh"?`},
	} {
		r := runMainWith(t, env, tc.args...)
		require.Equal(t, exitUsage, r.code, "%v: %s", tc.args, r.stderr)
		require.Contains(t, r.stderr, tc.want, tc.args)
		require.Empty(t, r.stdout, tc.args)
	}
	// Nothing close: no guess.
	r := runMainWith(t, env, "xyzzy")
	require.Equal(t, exitUsage, r.code)
	require.Contains(t, r.stderr, `unknown command "xyzzy"`)
	require.NotContains(t, r.stderr, "Did you mean")
}

func TestSuggest(t *testing.T) {
	t.Parallel()
	names := []string{"create", "get", "list", "info", "release", "keepalive", "delete"}
	require.Equal(t, []string{"get"}, suggest("gte", names))
	require.Equal(t, []string{"get"}, suggest("GET2", names), "case does not matter")
	require.Empty(t, suggest("lst2", names), "short words allow one edit only")
	require.Equal(t, []string{"release", "delete"}, suggest("relese", names), "closest first")
	require.Empty(t, suggest("get", names), "a name is no typo of itself")
	require.Equal(t, "", didYouMean("frobnicate", names))
	require.Equal(t, `Did you mean one of "get", "got"?`+"\n", didYouMean("gat", []string{"get", "list", "got"}))
}

// completionCases are command lines being completed (the last word is the
// one under the cursor) and what completion must offer.
func completionCases() []struct {
	line []string
	want []string
} {
	var reportNames []string
	keyCommands := keysNames()
	for _, r := range reports.All {
		if strings.HasPrefix(r.Name, "le") {
			reportNames = append(reportNames, r.Name)
		}
	}
	return []struct {
		line []string
		want []string
	}{
		{[]string{""}, commandNames()},
		{[]string{"ke"}, []string{"keys"}},
		{[]string{"keys", ""}, keyCommands},
		{[]string{"keys", "get", "--"}, []string{"--help", "--json", "--label", "--pool", "--server", "--timeout", "--token", "--wait"}},
		{[]string{"keys", "get", "--pool", "p", "--w"}, []string{"--wait"}},
		{[]string{"keys", "list", "--pool", ""}, nil},
		{[]string{"keys", "info", "0000", "--js"}, []string{"--json"}},
		{[]string{"keys", "list", "--l"}, []string{"--limit"}},
		{[]string{"keys", "info", "--n"}, []string{"--name"}},
		{[]string{"keys", "import", "--sk"}, []string{"--skip-existing"}},
		{[]string{"keys", "import", "--format", "jsonl", "--k"}, []string{"--key-ttl"}},
		{[]string{"pools", ""}, []string{"set", "get", "list", "delete"}},
		{[]string{"pools", "set", "p", "--key"}, []string{"--key-ttl", "--keys-stay"}},
		{[]string{"pools", "set", "--max-wait", ""}, nil},
		{[]string{"pools", "delete", "p", "--d"}, []string{"--delete-keys"}},
		{[]string{"help", "pools", "de"}, []string{"delete"}},
		{[]string{"migrate", ""}, []string{"up", "status", "down"}},
		{[]string{"migrate", "down", "--y"}, []string{"--yes"}},
		{[]string{"report", "--format", "csv", "le"}, reportNames},
		// A flag's value is neither completed nor taken for a name.
		{[]string{"report", "--pool", ""}, nil},
		{[]string{"report", "--pool", "leases", "le"}, reportNames},
		{[]string{"stats", "--j"}, []string{"--json"}},
		{[]string{"help", "keys", "li"}, []string{"list"}},
		{[]string{"help", "ver"}, []string{"version"}},
		{[]string{"completion", ""}, []string{"bash", "zsh", "fish"}},
		{[]string{"--ver"}, []string{"--version"}},
		{[]string{"serve", "--database-u"}, []string{"--database-url"}},
		{[]string{"--lease-t"}, []string{"--lease-ttl"}},
		{[]string{"ex"}, []string{"exec"}},
		{[]string{"exec", "--"}, []string{"--cooldown-on-exit", "--env", "--help", "--kill-after", "--label", "--pool", "--server", "--token", "--wait"}},
		{[]string{"exec", "--env", ""}, nil},
		{[]string{"proxy", "--up"}, []string{"--upstream", "--upstream-timeout"}},
		{[]string{"proxy", "--header", "X: {secret}", "--m"}, []string{"--max-cooldown", "--metrics-listen"}},
	}
}

func TestCompletionBash(t *testing.T) {
	t.Parallel()
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash is not installed")
	}
	script := completionScript(t, "bash")
	for _, tc := range completionCases() {
		// What bash passes a completion function: the words, and the
		// index of the one under the cursor.
		words := append([]string{"token-orchestrator"}, tc.line...)
		var quoted []string
		for _, w := range words {
			quoted = append(quoted, shellQuote(w))
		}
		prog := fmt.Sprintf("source %s\nCOMP_WORDS=(%s); COMP_CWORD=%d; _token_orchestrator; printf '%%s\\n' \"${COMPREPLY[@]}\"",
			shellQuote(script), strings.Join(quoted, " "), len(words)-1)
		out, err := exec.Command(bash, "--norc", "--noprofile", "-c", prog).CombinedOutput()
		require.NoError(t, err, "%s", out)
		require.ElementsMatch(t, tc.want, strings.Fields(string(out)), "completing %q", tc.line)
	}
}

func TestCompletionZsh(t *testing.T) {
	t.Parallel()
	zsh, err := exec.LookPath("zsh")
	if err != nil {
		t.Skip("zsh is not installed")
	}
	script := completionScript(t, "zsh")
	out, err := exec.Command(zsh, "-n", script).CombinedOutput()
	require.NoError(t, err, "zsh -n: %s", out)
	for _, tc := range completionCases() {
		// _describe, zsh's own, is replaced by one that prints the names
		// it was given.
		words := append([]string{"token-orchestrator"}, tc.line...)
		var quoted []string
		for _, w := range words {
			quoted = append(quoted, shellQuote(w))
		}
		prog := fmt.Sprintf(`compdef() { :; }
source %s
_describe() { local w; for w in "${(@P)4}"; do print -r -- "${w%%%%:*}"; done }
words=(%s); CURRENT=%d
_token_orchestrator`, shellQuote(script), strings.Join(quoted, " "), len(words))
		out, _ := exec.Command(zsh, "-f", "-c", prog).CombinedOutput()
		require.ElementsMatch(t, filterPrefix(strings.Fields(string(out)), tc.line[len(tc.line)-1]), tc.want, "completing %q: %s", tc.line, out)
	}
}

func TestCompletionFish(t *testing.T) {
	t.Parallel()
	fish, err := exec.LookPath("fish")
	if err != nil {
		t.Skip("fish is not installed")
	}
	script := completionScript(t, "fish")
	for _, tc := range completionCases() {
		line := strings.Join(append([]string{"token-orchestrator"}, tc.line...), " ")
		prog := fmt.Sprintf("source %s; complete -C %s", fishQuote(script), fishQuote(line))
		out, err := exec.Command(fish, "--no-config", "-c", prog).CombinedOutput()
		require.NoError(t, err, "%s", out)
		var got []string
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if name, _, _ := strings.Cut(l, "\t"); name != "" {
				got = append(got, name)
			}
		}
		require.ElementsMatch(t, tc.want, got, "completing %q", line)
	}
}

// completionScript writes the script for a shell to a file.
func completionScript(t *testing.T, shell string) string {
	t.Helper()
	r := runMainWith(t, nil, "completion", shell)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "token-orchestrator")
	file := filepath.Join(t.TempDir(), "completion."+shell)
	require.NoError(t, os.WriteFile(file, []byte(r.stdout), 0o600))
	return file
}

// filterPrefix keeps the words that start with prefix, as the shell does
// with what _describe offers.
func filterPrefix(words []string, prefix string) []string {
	var kept []string
	for _, w := range words {
		if strings.HasPrefix(w, prefix) {
			kept = append(kept, w)
		}
	}
	return kept
}

func TestCompletionUsage(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"completion"}, {"completion", "tcsh"}, {"completion", "bash", "zsh"}} {
		r := runMainWith(t, nil, args...)
		require.Equal(t, exitUsage, r.code, args)
		require.Contains(t, r.stderr, "bash, zsh or fish", args)
		require.Empty(t, r.stdout)
	}
}

// keys list pages through a pool without claiming anything; stats shows the
// counts of every pool.
func TestKeysListAndStats(t *testing.T) {
	t.Parallel()
	env := map[string]string{"TOKEN_ORCHESTRATOR_SERVER": servertest.Start(t, servertest.Options{}).URL}
	cli := func(args ...string) result { t.Helper(); return runMainWith(t, env, args...) }

	empty := cli("stats")
	require.Equal(t, exitOK, empty.code, empty.stderr)
	require.Equal(t, "No pool has keys.\n", empty.stdout)

	created := cli("keys", "create", "--pool", "listed", "--count", "5", "--json")
	require.Equal(t, exitOK, created.code, created.stderr)
	var batch struct{ Keys []client.Key }
	require.NoError(t, json.Unmarshal([]byte(created.stdout), &batch))
	var ids []string
	for _, k := range batch.Keys {
		ids = append(ids, k.ID)
	}
	slices.Sort(ids)
	got := cli("keys", "get", "--pool", "listed", "--json")
	require.Equal(t, exitOK, got.code, got.stderr)
	var held client.Key
	require.NoError(t, json.Unmarshal([]byte(got.stdout), &held))
	require.Equal(t, exitOK, cli("keys", "create").code)

	table := cli("keys", "list", "--pool", "listed")
	require.Equal(t, exitOK, table.code, table.stderr)
	lines := strings.Split(strings.TrimSuffix(table.stdout, "\n"), "\n")
	require.Len(t, lines, 7, table.stdout)
	require.Equal(t, []string{"KEY", "NAME", "HINT", "SEATS", "HELD", "STATUS", "LEASE", "ENDS", "EXPIRES", "ASSIGNED"}, strings.Fields(lines[0]))
	for i, id := range ids {
		fields := strings.Fields(lines[i+1])
		require.Equal(t, id, fields[0], "in id order")
		require.Equal(t, []string{"-", "-"}, fields[1:3], "no name, no secret")
		if id == held.ID {
			require.Equal(t, []string{"1/1", "blocked"}, fields[3:5])
			require.Equal(t, "1", fields[len(fields)-1])
		} else {
			require.Equal(t, []string{"0/1", "free", "-"}, fields[3:6])
		}
	}
	require.Equal(t, "5 keys of pool listed.", lines[6])

	// A listing that stops early says where the next one starts; listing
	// from there gives the rest.
	first := cli("keys", "list", "--pool", "listed", "--limit", "2")
	require.Equal(t, exitOK, first.code, first.stderr)
	require.Contains(t, first.stdout, "2 keys of pool listed.\nMore follow: token-orchestrator keys list --pool listed --after "+ids[1]+"\n")
	rest := cli("keys", "list", "--pool", "listed", "--after", ids[1], "--limit", "0", "--json")
	require.Equal(t, exitOK, rest.code, rest.stderr)
	var page struct {
		Pool      string
		Keys      []client.Key
		NextAfter *string
	}
	require.NoError(t, json.Unmarshal([]byte(rest.stdout), &page))
	require.Equal(t, "listed", page.Pool)
	require.Nil(t, page.NextAfter, "the last page")
	require.Len(t, page.Keys, 3)
	for i, k := range page.Keys {
		require.Equal(t, ids[i+2], k.ID)
		require.Empty(t, k.LeaseToken)
	}
	limited := cli("keys", "list", "--pool", "listed", "--limit", "2", "--json")
	require.NoError(t, json.Unmarshal([]byte(limited.stdout), &page))
	require.Equal(t, ids[1], *page.NextAfter)
	require.Len(t, page.Keys, 2)

	require.Equal(t, "Pool nobody has no keys.\n", cli("keys", "list", "--pool", "nobody").stdout)
	defaultPool := cli("keys", "list")
	require.Equal(t, exitOK, defaultPool.code, defaultPool.stderr)
	require.Contains(t, defaultPool.stdout, "1 key of pool default.")
	bad := cli("keys", "list", "--limit", "-1")
	require.Equal(t, exitUsage, bad.code)
	require.Contains(t, bad.stderr, "--limit must be 0 or more")
	bad = cli("keys", "list", "--pool", "no such pool")
	require.Equal(t, exitFailed, bad.code)
	require.Contains(t, bad.stderr, "invalid_parameter")

	stats := cli("stats")
	require.Equal(t, exitOK, stats.code, stats.stderr)
	require.Regexp(t, regexp.MustCompile(`^POOL +KEYS +SEATS +FREE +BLOCKED +EXPIRING WITHIN 1M\n`+
		`default +1 +1 +1 +0 +0\n`+
		`listed +5 +5 +4 +1 +0\n`+
		`total +6 +6 +5 +1 +0\n$`), stats.stdout)
	asJSON := cli("stats", "--json")
	require.Equal(t, exitOK, asJSON.code, asJSON.stderr)
	require.JSONEq(t, `{"pools": [
		{"pool": "default", "total": 1, "seats": 1, "free": 1, "blocked": 0, "expiringWithinMinute": 0},
		{"pool": "listed", "total": 5, "seats": 5, "free": 4, "blocked": 1, "expiringWithinMinute": 0}],
		"total": {"total": 6, "seats": 6, "free": 5, "blocked": 1, "expiringWithinMinute": 0},
		"expiringWithinMinuteCapped": false}`, asJSON.stdout)
	require.Equal(t, exitUsage, cli("stats", "extra").code)
	require.Equal(t, exitFailed, cli("stats", "--server", "http://127.0.0.1:1").code)
}

// The report command prints its help on -h to stdout, as the others do.
func TestReportHelp(t *testing.T) {
	t.Parallel()
	r := runMainWith(t, nil, "report", "-h")
	require.Equal(t, exitOK, r.code)
	require.Empty(t, r.stderr)
	for _, rep := range reports.All {
		require.Contains(t, r.stdout, rep.Name)
	}
	require.Contains(t, r.stdout, "--from")
}
