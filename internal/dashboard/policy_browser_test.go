package dashboard_test

import (
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/config"
	"github.com/tokenorchestrator/tokenorchestrator/internal/secrets"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/servertest"
)

// The pool view shows what governs the pool: its policy, or the server's
// settings where it sets nothing; the keys table shows each key's name and
// the last characters of its secret, and "stays" for a key with no end of
// life. Every predicate below is false, never an exception, while what it
// reads is not on the page yet.
func TestDashboardShowsPoolPolicies(t *testing.T) {
	browser := newBrowser(t)
	raw := make([]byte, secrets.KeySize)
	_, err := rand.Read(raw)
	require.NoError(t, err)
	keyring, err := secrets.New(raw)
	require.NoError(t, err)
	r := servertest.Start(t, servertest.Options{Configure: func(cfg *config.Config) { cfg.Secrets = keyring }})

	call := func(method, path, body string) map[string]any {
		t.Helper()
		req, err := http.NewRequest(method, r.URL+path, strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.Less(t, resp.StatusCode, 300, "%s %s: %s", method, path, raw)
		var answer map[string]any
		require.NoError(t, json.Unmarshal(raw, &answer))
		return answer
	}
	imported := call("POST", "/keys", `{"pool": "openai", "keys": [
		{"secret": "sk-live-0123456789abcd", "name": "team-a"},
		{"secret": "sk-live-9876543210wxyz", "name": "team-b"},
		{"labels": {"tier": "spare"}}]}`)
	call("POST", "/keys", `{"pool": "openai", "keys": [{"labels": {"tier": "shared"}, "seats": 3}]}`)
	require.Equal(t, true, imported["policyCreated"])
	call("PUT", "/pools/openai", `{"keyTTL": null, "leaseTTL": "2m", "maxLeaseTTL": "1h", "requireLeaseToken": true, "maxWait": "10s", "seats": 3}`)
	// The key of three seats: two of them held.
	for range 2 {
		call("GET", "/keys?pool=openai&label=tier=shared", "")
	}
	call("POST", "/keys?pool=plain", `{"count": 2}`)
	ids := map[string]string{}
	for _, k := range imported["keys"].([]any) {
		key := k.(map[string]any)
		name, _ := key["name"].(string)
		ids[name] = key["keyId"].(string)
	}

	b := browser.open(t, r.URL+"/#pool=openai")
	b.waitFor("the page is live", `document.getElementById('live')?.dataset.state === 'live'`)
	policy := func(field, want string) string {
		return `document.querySelector('#policy [data-policy="` + field + `"]')?.textContent === '` + want + `'`
	}
	b.waitFor("the pool's policy is shown", policy("keyTTL", "keys stay")+` && `+policy("leaseTTL", "2 min")+` && `+
		policy("maxLeaseTTL", "1 h")+` && `+policy("requireLeaseToken", "required")+` && `+policy("maxWait", "10 s")+` && `+
		policy("seats", "3 leases at once"))
	b.waitFor("every field is the pool's own", `document.querySelectorAll('#policy dd.inherited').length === 0
		&& document.getElementById('policy-note')?.textContent.startsWith('The pool’s policy')`)
	b.waitFor("the pool's card sums its policy up",
		`document.querySelector('#pools li[data-pool="openai"] .pool-policy')?.textContent === 'keys stay · token required · 3 seats per key'`)
	// Four keys, one of three seats: six seats, two held; the card shows seats.
	card := func(stat, want string) string {
		return `document.querySelector('#pools li[data-pool="openai"] .stat-` + stat + ` dd')?.textContent === '` + want + `'`
	}
	b.waitFor("the pool's card counts seats", card("total", "4")+` && `+card("seats", "6")+` && `+card("free", "4")+` && `+card("blocked", "2")+`
		&& !document.querySelector('#pools li[data-pool="openai"] .stat-seats').hidden
		&& document.querySelector('#pools li[data-pool="plain"] .stat-seats')?.hidden === true`)

	row := func(id, cell, want string) string {
		return `document.querySelector('#keys-body tr[data-key-id="` + id + `"] .c-` + cell + `')?.textContent === '` + want + `'`
	}
	b.waitFor("names, secret hints and keys that stay", row(ids["team-a"], "name", "team-a")+` && `+row(ids["team-a"], "hint", "…abcd")+` && `+
		row(ids["team-a"], "expires", "stays")+` && `+row(ids["team-b"], "name", "team-b")+` && `+row(ids["team-b"], "hint", "…wxyz")+` && `+
		row(ids[""], "name", "—")+` && `+row(ids[""], "hint", "—")+` && `+row(ids[""], "expires", "stays"))
	b.waitFor("a key of several seats shows how many are held",
		`[...document.querySelectorAll('#keys-body tr .c-state')].some((c) => c.textContent === 'free · 2/3 seats held')`)
	b.requireAccessible()
	b.screenshot("policy.png", 1280, true)
	b.screenshot("policy-narrow.png", 390, true)
	b.do(chromedp.EmulateViewport(1280, 900))

	// A pool without a policy: the server's settings, and keys whose life
	// counts down.
	b.do(chromedp.Click(chromedp.CSS(`#pools li[data-pool="plain"] button.pool-head`)))
	b.waitFor("the server's settings are shown", `document.getElementById('pool-name')?.textContent === 'plain' && `+
		policy("keyTTL", "5 min")+` && `+policy("leaseTTL", "1 min")+` && `+policy("maxLeaseTTL", "no limit")+` && `+
		policy("requireLeaseToken", "not required")+` && `+policy("maxWait", "1 min")+`
		&& document.querySelectorAll('#policy dd.inherited').length === 6
		&& document.getElementById('policy-note')?.textContent === 'No policy: the server’s settings apply.'`)
	b.waitFor("the card says so", `document.querySelector('#pools li[data-pool="plain"] .pool-policy')?.textContent === 'server settings'`)
	b.waitFor("the keys' lives count down", `document.querySelectorAll('#keys-body tr').length === 2
		&& [...document.querySelectorAll('#keys-body tr')].every((tr) => /^\d+ min \d\d s$/.test(tr.querySelector('.c-expires')?.textContent ?? '')
			&& tr.querySelector('.c-name')?.textContent === '—' && tr.querySelector('.c-hint')?.textContent === '—')`)

	// A pool that has neither keys nor a policy.
	b.do(chromedp.SetValue(chromedp.CSS("#pool-input"), "nothing"),
		chromedp.Click(chromedp.CSS("#pool-form button[type=submit]")))
	b.waitFor("nothing governs it yet", `document.getElementById('pool-name')?.textContent === 'nothing'
		&& document.getElementById('policy-note')?.textContent === 'No keys and no policy yet: the server’s settings will apply.'
		&& [...document.querySelectorAll('#policy dd')].every((dd) => dd.textContent === '—')`)
	b.requireNoProblems()
}
