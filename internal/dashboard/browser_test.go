package dashboard_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/servertest"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }

// The dashboard in a real browser, on a real replica and database: an
// operator creates keys, gets one, sees it held, keeps it alive,
// releases it and deletes another, and the counts, the table and the
// charts follow each step; an error of the API is shown. Then a pool with
// an hour of made-up history is shown wide and narrow for the screenshots.
func TestDashboardInABrowser(t *testing.T) {
	browser := newBrowser(t)

	t.Run("click-through", func(t *testing.T) {
		r := servertest.Start(t, servertest.Options{})
		b := browser.open(t, r.URL+"/")
		b.waitFor("the page is live", `document.getElementById('live').dataset.state === 'live'`)
		b.waitFor("the default pool is shown", `document.getElementById('pool-name').textContent === 'default'`)

		// Switch to a pool of our own, which is empty.
		b.do(chromedp.SetValue(chromedp.CSS("#pool-input"), "e2e"),
			chromedp.Click(chromedp.CSS("#pool-form button[type=submit]")))
		b.waitFor("pool e2e is shown", `document.getElementById('pool-name').textContent === 'e2e'
			&& location.hash === '#pool=e2e'`)
		b.requireCounts("e2e", 0, 0, 0)
		b.waitFor("the empty table says so", `!document.getElementById('keys-empty').hidden`)

		// An error of the API is shown with its title, detail and code.
		b.do(chromedp.Click(chromedp.CSS("#get-key")))
		b.waitFor("the problem is shown", `!document.getElementById('problem').hidden`)
		b.waitText("#problem-title", "Getting a key failed: Unknown pool")
		b.waitText("#problem-detail", `pool "e2e" has no keys and no policy: check its name. A claim on such a pool never waits.`)
		b.waitText("#problem-code", "404 unknown_pool")

		// Create five keys.
		b.do(chromedp.SetValue(chromedp.CSS("#create-count"), "5"),
			chromedp.Click(chromedp.CSS("#create-form button[type=submit]")))
		b.waitFor("the keys are listed", `document.querySelectorAll('#keys-body tr').length === 5`)
		b.requireCounts("e2e", 5, 5, 0)
		b.waitText("#action-status", "Created 5 keys in e2e.")
		b.waitFor("the problem is gone after a success", `document.getElementById('problem').hidden`)
		b.waitText(`#pools li[data-pool="*all"] [data-stat="total"]`, "5")

		// Get a key: its lease token is shown, and it is held.
		b.do(chromedp.Click(chromedp.CSS("#get-key")))
		b.waitFor("the lease is shown", `!document.getElementById('lease').hidden`)
		id := b.waitMatch("#lease-key", `^[0-9a-f-]{36}$`)
		token := b.waitMatch("#lease-token", `^[0-9]+$`)
		b.requireCounts("e2e", 5, 4, 1)
		row := `#keys-body tr[data-key-id="` + id + `"]`
		b.waitFor("the key's row shows it held", `document.querySelector('`+row+`')?.dataset.state === 'blocked'`)
		b.waitText(row+" .c-state", "blocked · yours")
		b.waitText(row+" .c-token", token)
		b.waitMatch(row+" .c-lease", `^(\d+ s|1 min 00 s)$`) // the lease counts down
		b.waitMatch(row+" .c-expires", `^\d+ min \d\d s$`)   // the key's life counts down
		b.waitFor("the chart counts the claim", `document.querySelector('#activity-chart svg')?.dataset.assigned === '1'`)
		b.waitText(`#activity-legend [data-total="assigned"]`, "1")
		b.waitFor("the durations count the lease as held", `document.querySelector('#durations-chart svg')?.dataset.held === '1'`)
		server := getKey(t, r.URL, id)
		require.Equal(t, true, server["isBlocked"], "the server holds the key")
		require.Nil(t, server["lastKeepAliveAt"])

		// Keep it alive, with its lease token.
		b.do(chromedp.Click(chromedp.CSS(row + ` button[data-action="keepalive"]`)))
		b.waitFor("the keep-alive is confirmed", `document.getElementById('action-status').textContent.includes('lease was extended')`)
		require.NotNil(t, getKey(t, r.URL, id)["lastKeepAliveAt"], "the server kept the key alive")
		b.waitFor("no problem is shown after the keep-alive", `document.getElementById('problem').hidden`)

		// Release it.
		b.do(chromedp.Click(chromedp.CSS(row + ` button[data-action="release"]`)))
		b.waitFor("the row shows the key free", `document.querySelector('`+row+`')?.dataset.state === 'free'`)
		b.requireCounts("e2e", 5, 5, 0)
		b.waitText(row+" .c-state", "free")
		b.waitText(row+" .c-token", "—")
		b.waitFor("the lease panel is gone", `document.getElementById('lease').hidden`)
		b.waitFor("the chart counts the release", `document.querySelector('#activity-chart svg')?.dataset.released === '1'`)
		b.waitText(`#activity-legend [data-total="released"]`, "1")
		b.waitFor("the durations count the ended lease", `document.querySelector('#durations-chart svg')?.dataset.ended === '1'
			&& document.querySelector('#durations-chart svg')?.dataset.held === '0'`)
		require.Equal(t, false, getKey(t, r.URL, id)["isBlocked"])

		// Delete another key; deleting asks for a confirmation first.
		other := b.waitValue("another key is listed",
			`[...document.querySelectorAll('#keys-body tr')].find(tr => tr.dataset.keyId !== '`+id+`')?.dataset.keyId`,
			regexp.MustCompile(`^[0-9a-f-]{36}$`).MatchString)
		deleteButton := `#keys-body tr[data-key-id="` + other + `"] button[data-action="delete"]`
		b.do(chromedp.Click(chromedp.CSS(deleteButton)))
		b.waitText(deleteButton, "Confirm delete")
		require.Equal(t, "5", b.eval(`String(document.querySelectorAll('#keys-body tr').length)`), "nothing is deleted yet")
		b.do(chromedp.Click(chromedp.CSS(deleteButton)))
		b.waitFor("the deleted key is gone", `document.querySelectorAll('#keys-body tr').length === 4
			&& !document.querySelector('#keys-body tr[data-key-id="`+other+`"]')`)
		b.requireCounts("e2e", 4, 4, 0)
		resp, err := http.Get(r.URL + "/keys/" + other)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusNotFound, resp.StatusCode, "the server deleted the key")

		b.requireAccessible()
		b.screenshot("click-through.png", 1280, true)
		b.screenshot("click-through-narrow.png", 390, true)
		b.requireNoProblems()
	})

	t.Run("busy-pool", func(t *testing.T) {
		dbURL := testdb.New(t)
		r := servertest.Start(t, servertest.Options{DatabaseURL: dbURL})
		soon := servertest.Start(t, servertest.Options{DatabaseURL: dbURL, KeyTTL: 50 * time.Second})
		seedBusyHour(t, dbURL, "payments", 9)
		seedBusyHour(t, dbURL, "search", 3)
		create(t, r.URL, "payments", 44)
		create(t, soon.URL, "payments", 4)
		create(t, r.URL, "search", 12)
		create(t, r.URL, "batch-jobs", 6)
		for range 15 {
			claim(t, r.URL, "payments")
		}
		for range 3 {
			claim(t, r.URL, "search")
		}

		b := browser.open(t, r.URL+"/#pool=payments")
		b.waitFor("the page is live", `document.getElementById('live').dataset.state === 'live'`)
		b.do(chromedp.Click(chromedp.CSS("#get-key")))
		b.waitFor("the lease is shown", `!document.getElementById('lease').hidden`)
		b.requireCounts("payments", 48, 32, 16)
		b.waitText(`#pools li[data-pool="payments"] [data-stat="expiring"]`, "4") // keys expire soon
		b.waitFor("the hour's activity is drawn", `Number(document.querySelector('#activity-chart svg')?.dataset.assigned) > 300`)
		b.waitFor("the durations are drawn", `Number(document.querySelector('#durations-chart svg')?.dataset.ended) > 300`)
		b.waitFor("a page of keys is listed", `document.querySelectorAll('#keys-body tr').length === 20`)
		b.requireAccessible()
		b.screenshot("dashboard.png", 1280, true)
		b.screenshot("dashboard-narrow-full.png", 390, true)
		b.do(chromedp.Evaluate[chromedp.Void]("window.scrollTo(0, 0)"))
		b.screenshot("dashboard-narrow.png", 390, false)

		// Page through the 48 keys, 20 at a time, in id order.
		ids := func() []string {
			var list []string
			require.NoError(t, json.Unmarshal([]byte(b.eval(
				`JSON.stringify([...document.querySelectorAll('#keys-body tr')].map((tr) => tr.dataset.keyId))`)), &list))
			return list
		}
		page1 := ids()
		require.True(t, slices.IsSorted(page1), "keys in id order")
		b.do(chromedp.Click(chromedp.CSS("#page-next")))
		b.waitFor("the second page", `document.getElementById('page-info').textContent === 'Page 2 · 20 keys'`)
		page2 := ids()
		require.True(t, slices.IsSorted(page2))
		require.Less(t, page1[19], page2[0], "the second page starts after the first")
		b.do(chromedp.Click(chromedp.CSS("#page-next")))
		b.waitFor("the last page", `document.getElementById('page-info').textContent === 'Page 3 · 8 keys'
			&& document.getElementById('page-next').disabled`)
		require.Less(t, page2[19], ids()[0])
		b.do(chromedp.Click(chromedp.CSS("#page-prev")))
		b.waitFor("back on the second page", `document.getElementById('page-info').textContent === 'Page 2 · 20 keys'`)
		require.Equal(t, page2, ids())
		b.do(chromedp.Click(chromedp.CSS("#page-first")))
		b.waitFor("back on the first page", `document.getElementById('page-info').textContent === 'Page 1 · 20 keys'
			&& document.getElementById('page-prev').disabled`)
		require.Equal(t, page1, ids())
		b.requireNoProblems()
	})
	t.Run("cooldowns", func(t *testing.T) {
		r := servertest.Start(t, servertest.Options{})
		call := func(method, path string) map[string]any {
			var body io.Reader
			if method == http.MethodPost {
				body = strings.NewReader(`{"count": 2}`)
			}
			req, err := http.NewRequest(method, r.URL+path, body)
			require.NoError(t, err)
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			var answer map[string]any
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&answer))
			require.Less(t, resp.StatusCode, 300, "%s %s: %v", method, path, answer)
			return answer
		}
		call("POST", "/keys?pool=cool")
		held := call("GET", "/keys?pool=cool")
		id := held["keyId"].(string)
		call("PUT", "/keys/"+id+"?cooldown=1h&lease="+held["leaseToken"].(string))

		b := browser.open(t, r.URL+"/#pool=cool")
		b.waitFor("the cooled key leads the cooldowns", `document.querySelectorAll('#cooldowns-body tr').length === 1
			&& document.querySelector('#cooldowns-body code')?.title === '`+id+`'
			&& document.getElementById('cooldowns-empty').hidden`)
		b.waitFor("its row says it cools down", `document.querySelector('#keys-body tr[data-key-id="`+id+`"]')?.dataset.state === 'cooling'`)
		b.waitText("#cooldowns-body td", "1")
		b.requireNoProblems()
	})
}

// browser is one headless Chromium for the whole test; each subtest opens
// its own tab.
type browser struct {
	ctx context.Context
}

// newBrowser starts Chromium. Without it the test fails, saying how to get
// it, unless BROWSER_TESTS=skip asks to skip it.
func newBrowser(t *testing.T) *browser {
	if os.Getenv("BROWSER_TESTS") == "skip" {
		t.Skip("BROWSER_TESTS=skip: the dashboard is not tested in a browser")
	}
	path := os.Getenv("CHROMIUM")
	if path == "" {
		for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
			if found, err := exec.LookPath(name); err == nil {
				path = found
				break
			}
		}
	}
	if path == "" {
		t.Fatal("the dashboard's browser test needs Chromium: install it (apt-get install chromium; " +
			"make test does so where it can), set CHROMIUM to its path, or set BROWSER_TESTS=skip to skip this test")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
		// Nothing but the page under test: no updates, no sync, no QUIC
		// probes to the outside.
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("lang", "en-GB"),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// Start the browser now, so that its start-up is not counted against
	// the first step.
	require.NoError(t, chromedp.Do(ctx), "start Chromium at %s", path)
	return &browser{ctx: ctx}
}

// tab is one page of the browser, driven by one test.
type tab struct {
	t    *testing.T
	ctx  context.Context
	base string

	mu       sync.Mutex
	problems []string
}

// open opens the URL in a new tab that records what goes wrong in the page:
// script errors, refusals by the Content-Security-Policy, and requests to
// anywhere but the server under test.
func (b *browser) open(t *testing.T, url string) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx)
	// A bound for the whole subtest, so that a page that never gets where
	// it should fails the test instead of hanging it.
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() {
		cancelTimeout()
		cancel()
	})
	base := url[:strings.Index(url[len("http://"):], "/")+len("http://")]
	tb := &tab{t: t, ctx: ctx, base: base}
	messages := chromedp.Console(ctx)
	requests := chromedp.Events(ctx, network.RequestWillBeSent)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			// Network errors are the API's own error answers, which the
			// page shows; anything else at error level is a fault.
			if (m.Type == chromedp.ConsoleError || m.IsException()) && m.Source != "network" {
				tb.problem(m.String())
			}
		}
	}()
	go func() {
		for ev, err := range requests {
			if err != nil {
				return
			}
			if u := ev.Request.URL; u != base && !strings.HasPrefix(u, base+"/") {
				tb.problem("request to " + u)
			}
		}
	}()
	tb.do(chromedp.Navigate(url))
	return tb
}

func (tb *tab) problem(p string) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	tb.problems = append(tb.problems, p)
}

func (tb *tab) requireNoProblems() {
	tb.t.Helper()
	tb.mu.Lock()
	defer tb.mu.Unlock()
	require.Empty(tb.t, tb.problems, "the page had errors or reached beyond its server")
}

func (tb *tab) do(steps ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	require.NoError(tb.t, chromedp.Do(tb.ctx, steps...))
}

// waitTimeout bounds each wait for the page. The page polls the server
// every 2 s; on a busy machine an answer may take seconds more.
const waitTimeout = 60 * time.Second

// waitEvery is the pause between two looks at the page.
const waitEvery = 25 * time.Millisecond

// waitFor waits until the JavaScript condition holds on the page. What the
// page shows follows the server by polls and answers that may come late, so
// every check of it waits: see waitValue.
func (tb *tab) waitFor(what, condition string) {
	tb.t.Helper()
	tb.waitValue(what, `Boolean(`+condition+`)`, func(v string) bool { return v == "true" })
}

// waitText waits until the element the selector finds has the text want
// (trimmed), and fails with the text it had last.
func (tb *tab) waitText(selector, want string) {
	tb.t.Helper()
	tb.waitValue(fmt.Sprintf("%s reads %q", selector, want), textOf(selector), func(v string) bool { return v == want })
}

// waitMatch waits until the text of the element the selector finds matches
// the pattern, and returns that text.
func (tb *tab) waitMatch(selector, pattern string) string {
	tb.t.Helper()
	re := regexp.MustCompile(pattern)
	return tb.waitValue(fmt.Sprintf("%s matches %s", selector, pattern), textOf(selector), re.MatchString)
}

// waitValue evaluates the JavaScript expression on the page, as a string,
// until ok accepts its value, and returns that value. An expression that
// throws (it reads an element that is not rendered yet, say) counts as not
// yet; after waitTimeout the test fails with the last value and the last
// exception.
func (tb *tab) waitValue(what, expression string, ok func(string) bool) string {
	tb.t.Helper()
	script := `(() => { try { return {value: String(` + expression + `)}; } catch (e) { return {exception: String(e)}; } })()`
	type result struct {
		Value     *string `json:"value"`
		Exception string  `json:"exception"`
	}
	last, lastException := "(none)", ""
	deadline := time.Now().Add(waitTimeout)
	for {
		r, err := chromedp.Run(tb.ctx, chromedp.Evaluate[result](script))
		if err != nil {
			// Not an exception of the expression, which the script catches:
			// a syntax error, or the tab is gone.
			tb.t.Fatalf("waiting until %s: %v (page: %s)", what, err, tb.status())
		}
		if r.Exception != "" {
			lastException = r.Exception
		} else if r.Value != nil {
			if ok(*r.Value) {
				return *r.Value
			}
			last = fmt.Sprintf("%q", *r.Value)
		}
		if time.Now().After(deadline) {
			break
		}
		select {
		case <-tb.ctx.Done():
			tb.t.Fatalf("waiting until %s: %v; last value %s, last exception %q (page: %s)",
				what, tb.ctx.Err(), last, lastException, tb.status())
		case <-time.After(waitEvery):
		}
	}
	tb.t.Fatalf("waiting until %s: not so after %s; last value %s, last exception %q (page: %s)",
		what, waitTimeout, last, lastException, tb.status())
	return ""
}

// status says what the page's status lines say, for a failure's message.
func (tb *tab) status() string {
	s, err := chromedp.Run(tb.ctx, chromedp.Evaluate[string](`[document.getElementById('live')?.textContent,
		document.getElementById('action-status')?.textContent,
		document.getElementById('problem')?.hidden ? '' : document.getElementById('problem')?.textContent].join(' | ')`))
	if err != nil {
		return err.Error()
	}
	return strings.Join(strings.Fields(s), " ")
}

// eval returns the value of a JavaScript expression, as a string.
func (tb *tab) eval(expression string) string {
	tb.t.Helper()
	v, err := chromedp.Run(tb.ctx, chromedp.Evaluate[any](expression))
	require.NoError(tb.t, err, expression)
	return fmt.Sprint(v)
}

// textOf is a JavaScript expression for the trimmed text of the element the
// selector finds, or undefined while there is none.
func textOf(selector string) string {
	raw, err := json.Marshal(selector)
	if err != nil {
		panic(err)
	}
	return `document.querySelector(` + string(raw) + `)?.textContent.trim()`
}

// requireCounts waits until the pool's card shows the counts.
func (tb *tab) requireCounts(pool string, total, free, held int) {
	tb.t.Helper()
	card := `#pools li[data-pool="` + pool + `"]`
	tb.waitFor(fmt.Sprintf("pool %s counts %d keys, %d free, %d held", pool, total, free, held), fmt.Sprintf(
		`(() => { const card = document.querySelector('%s'); if (!card) return false;
			const n = (s) => card.querySelector('[data-stat="' + s + '"]')?.textContent;
			return n('total') === '%d' && n('free') === '%d' && n('blocked') === '%d'; })()`,
		card, total, free, held))
}

// requireAccessible checks what a screen reader needs: every control has a
// name, every input a label, every chart a title.
func (tb *tab) requireAccessible() {
	tb.t.Helper()
	unnamed := tb.eval(`[...document.querySelectorAll('button, input, a, svg[role=img]')].filter((el) => {
		if (el.closest('[hidden]')) return false;
		if (el.tagName === 'INPUT') return el.labels.length === 0;
		if (el.tagName === 'svg') return !el.querySelector('title') || !el.querySelector('title').textContent;
		return !(el.getAttribute('aria-label') || el.textContent.trim());
	}).map((el) => el.outerHTML.slice(0, 80)).join('\n')`)
	require.Empty(tb.t, unnamed, "controls without an accessible name")
}

// screenshot saves the page on a screen as wide as asked, the whole page or
// what a phone-sized screen shows, as a test artefact (kept with go test
// -artifacts), and in SCREENSHOTS_DIR when it is set. It first checks that
// the page fits the width.
func (tb *tab) screenshot(name string, width int64, full bool) {
	tb.t.Helper()
	height := int64(900)
	if width < 600 {
		height = 844
	}
	tb.do(chromedp.EmulateViewport(width, height))
	tb.waitFor("the charts fit the width",
		`Math.abs(document.querySelector('#activity-chart svg')?.getAttribute('width') - document.getElementById('activity-chart').clientWidth) < 1
		|| document.getElementById('activity-chart').clientWidth < 260`)
	tb.waitValue(fmt.Sprintf("the page fits a %d pixel screen", width),
		`document.documentElement.scrollWidth - document.documentElement.clientWidth`, func(v string) bool { return v == "0" })
	capture := chromedp.CaptureScreenshot()
	if full {
		capture = chromedp.FullScreenshot(100)
	}
	png, err := chromedp.Run(tb.ctx, capture)
	require.NoError(tb.t, err)
	dirs := []string{tb.t.ArtifactDir()}
	if dir := os.Getenv("SCREENSHOTS_DIR"); dir != "" {
		dirs = append(dirs, dir)
	}
	for _, dir := range dirs {
		require.NoError(tb.t, os.WriteFile(filepath.Join(dir, name), png, 0o644))
	}
	tb.t.Logf("screenshot %s: %d bytes in %s", name, len(png), strings.Join(dirs, ", "))
}

func getKey(t *testing.T, base, id string) map[string]any {
	t.Helper()
	resp, err := http.Get(base + "/keys/" + id)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var key map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&key))
	return key
}

func create(t *testing.T, base, pool string, n int) {
	t.Helper()
	resp, err := http.Post(base+"/keys?pool="+pool, "application/json", strings.NewReader(fmt.Sprintf(`{"count": %d}`, n)))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusCreated, resp.StatusCode)
}

func claim(t *testing.T, base, pool string) {
	t.Helper()
	resp, err := http.Get(base + "/keys?pool=" + pool)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

// seedBusyHour writes a made-up hour of history for the pool: about perMinute
// leases a minute, in waves, mostly a few seconds to a minute long, a few
// of several minutes; most released by their holder, some ended by the
// background job, and now and then a key that expired. Only history rows:
// the pool's keys are made through the API. The same pool and rate give
// the same history.
func seedBusyHour(t *testing.T, dbURL, pool string, perMinute float64) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	require.NoError(t, err)
	defer conn.Close(ctx)
	rng := rand.New(rand.NewPCG(uint64(len(pool)), uint64(perMinute)))
	now := time.Now().UTC()
	start := now.Add(-time.Hour)
	var events []testdb.Event
	key := 0
	for minute := range 60 {
		wave := 1 + 0.6*math.Sin(float64(minute)/7) + 0.25*math.Sin(float64(minute)/2.3)
		n := int(perMinute*wave) + rng.IntN(3)
		for range n {
			key++
			at := time.Duration(minute)*time.Minute + time.Duration(rng.Int64N(int64(time.Minute)))
			events = append(events, testdb.Event{At: at, Key: key, Event: "assigned", Token: int64(key)})
			held := time.Duration(math.Exp(2.3+0.9*rng.NormFloat64()) * float64(time.Second))
			if rng.Float64() < 0.07 {
				held = time.Duration(120+rng.IntN(300)) * time.Second
			}
			end := "released"
			switch p := rng.Float64(); {
			case p < 0.08:
				end, held = "lease_expired", held+60*time.Second
			case p < 0.1:
				end = "expired"
			}
			if start.Add(at + held).Before(now.Add(-5 * time.Second)) {
				events = append(events, testdb.Event{At: at + held, Key: key, Event: end, Token: int64(key)})
			}
		}
		if rng.Float64() < 0.15 {
			key++
			events = append(events, testdb.Event{At: time.Duration(minute)*time.Minute + 30*time.Second, Key: key, Event: "expired"})
		}
	}
	batch := &pgx.Batch{}
	for _, e := range events {
		var token *int64
		if e.Token != 0 {
			token = &e.Token
		}
		batch.Queue("INSERT INTO key_events (at, key_id, pool, event, lease_token) VALUES ($1, $2, $3, $4, $5)",
			start.Add(e.At), testdb.KeyID(pool, e.Key), pool, e.Event, token)
	}
	// History written by hand, earlier than what the running servers'
	// background jobs may have folded: they fold it all again.
	batch.Queue("SELECT key_event_rollups_reset()")
	require.NoError(t, conn.SendBatch(ctx, batch).Close())
}
