package api_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

// Secrets imported into a pool without a policy are never deleted because
// nobody kept them alive: the import gives the pool a policy whose keys
// stay, and keys the pool already had stay too. Keys of a pool without a
// policy still expire after KEY_TTL.
func TestImportedSecretsStay(t *testing.T) {
	t.Parallel()
	srv := newServer(t, testdb.New(t), options{keyTTL: 2 * time.Second, sweep: 20 * time.Millisecond, secrets: testKeyring(t)})

	earlier := do(t, "POST", srv.url+"/keys?pool=openai", "")
	require.Equal(t, http.StatusCreated, earlier.status, earlier.raw)
	require.NotNil(t, earlier.body["expiresAt"], "before the import the pool has the server's key life")
	other := do(t, "POST", srv.url+"/keys?pool=scratch", "")
	require.Equal(t, http.StatusCreated, other.status, other.raw)

	imported := do(t, "POST", srv.url+"/keys", `{"pool": "openai", "keys": [{"secret": "sk-live-0123456789abcd", "name": "team-a"}, {"secret": "sk-live-9876543210wxyz"}]}`)
	require.Equal(t, http.StatusCreated, imported.status, imported.raw)
	require.Equal(t, true, imported.body["policyCreated"], imported.raw)
	keys := imported.body["keys"].([]any)
	require.Len(t, keys, 2)
	for _, k := range keys {
		require.Nil(t, k.(map[string]any)["expiresAt"], "an imported key has no end of life")
	}
	require.Equal(t, "abcd", keys[0].(map[string]any)["secretHint"])
	require.Equal(t, "team-a", keys[0].(map[string]any)["name"])
	require.Equal(t, "wxyz", keys[1].(map[string]any)["secretHint"])
	require.NotContains(t, imported.raw, "sk-live", "the answer holds hints only")

	pool := do(t, "GET", srv.url+"/pools/openai", "")
	require.Equal(t, http.StatusOK, pool.status, pool.raw)
	require.Equal(t, map[string]any{"keyTTL": nil}, pool.body["policy"])
	require.Nil(t, pool.body["effective"].(map[string]any)["keyTTL"])

	time.Sleep(2500 * time.Millisecond)
	for _, k := range append(keys, earlier.body) {
		id := k.(map[string]any)["keyId"].(string)
		got := do(t, "GET", srv.url+"/keys/"+id, "")
		require.Equal(t, http.StatusOK, got.status, "key %s of the pool stays: %s", id, got.raw)
		require.Nil(t, got.body["expiresAt"])
	}
	requireProblem(t, do(t, "GET", srv.url+"/keys/"+other.str("keyId"), ""), http.StatusNotFound, "key_not_found")

	// A keep-alive keeps a key that stays as it is.
	kept := do(t, "PUT", srv.url+"/keys/"+earlier.str("keyId")+"/keepalive", "")
	require.Equal(t, http.StatusOK, kept.status, kept.raw)
	require.Nil(t, kept.body["expiresAt"])
	require.NotNil(t, kept.body["lastKeepAliveAt"])
}

// An import may give the pool a key life instead; a pool that has a policy
// keeps it.
func TestImportWithAKeyLife(t *testing.T) {
	t.Parallel()
	srv := newServer(t, testdb.New(t), options{secrets: testKeyring(t)})
	imported := do(t, "POST", srv.url+"/keys", `{"pool": "p", "keyTTL": "24h", "keys": [{"secret": "sk-one-0123456789"}]}`)
	require.Equal(t, http.StatusCreated, imported.status, imported.raw)
	require.Equal(t, true, imported.body["policyCreated"])
	expires := parseTime(t, imported.body["keys"].([]any)[0].(map[string]any)["expiresAt"])
	require.WithinDuration(t, time.Now().Add(24*time.Hour), expires, time.Minute)

	again := do(t, "POST", srv.url+"/keys", `{"pool": "p", "keys": [{"secret": "sk-two-0123456789"}]}`)
	require.Equal(t, http.StatusCreated, again.status, again.raw)
	require.Equal(t, false, again.body["policyCreated"], "the pool has a policy already")
	expires = parseTime(t, again.body["keys"].([]any)[0].(map[string]any)["expiresAt"])
	require.WithinDuration(t, time.Now().Add(24*time.Hour), expires, time.Minute, "the pool's key life applies")

	requireProblem(t, do(t, "POST", srv.url+"/keys", `{"pool": "p", "count": 1, "keyTTL": "1h"}`), http.StatusBadRequest, "invalid_body")
	requireProblem(t, do(t, "POST", srv.url+"/keys", `{"pool": "q", "keyTTL": "soon", "keys": [{"secret": "x-0123456789ab"}]}`), http.StatusBadRequest, "invalid_body")
}

// A pool's policy governs its leases: their length and longest length, the
// lease token required for releases and keep-alives, and the longest wait.
func TestPoolPolicyGovernsLeases(t *testing.T) {
	t.Parallel()
	srv := newServer(t, testdb.New(t), options{})
	created := do(t, "POST", srv.url+"/keys?pool=strict", `{"count": 2}`)
	require.Equal(t, http.StatusCreated, created.status, created.raw)

	put := do(t, "PUT", srv.url+"/pools/strict", `{"leaseTTL": "10s", "maxLeaseTTL": "11s", "requireLeaseToken": true, "maxWait": "100ms"}`)
	require.Equal(t, http.StatusOK, put.status, put.raw)
	require.Equal(t, map[string]any{"leaseTTL": "10s", "maxLeaseTTL": "11s", "requireLeaseToken": true, "maxWait": "100ms"}, put.body["policy"])
	effective := put.body["effective"].(map[string]any)
	require.Equal(t, "1h0m0s", effective["keyTTL"], "unset: the server's KEY_TTL")
	require.Equal(t, "10s", effective["leaseTTL"])
	require.EqualValues(t, 2, put.body["keys"])

	claimed := do(t, "GET", srv.url+"/keys?pool=strict", "")
	require.Equal(t, http.StatusOK, claimed.status, claimed.raw)
	id, token := claimed.str("keyId"), claimed.str("leaseToken")
	start := parseTime(t, claimed.body["blockedAt"])
	require.WithinDuration(t, start.Add(10*time.Second), parseTime(t, claimed.body["leaseExpiresAt"]), 5*time.Millisecond)

	requireProblem(t, do(t, "PUT", srv.url+"/keys/"+id, ""), http.StatusPreconditionRequired, "lease_token_required")
	requireProblem(t, do(t, "PUT", srv.url+"/keys/"+id+"/keepalive", ""), http.StatusPreconditionRequired, "lease_token_required")
	require.Equal(t, true, do(t, "GET", srv.url+"/keys/"+id, "").body["isBlocked"], "a release without the token changed nothing")

	// Keep-alives extend by leaseTTL, but never past maxLeaseTTL from the claim.
	time.Sleep(1500 * time.Millisecond)
	kept := do(t, "PUT", srv.url+"/keys/"+id+"/keepalive?lease="+token, "")
	require.Equal(t, http.StatusOK, kept.status, kept.raw)
	require.WithinDuration(t, start.Add(11*time.Second), parseTime(t, kept.body["leaseExpiresAt"]), 5*time.Millisecond)

	// The other key is held too; a wait of 30 s is cut to the pool's 100 ms.
	other := do(t, "GET", srv.url+"/keys?pool=strict", "")
	require.Equal(t, http.StatusOK, other.status, other.raw)
	began := time.Now()
	requireProblem(t, do(t, "GET", srv.url+"/keys?pool=strict&wait=30s", ""), http.StatusNotFound, "no_free_key")
	require.Less(t, time.Since(began), 10*time.Second, "the wait is bounded by the pool's maxWait")

	released := do(t, "PUT", srv.url+"/keys/"+id+"?lease="+token, "")
	require.Equal(t, http.StatusOK, released.status, released.raw)
	require.Equal(t, false, released.body["isBlocked"])

	// Bad policies change nothing.
	for _, body := range []string{`{"leaseTTL": "soon"}`, `{"leaseTTL": "2s", "maxLeaseTTL": "1s"}`, `{"maxWait": "2m"}`,
		`{"keyTTL": 5}`, `{"seats": 0}`, `{"seats": 1001}`, `{"seats": "2"}`, `{"leaseTTL": "-1s"}`} {
		requireProblem(t, do(t, "PUT", srv.url+"/pools/strict", body), http.StatusBadRequest, "invalid_body")
	}
	require.Equal(t, put.body["policy"], do(t, "GET", srv.url+"/pools/strict", "").body["policy"])
}

// A change of a pool's key life applies to its keys at once; leases keep
// their deadlines.
func TestPolicyChangeRebasesKeyLives(t *testing.T) {
	t.Parallel()
	// Keys live 2 s: long enough that none ends before the change on a
	// busy machine (a key whose life ended before it stays gone).
	srv := newServer(t, testdb.New(t), options{keyTTL: 2 * time.Second, sweep: 20 * time.Millisecond})
	created := do(t, "POST", srv.url+"/keys?pool=p", `{"count": 3}`)
	require.Equal(t, http.StatusCreated, created.status, created.raw)
	held := do(t, "GET", srv.url+"/keys?pool=p", "")
	require.Equal(t, http.StatusOK, held.status, held.raw)

	stay := do(t, "PUT", srv.url+"/pools/p", `{"keyTTL": null}`)
	require.Equal(t, http.StatusOK, stay.status, stay.raw)
	require.EqualValues(t, 3, stay.body["keysRebased"])
	time.Sleep(2500 * time.Millisecond)
	got := do(t, "GET", srv.url+"/keys/"+held.str("keyId"), "")
	require.Equal(t, http.StatusOK, got.status, got.raw)
	require.Nil(t, got.body["expiresAt"])
	require.Equal(t, held.body["leaseExpiresAt"], got.body["leaseExpiresAt"], "the lease keeps its deadline")

	// Unchanged key life: nothing to rebase.
	same := do(t, "PUT", srv.url+"/pools/p", `{"keyTTL": null, "leaseTTL": "1m"}`)
	require.EqualValues(t, 0, same.body["keysRebased"])

	hour := do(t, "PUT", srv.url+"/pools/p", `{"keyTTL": "1h"}`)
	require.EqualValues(t, 3, hour.body["keysRebased"])
	got = do(t, "GET", srv.url+"/keys/"+held.str("keyId"), "")
	require.WithinDuration(t, time.Now().Add(time.Hour), parseTime(t, got.body["expiresAt"]), time.Minute)

	// The pool is deleted only with its keys.
	deleted := do(t, "DELETE", srv.url+"/pools/p", "")
	requireProblem(t, deleted, http.StatusConflict, "pool_not_empty")
	gone := do(t, "DELETE", srv.url+"/pools/p?deleteKeys=true", "")
	require.Equal(t, http.StatusOK, gone.status, gone.raw)
	require.EqualValues(t, 3, gone.body["deletedKeys"])
	requireProblem(t, do(t, "GET", srv.url+"/pools/p", ""), http.StatusNotFound, "unknown_pool")
	requireProblem(t, do(t, "DELETE", srv.url+"/pools/p", ""), http.StatusNotFound, "unknown_pool")
	requireProblem(t, do(t, "GET", srv.url+"/keys/"+held.str("keyId"), ""), http.StatusNotFound, "key_not_found")

	list := do(t, "GET", srv.url+"/pools", "")
	require.Equal(t, http.StatusOK, list.status, list.raw)
	require.Empty(t, list.body["pools"])
}

// Keys can be named, found and deleted by name; an import names the key
// that repeats a secret or a name, and can skip the keys the pool has.
func TestKeysByNameAndImportDuplicates(t *testing.T) {
	t.Parallel()
	srv := newServer(t, testdb.New(t), options{secrets: testKeyring(t)})
	first := do(t, "POST", srv.url+"/keys", `{"pool": "ai", "keys": [{"secret": "sk-aaaa-111111111", "name": "alpha"}, {"secret": "sk-bbbb-222222222", "name": "beta"}]}`)
	require.Equal(t, http.StatusCreated, first.status, first.raw)

	dupInBatch := do(t, "POST", srv.url+"/keys", `{"pool": "ai", "keys": [{"secret": "sk-cccc-333333333"}, {"secret": "sk-cccc-333333333"}]}`)
	requireProblem(t, dupInBatch, http.StatusConflict, "duplicate_secret")
	require.Contains(t, dupInBatch.str("detail"), "keys[1]")
	require.Contains(t, dupInBatch.str("detail"), "keys[0]")
	dupName := do(t, "POST", srv.url+"/keys", `{"pool": "ai", "keys": [{"secret": "sk-dddd-444444444"}, {"secret": "sk-eeee-555555555", "name": "alpha"}]}`)
	requireProblem(t, dupName, http.StatusConflict, "duplicate_name")
	require.Contains(t, dupName.str("detail"), "keys[1]")
	dupSecret := do(t, "POST", srv.url+"/keys", `{"pool": "ai", "keys": [{"secret": "sk-ffff-666666666"}, {"secret": "sk-bbbb-222222222"}]}`)
	requireProblem(t, dupSecret, http.StatusConflict, "duplicate_secret")
	require.Contains(t, dupSecret.str("detail"), "keys[1]")
	requireProblem(t, do(t, "POST", srv.url+"/keys", `{"pool": "ai", "keys": [{"name": "no spaces"}]}`), http.StatusBadRequest, "invalid_body")

	skipped := do(t, "POST", srv.url+"/keys", `{"pool": "ai", "skipExisting": true, "keys": [{"secret": "sk-aaaa-111111111"}, {"secret": "sk-gggg-777777777", "name": "gamma"}, {"secret": "sk-hhhh-888888888", "name": "beta"}]}`)
	require.Equal(t, http.StatusCreated, skipped.status, skipped.raw)
	require.Len(t, skipped.body["keys"], 1)
	require.Equal(t, []any{map[string]any{"index": 0.0, "reason": "secret"}, map[string]any{"index": 2.0, "reason": "name"}}, skipped.body["skipped"])

	byName := do(t, "GET", srv.url+"/pools/ai/keys/gamma", "")
	require.Equal(t, http.StatusOK, byName.status, byName.raw)
	require.Equal(t, "7777", byName.str("secretHint"))
	require.Nil(t, byName.body["secret"])
	requireProblem(t, do(t, "GET", srv.url+"/pools/other/keys/gamma", ""), http.StatusNotFound, "key_not_found")

	// The holder reads the secret by name with its token, as by id. The
	// pool has three keys; claiming without releasing reaches gamma.
	var claimed reply
	for range 3 {
		claimed = do(t, "GET", srv.url+"/keys?pool=ai", "")
		require.Equal(t, http.StatusOK, claimed.status, claimed.raw)
		if claimed.str("name") == "gamma" {
			break
		}
	}
	require.Equal(t, "gamma", claimed.str("name"))
	withSecret := do(t, "GET", srv.url+"/pools/ai/keys/gamma?lease="+claimed.str("leaseToken"), "")
	require.Equal(t, "sk-gggg-777777777", withSecret.str("secret"))
	requireProblem(t, do(t, "GET", srv.url+"/pools/ai/keys/gamma?lease=999999", ""), http.StatusConflict, "lease_mismatch")

	deleted := do(t, "DELETE", srv.url+"/pools/ai/keys/gamma", "")
	require.Equal(t, http.StatusOK, deleted.status, deleted.raw)
	require.Equal(t, byName.str("keyId"), deleted.str("keyId"))
	requireProblem(t, do(t, "GET", srv.url+"/pools/ai/keys/gamma", ""), http.StatusNotFound, "key_not_found")

	page := do(t, "GET", srv.url+"/pools/ai/keys", "")
	names := []string{}
	for _, k := range page.body["keys"].([]any) {
		km := k.(map[string]any)
		names = append(names, fmt.Sprint(km["name"]))
		require.Len(t, km["secretHint"], 4)
	}
	require.ElementsMatch(t, []string{"alpha", "beta"}, names)
	require.NotContains(t, page.raw, "sk-")
}

// A cooldown sent with the token of the key's most recent lease after that
// lease ended still applies while the key is free; once another lease
// holds the key, it is a 409 and changes nothing.
func TestCooldownAfterTheLeaseEnded(t *testing.T) {
	t.Parallel()
	srv := newServer(t, testdb.New(t), options{leaseTTL: 200 * time.Millisecond, sweep: 20 * time.Millisecond})
	require.Equal(t, http.StatusCreated, do(t, "POST", srv.url+"/keys?pool=rl", "").status)
	claimed := do(t, "GET", srv.url+"/keys?pool=rl", "")
	require.Equal(t, http.StatusOK, claimed.status, claimed.raw)
	id, token := claimed.str("keyId"), claimed.str("leaseToken")
	require.Eventually(t, func() bool {
		return do(t, "GET", srv.url+"/keys/"+id, "").body["isBlocked"] == false
	}, 5*time.Second, 20*time.Millisecond, "the lease runs out")

	cooled := do(t, "PUT", srv.url+"/keys/"+id+"?lease="+token+"&cooldown=30s", "")
	require.Equal(t, http.StatusOK, cooled.status, cooled.raw)
	require.WithinDuration(t, time.Now().Add(30*time.Second), parseTime(t, cooled.body["coolingUntil"]), 5*time.Second)
	requireProblem(t, do(t, "GET", srv.url+"/keys?pool=rl", ""), http.StatusNotFound, "no_free_key")

	// A token that is not the key's most recent lease is refused.
	requireProblem(t, do(t, "PUT", srv.url+"/keys/"+id+"?lease=999999&cooldown=30s", ""), http.StatusConflict, "lease_mismatch")

	// The cooldown is in the history, as a report shows it.
	report := do(t, "GET", srv.url+"/reports/key-cooldowns?pool=rl", "")
	require.Equal(t, http.StatusOK, report.status, report.raw)
	require.Contains(t, report.raw, id)

	// Once another lease holds the key, a late cooldown changes nothing.
	// (The pool's leases last an hour, so that none runs out meanwhile.)
	require.Equal(t, http.StatusOK, do(t, "PUT", srv.url+"/pools/rl2", `{"leaseTTL": "1h"}`).status)
	second := do(t, "POST", srv.url+"/keys?pool=rl2", "")
	first := do(t, "GET", srv.url+"/keys?pool=rl2", "")
	require.Equal(t, http.StatusOK, first.status, first.raw)
	require.Equal(t, http.StatusOK, do(t, "PUT", srv.url+"/keys/"+second.str("keyId")+"?lease="+first.str("leaseToken"), "").status)
	now := do(t, "GET", srv.url+"/keys?pool=rl2", "")
	require.Equal(t, http.StatusOK, now.status, now.raw)
	requireProblem(t, do(t, "PUT", srv.url+"/keys/"+second.str("keyId")+"?lease="+first.str("leaseToken")+"&cooldown=30s", ""), http.StatusConflict, "lease_mismatch")
	after := do(t, "GET", srv.url+"/keys/"+second.str("keyId"), "")
	require.Equal(t, true, after.body["isBlocked"])
	require.Nil(t, after.body["coolingUntil"])
	require.False(t, strings.Contains(after.raw, `"coolingUntil":"`))
}

// A key whose life has ended is gone even before the background job
// removes it: importing its secret or name again creates a new key.
func TestImportAfterTheKeyExpired(t *testing.T) {
	t.Parallel()
	srv := newServer(t, testdb.New(t), options{secrets: testKeyring(t)})
	first := do(t, "POST", srv.url+"/keys", `{"pool": "short", "keyTTL": "100ms", "keys": [{"secret": "sk-short-0123456789", "name": "only"}]}`)
	require.Equal(t, http.StatusCreated, first.status, first.raw)
	old := first.body["keys"].([]any)[0].(map[string]any)["keyId"].(string)
	time.Sleep(300 * time.Millisecond)
	requireProblem(t, do(t, "GET", srv.url+"/keys/"+old, ""), http.StatusNotFound, "key_not_found")
	// New keys live an hour; the ended one stays ended.
	require.Equal(t, http.StatusOK, do(t, "PUT", srv.url+"/pools/short", `{"keyTTL": "1h"}`).status)
	requireProblem(t, do(t, "GET", srv.url+"/keys/"+old, ""), http.StatusNotFound, "key_not_found")

	again := do(t, "POST", srv.url+"/keys", `{"pool": "short", "keys": [{"secret": "sk-short-0123456789", "name": "only"}]}`)
	require.Equal(t, http.StatusCreated, again.status, again.raw)
	require.Empty(t, again.body["skipped"])
	renewed := again.body["keys"].([]any)[0].(map[string]any)
	require.NotEqual(t, old, renewed["keyId"])
	require.Equal(t, renewed["keyId"], do(t, "GET", srv.url+"/pools/short/keys/only", "").str("keyId"))
}
