package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/client"
)

// inputFile writes the lines to a file for keys import.
func inputFile(t *testing.T, lines ...string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "keys.txt")
	require.NoError(t, os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o600))
	return file
}

// keys import reads JSON lines as well as plain ones, prints what it
// created line by line, says that the pool got a policy whose keys stay,
// skips what the pool has with --skip-existing, and names the line of a
// duplicate.
func TestKeysImportLinesNamesAndPolicy(t *testing.T) {
	t.Parallel()
	env := map[string]string{"TOKEN_ORCHESTRATOR_SERVER": serverWithKeys(t, "", map[string]string{"SECRET_KEY": newEncodedKey(t)})}
	keys := func(args ...string) result { t.Helper(); return run(t, runKeys, env, args...) }

	imported := keys("import", "--pool", "ai", "--label", "team=core", inputFile(t,
		`{"secret": "sk-alpha-0000000001", "name": "alpha", "labels": {"tier": "paid", "team": "ml"}}`,
		``,
		`{"secret": "sk-beta-00000000002", "name": "beta"}`,
		`  {"secret": "sk-gamma-0000000003"}`,
	))
	require.Equal(t, exitOK, imported.code, imported.stderr)
	lines := strings.Split(strings.TrimSuffix(imported.stdout, "\n"), "\n")
	require.Len(t, lines, 6, imported.stdout)
	require.Equal(t, []string{"LINE", "KEY", "NAME", "HINT"}, strings.Fields(lines[0]))
	id := regexp.MustCompile(`^[0-9a-f-]{36}$`)
	for i, want := range [][]string{{"1", "alpha", "0001"}, {"3", "beta", "0002"}, {"4", "-", "0003"}} {
		fields := strings.Fields(lines[i+1])
		require.Len(t, fields, 4, lines[i+1])
		require.Regexp(t, id, fields[1])
		require.Equal(t, want, []string{fields[0], fields[2], fields[3]})
	}
	require.Equal(t, "Imported 3 keys into pool ai.", lines[4])
	require.Equal(t, "Pool ai had no policy: it now has one whose keys stay until deleted (token-orchestrator pools get ai).", lines[5])
	require.NotContains(t, imported.stdout+imported.stderr, "sk-")

	listed := keys("list", "--pool", "ai", "--json")
	require.Equal(t, exitOK, listed.code, listed.stderr)
	var page struct {
		Keys []map[string]any
	}
	require.NoError(t, json.Unmarshal([]byte(listed.stdout), &page))
	labels := map[any]any{}
	for _, k := range page.Keys {
		labels[k["name"]] = k["labels"]
		require.Nil(t, k["expiresAt"])
	}
	require.Equal(t, map[string]any{"tier": "paid", "team": "ml"}, labels["alpha"], "a line's labels win over --label")
	require.Equal(t, map[string]any{"team": "core"}, labels["beta"])

	// A secret the pool has stops the import at its line; --skip-existing
	// skips it.
	again := inputFile(t, "sk-delta-0000000004", "sk-alpha-0000000001")
	refused := keys("import", "--pool", "ai", again)
	require.Equal(t, exitFailed, refused.code)
	require.Empty(t, refused.stdout)
	require.Contains(t, refused.stderr, "batch of lines 1 to 2: Duplicate secret: line 2: a key of the pool already has this secret")
	require.Contains(t, refused.stderr, "duplicate_secret")
	require.Contains(t, refused.stderr, "--skip-existing skips")
	skipped := keys("import", "--pool", "ai", "--skip-existing", "--json", again)
	require.Equal(t, exitOK, skipped.code, skipped.stderr)
	var answer struct {
		Pool          string
		Keys          []map[string]any
		Skipped       []map[string]any
		PolicyCreated bool
	}
	require.NoError(t, json.Unmarshal([]byte(skipped.stdout), &answer))
	require.Equal(t, "ai", answer.Pool)
	require.Len(t, answer.Keys, 1)
	require.EqualValues(t, 1, answer.Keys[0]["line"])
	require.Equal(t, "0004", answer.Keys[0]["secretHint"])
	require.Equal(t, []map[string]any{{"line": 2.0, "reason": "secret"}}, answer.Skipped)
	require.False(t, answer.PolicyCreated)
	human := keys("import", "--pool", "ai", "--skip-existing", again)
	require.Equal(t, exitOK, human.code, human.stderr)
	require.Equal(t, "Imported 0 keys into pool ai.\nSkipped 2 lines whose secret or name the pool has already: line 1 (secret), line 2 (secret).\n", human.stdout)

	// A duplicate in a later batch: the earlier batches stay, and are shown.
	batched := keys("import", "--pool", "ai", "--batch", "2", inputFile(t, "sk-eps-000000000005", "sk-zeta-00000000006", "sk-beta-00000000002", "sk-eta-000000000007"))
	require.Equal(t, exitFailed, batched.code)
	require.Contains(t, batched.stderr, "batch of lines 3 to 4: Duplicate secret: line 3: a key of the pool already has this secret")
	require.Contains(t, batched.stderr, "the lines before were imported: 2 keys (listed above)")
	require.Contains(t, batched.stdout, "Imported 2 keys into pool ai.")
	require.Regexp(t, `(?m)^2 +[0-9a-f-]{36} +- +0006$`, batched.stdout)

	// Mistakes inside the input stop it before anything is sent.
	for _, tc := range []struct {
		lines []string
		want  string
	}{
		{[]string{"sk-same-0000000008", "", "sk-other-000000009", "sk-same-0000000008"}, "line 4 has the same secret as line 1; nothing was imported"},
		{[]string{`{"secret": "sk-n1-0000000010", "name": "dup"}`, `{"secret": "sk-n2-0000000011", "name": "dup"}`}, "line 2 has the same name (dup) as line 1"},
		{[]string{`{"secret": "sk-x-0000000012", "seat": 2}`}, `line 1: expected {"secret": "...", "name": "...", "labels": {...}, "seats": N}: json: unknown field "seat"`},
		{[]string{`{"secret": "sk-x-0000000014", "seats": 1001}`}, `line 1: "seats" must be between 1 and 1000, got 1001`},
		{[]string{`{"name": "no-secret"}`}, `line 1: no "secret"`},
		{[]string{`{"secret": "sk-ok-0000000013"}`, `not json`}, "line 2: expected {"},
		{[]string{"", "  "}, "the input has no secrets"},
	} {
		r := keys("import", "--pool", "ai", inputFile(t, tc.lines...))
		require.Equal(t, exitUsage, r.code, "%v: %s", tc.lines, r.stderr)
		require.Contains(t, r.stderr, tc.want, tc.lines)
		require.NotContains(t, r.stderr, "sk-", "an error names lines, never secrets")
		require.Empty(t, r.stdout)
	}
	count := keys("list", "--pool", "ai", "--limit", "0")
	require.Contains(t, count.stdout, "6 keys of pool ai.", "nothing of the refused inputs was imported")

	// --format plain takes a line that starts with { as a secret.
	plain := keys("import", "--pool", "ai", "--format", "plain", inputFile(t, "{not-json-0000000014"))
	require.Equal(t, exitOK, plain.code, plain.stderr)
	require.Contains(t, plain.stdout, "Imported 1 key into pool ai.")
	require.Equal(t, exitUsage, keys("import", "--pool", "ai", "--format", "csv", again).code)

	// An import may give a new pool a key life instead; a pool that has a
	// policy keeps it.
	timed := keys("import", "--pool", "timed", "--key-ttl", "24h", inputFile(t, "sk-timed-0000000015"))
	require.Equal(t, exitOK, timed.code, timed.stderr)
	require.Contains(t, timed.stdout, "Pool timed had no policy: it now has one whose keys live 24h0m0s unless kept alive")
	kept := keys("import", "--pool", "ai", "--key-ttl", "24h", inputFile(t, "sk-kept-00000000016"))
	require.Equal(t, exitOK, kept.code, kept.stderr)
	require.Contains(t, kept.stdout, "Pool ai has a policy already: --key-ttl changed nothing")
	c, err := client.New(env["TOKEN_ORCHESTRATOR_SERVER"])
	require.NoError(t, err)
	pool, err := c.GetPool(t.Context(), "timed")
	require.NoError(t, err)
	require.Equal(t, client.Policy{KeyTTL: new(24 * time.Hour)}, pool.Policy)
}

// keys info and keys delete find a key by its name, in a pool.
func TestKeysByName(t *testing.T) {
	t.Parallel()
	env := map[string]string{"TOKEN_ORCHESTRATOR_SERVER": serverWithKeys(t, "", map[string]string{"SECRET_KEY": newEncodedKey(t)})}
	keys := func(args ...string) result { t.Helper(); return run(t, runKeys, env, args...) }
	require.Equal(t, exitOK, keys("import", "--pool", "ai", inputFile(t, `{"secret": "sk-alpha-0000000001", "name": "alpha"}`)).code)

	info := keys("info", "--pool", "ai", "--name", "alpha")
	require.Equal(t, exitOK, info.code, info.stderr)
	id := regexp.MustCompile(`(?m)^  key +([0-9a-f-]{36})$`).FindStringSubmatch(info.stdout)
	require.NotNil(t, id, info.stdout)
	require.Regexp(t, `(?m)^  name +alpha$`, info.stdout)
	require.Regexp(t, `(?m)^  secret hint +\.\.\.0001$`, info.stdout)
	require.Regexp(t, `(?m)^  expires +never: the key stays until deleted$`, info.stdout)
	require.NotContains(t, info.stdout, "sk-alpha")
	byID := keys("info", id[1], "--json")
	require.Equal(t, exitOK, byID.code, byID.stderr)
	require.Contains(t, byID.stdout, `"name": "alpha"`)

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"info", id[1], "--name", "alpha"}, "expected a key ID or --name, not both"},
		{[]string{"info", "--pool", "ai"}, "expected one key ID, got 0 arguments (or --name instead)"},
		{[]string{"info", id[1], "--pool", "ai"}, "--pool goes with --name"},
		{[]string{"delete"}, "expected one key ID, got 0 arguments"},
	} {
		r := keys(tc.args...)
		require.Equal(t, exitUsage, r.code, "%v: %s", tc.args, r.stderr)
		require.Contains(t, r.stderr, tc.want, tc.args)
	}

	deleted := keys("delete", "--name", "alpha", "--pool", "ai")
	require.Equal(t, exitOK, deleted.code, deleted.stderr)
	require.Equal(t, "Deleted key "+id[1]+" (alpha of pool ai).\n", deleted.stdout)
	gone := keys("info", "--pool", "ai", "--name", "alpha")
	require.Equal(t, exitFailed, gone.code)
	require.Contains(t, gone.stderr, "key_not_found")
	require.Equal(t, exitFailed, keys("delete", "--pool", "ai", "--name", "alpha").code)
}
