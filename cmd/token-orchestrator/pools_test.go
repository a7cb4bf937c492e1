package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/client"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/servertest"
)

// pools set changes what its flags say and keeps the rest of the policy;
// get, list and delete show and remove it; the policy is obeyed.
func TestPoolsCommands(t *testing.T) {
	t.Parallel()
	env := map[string]string{"TOKEN_ORCHESTRATOR_SERVER": servertest.Start(t, servertest.Options{KeyTTL: time.Hour, LeaseTTL: time.Minute}).URL}
	cli := func(args ...string) result { t.Helper(); return runMainWith(t, env, args...) }
	policyOf := func(r result) map[string]any {
		t.Helper()
		require.Equal(t, exitOK, r.code, r.stderr)
		var pool map[string]any
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &pool), r.stdout)
		return pool["policy"].(map[string]any)
	}

	require.Equal(t, "No pool has keys or a policy.\n", cli("pools", "list").stdout)
	require.Equal(t, exitOK, cli("keys", "create", "--pool", "strict", "--count", "2").code)
	plain := cli("pools", "get", "strict")
	require.Equal(t, exitOK, plain.code, plain.stderr)
	require.Regexp(t, `(?m)^  policy +none: the server's settings apply$`, plain.stdout)
	require.Regexp(t, `(?m)^  keys +2 \(2 free, 0 held\)$`, plain.stdout)
	require.Regexp(t, `(?m)^  key life +1h0m0s after creation or the last keep-alive \(server\)$`, plain.stdout)
	unknown := cli("pools", "get", "nobody")
	require.Equal(t, exitFailed, unknown.code)
	require.Contains(t, unknown.stderr, "unknown_pool")

	set := cli("pools", "set", "strict", "--keys-stay", "--lease-ttl", "2m", "--require-lease-token")
	require.Equal(t, exitOK, set.code, set.stderr)
	require.Contains(t, set.stdout, "Set the policy of pool strict.\n2 keys got the new key life.\n")
	require.Regexp(t, `(?m)^  key life +stays until deleted \(policy\)$`, set.stdout)
	require.Regexp(t, `(?m)^  lease +2m0s after a claim or keep-alive \(policy\)$`, set.stdout)
	require.Regexp(t, `(?m)^  lease token +required for releases and keep-alives \(policy\)$`, set.stdout)
	require.Regexp(t, `(?m)^  longest wait +1m0s \(server\)$`, set.stdout)

	// A second set changes what it names only.
	require.Equal(t, map[string]any{"keyTTL": nil, "leaseTTL": "2m0s", "requireLeaseToken": true, "maxWait": "5s"},
		policyOf(cli("pools", "set", "strict", "--max-wait", "5s", "--json")))
	require.Equal(t, map[string]any{"keyTTL": nil, "requireLeaseToken": true, "maxWait": "5s"},
		policyOf(cli("pools", "set", "strict", "--lease-ttl", "default", "--json")), "default: the server's setting")

	// The policy is obeyed: a release must name its lease.
	got := cli("keys", "get", "--pool", "strict", "--json")
	require.Equal(t, exitOK, got.code, got.stderr)
	var held client.Key
	require.NoError(t, json.Unmarshal([]byte(got.stdout), &held))
	require.Nil(t, held.ExpiresAt, "keys of the pool stay")
	refused := cli("keys", "release", held.ID)
	require.Equal(t, exitFailed, refused.code)
	require.Contains(t, refused.stderr, "lease_token_required")
	require.Equal(t, exitOK, cli("keys", "release", held.ID, "--lease", held.LeaseToken).code)

	table := cli("pools", "list")
	require.Equal(t, exitOK, table.code, table.stderr)
	lines := strings.Split(strings.TrimSuffix(table.stdout, "\n"), "\n")
	require.Len(t, lines, 2, table.stdout)
	require.Equal(t, []string{"POOL", "POLICY", "KEYS", "SEATS", "FREE", "HELD", "KEY", "LIFE", "LEASE", "LONGEST", "LEASE", "LEASE", "TOKEN", "LONGEST", "WAIT"},
		strings.Fields(lines[0]))
	require.Equal(t, []string{"strict", "yes", "2", "2", "2", "0", "stays", "1m0s", "-", "required", "5s"}, strings.Fields(lines[1]))
	asJSON := cli("pools", "list", "--json")
	require.Equal(t, exitOK, asJSON.code, asJSON.stderr)
	var list struct{ Pools []client.Pool }
	require.NoError(t, json.Unmarshal([]byte(asJSON.stdout), &list))
	require.Len(t, list.Pools, 1)
	require.Equal(t, client.Policy{KeysStay: true, RequireLeaseToken: true, MaxWait: new(5 * time.Second)}, list.Pools[0].Policy)

	// --replace starts from an empty policy.
	require.Equal(t, map[string]any{"maxWait": "10s"}, policyOf(cli("pools", "set", "strict", "--replace", "--max-wait", "10s", "--json")))

	notEmpty := cli("pools", "delete", "strict")
	require.Equal(t, exitFailed, notEmpty.code)
	require.Contains(t, notEmpty.stderr, "pool_not_empty")
	require.Contains(t, notEmpty.stderr, "--delete-keys deletes them too")
	deleted := cli("pools", "delete", "strict", "--delete-keys")
	require.Equal(t, exitOK, deleted.code, deleted.stderr)
	require.Equal(t, "Deleted pool strict and its 2 keys.\n", deleted.stdout)
	require.Equal(t, exitFailed, cli("pools", "get", "strict").code)

	// A pool may have a policy before it has keys.
	require.Equal(t, exitOK, cli("pools", "set", "later", "--key-ttl", "24h").code)
	gone := cli("pools", "delete", "later", "--json")
	require.Equal(t, exitOK, gone.code, gone.stderr)
	require.JSONEq(t, `{"pool": "later", "deleted": true, "deletedKeys": 0}`, gone.stdout)

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"pools", "get"}, exitUsage, "expected one pool, got 0 arguments"},
		{[]string{"pools", "list", "extra"}, exitUsage, "unexpected arguments: extra"},
		{[]string{"pools", "set", "p"}, exitUsage, "nothing to set"},
		{[]string{"pools", "set", "p", "--key-ttl", "1h", "--keys-stay"}, exitUsage, "exclude each other"},
		{[]string{"pools", "set", "p", "--lease-ttl", "soon"}, exitUsage, "invalid value"},
		{[]string{"pools", "set", "p", "--lease-ttl", "-1s"}, exitFailed, "invalid_body"},
		{[]string{"pools", "frobnicate"}, exitUsage, `unknown command "frobnicate"`},
	} {
		r := cli(tc.args...)
		require.Equal(t, tc.code, r.code, "%v: %s", tc.args, r.stderr)
		require.Contains(t, r.stderr, tc.want, tc.args)
	}
	require.Equal(t, exitFailed, cli("pools", "get", "p").code, "refused sets changed nothing")
}
