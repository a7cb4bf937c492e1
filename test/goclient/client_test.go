package goclient_test

import (
	"context"
	"encoding/json"
	"go/parser"
	"go/token"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/client"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/servertest"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

func TestCallsForEveryEndpoint(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	c := newClient(t, servertest.Start(t, servertest.Options{}).URL)

	one, err := c.CreateKey(ctx, "calls")
	require.NoError(t, err)
	require.Equal(t, "calls", one.Pool)
	require.False(t, one.IsBlocked)
	require.Empty(t, one.LeaseToken)
	batch, err := c.CreateKeys(ctx, "calls", 2)
	require.NoError(t, err)
	require.Len(t, batch, 2)

	status, err := c.PoolStatus(ctx, "calls")
	require.NoError(t, err)
	require.Equal(t, client.PoolStatus{Pool: "calls", Keys: 3, Free: 3, Available: true}, status)

	held, err := c.ClaimKey(ctx, "calls", 0)
	require.NoError(t, err)
	require.True(t, held.IsBlocked)
	require.NotEmpty(t, held.LeaseToken)
	require.NotNil(t, held.LeaseExpiresAt)

	info, err := c.GetKey(ctx, held.ID)
	require.NoError(t, err)
	require.True(t, info.IsBlocked)
	require.Empty(t, info.LeaseToken, "only the holder sees the token")
	head, err := c.HeadKey(ctx, held.ID)
	require.NoError(t, err)
	require.Equal(t, info, head, "HEAD tells what GET does")

	kept, err := c.KeepAlive(ctx, held.ID, held.LeaseToken)
	require.NoError(t, err)
	require.NotNil(t, kept.LastKeepAliveAt)
	_, err = c.KeepAlive(ctx, held.ID, "999999999")
	require.ErrorIs(t, err, client.ErrLeaseLost)
	var apiErr *client.APIError
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, http.StatusConflict, apiErr.Status)
	require.Equal(t, "lease_mismatch", apiErr.Code)
	_, err = c.ReleaseKey(ctx, held.ID, "999999999")
	require.ErrorIs(t, err, client.ErrLeaseLost)

	released, err := c.ReleaseKey(ctx, held.ID, held.LeaseToken)
	require.NoError(t, err)
	require.False(t, released.IsBlocked)

	deleted, err := c.DeleteKey(ctx, one.ID)
	require.NoError(t, err)
	require.Equal(t, one.ID, deleted.ID)
	for _, call := range []func() error{
		func() error { _, err := c.GetKey(ctx, one.ID); return err },
		func() error { _, err := c.HeadKey(ctx, one.ID); return err },
		func() error { _, err := c.DeleteKey(ctx, one.ID); return err },
		func() error { _, err := c.ReleaseKey(ctx, one.ID, ""); return err },
		func() error { _, err := c.KeepAlive(ctx, one.ID, ""); return err },
		func() error { _, err := c.GetKey(ctx, "not a key/../.."); return err },
	} {
		err := call()
		require.ErrorIs(t, err, client.ErrNotFound)
		require.NotErrorIs(t, err, client.ErrNoKeyAvailable)
	}

	// A pool whose keys are all held has no key available; a pool without
	// keys is unknown, and neither is a key not found.
	_, err = c.CreateKey(ctx, "exhausted")
	require.NoError(t, err)
	_, err = c.ClaimKey(ctx, "exhausted", 0)
	require.NoError(t, err)
	_, err = c.ClaimKey(ctx, "exhausted", 0)
	require.ErrorIs(t, err, client.ErrNoKeyAvailable)
	require.NotErrorIs(t, err, client.ErrNotFound)
	require.NotErrorIs(t, err, client.ErrUnknownPool)
	require.ErrorContains(t, err, "no_free_key")
	_, err = c.ClaimKey(ctx, "exhausted", 50*time.Millisecond)
	require.ErrorIs(t, err, client.ErrNoKeyAvailable)
	for _, wait := range []time.Duration{0, 30 * time.Second} {
		_, err = c.ClaimKey(ctx, "empty", wait)
		require.ErrorIs(t, err, client.ErrUnknownPool)
		require.NotErrorIs(t, err, client.ErrNoKeyAvailable)
		require.NotErrorIs(t, err, client.ErrNotFound)
		require.ErrorContains(t, err, "unknown_pool")
	}

	_, err = c.CreateKeys(ctx, "calls", 0)
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, "invalid_body", apiErr.Code)
	require.NotEmpty(t, apiErr.Detail)

	require.NoError(t, c.Health(ctx))
	require.NoError(t, c.Ready(ctx))
	metrics, err := c.Metrics(ctx)
	require.NoError(t, err)
	require.Contains(t, metrics, `tokenorchestrator_pool_keys{pool="calls",state="free"} 2`)
}

// A key marshals exactly as the server wrote it, so that the command line
// can show what the server said.
func TestKeyJSONIsTheServers(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	url := servertest.Start(t, servertest.Options{}).URL
	c := newClient(t, url)
	_, err := c.CreateKey(ctx, "")
	require.NoError(t, err)
	held, err := c.ClaimKey(ctx, "", 0)
	require.NoError(t, err)
	_, err = c.KeepAlive(ctx, held.ID, held.LeaseToken)
	require.NoError(t, err)

	resp, err := http.Get(url + "/keys/" + held.ID)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	key, err := c.GetKey(ctx, held.ID)
	require.NoError(t, err)
	ours, err := json.Marshal(key)
	require.NoError(t, err)
	require.JSONEq(t, string(raw), string(ours))
}

func TestClaimKeepsTheLeaseAliveUntilReleased(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	// Short enough for a quick test, long enough that a keep-alive delayed
	// by a machine busy with the whole suite still comes in time: the
	// client keeps the lease alive a third of the way through, so it rides
	// out a stall of two thirds of this. With 600 ms, a run of the suite on
	// 2 cores lost the lease when keep-alives came up to 570 ms apart.
	leaseTTL := 2 * time.Second
	c := newClient(t, servertest.Start(t, servertest.Options{LeaseTTL: leaseTTL, SweepInterval: 20 * time.Millisecond}).URL)
	created, err := c.CreateKey(ctx, "alive")
	require.NoError(t, err)

	lease, err := c.Claim(ctx, "alive")
	require.NoError(t, err)
	require.Equal(t, created.ID, lease.ID())
	require.NotEmpty(t, lease.Token())
	firstEnd := lease.ExpiresAt()

	// Wait, by the database's clock, until a lease nobody kept alive would
	// long have been taken back by the background job.
	mustHaveEnded := firstEnd.Add(2 * leaseTTL)
	for {
		info, err := c.GetKey(ctx, lease.ID())
		require.NoError(t, err)
		require.True(t, info.IsBlocked, "the lease ended although it was kept alive")
		if info.LastKeepAliveAt != nil && info.LastKeepAliveAt.After(mustHaveEnded) {
			require.True(t, info.LeaseExpiresAt.After(mustHaveEnded))
			break
		}
		select {
		case <-lease.Lost():
			t.Fatalf("lease lost: %v", lease.Err())
		case <-ctx.Done():
			t.Fatal("the lease was not kept alive")
		case <-time.After(20 * time.Millisecond):
		}
	}
	require.True(t, lease.ExpiresAt().After(firstEnd), "the lease knows its new end")
	// (Not Claim with a short deadline: the waiting request it gives up
	// on could claim the key at the server just after the release below.)
	_, err = c.ClaimKey(ctx, "alive", 0)
	require.ErrorIs(t, err, client.ErrNoKeyAvailable, "the key is still held")

	require.NoError(t, lease.Release(ctx))
	require.NoError(t, lease.Release(ctx), "releasing twice is harmless")
	require.NoError(t, lease.Err())
	select {
	case <-lease.Lost():
		t.Fatal("a released lease is not lost")
	default:
	}
	info, err := c.GetKey(ctx, lease.ID())
	require.NoError(t, err)
	require.False(t, info.IsBlocked)
	again, err := c.ClaimKey(ctx, "alive", 0)
	require.NoError(t, err)
	require.NotEqual(t, lease.Token(), again.LeaseToken)
}

func TestClaimWaitsForAKey(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	c := newClient(t, servertest.Start(t, servertest.Options{}).URL)
	_, err := c.CreateKey(ctx, "wait")
	require.NoError(t, err)
	first, err := c.Claim(ctx, "wait")
	require.NoError(t, err)

	_, err = c.Claim(ctxWithTimeout(t, ctx, 200*time.Millisecond), "wait")
	require.ErrorIs(t, err, client.ErrNoKeyAvailable)
	require.ErrorIs(t, err, context.DeadlineExceeded)

	type result struct {
		lease *client.Lease
		err   error
	}
	got := make(chan result, 1)
	go func() {
		lease, err := c.Claim(ctx, "wait")
		got <- result{lease, err}
	}()
	require.NoError(t, first.Release(ctx))
	second := <-got
	require.NoError(t, second.err)
	require.Equal(t, first.ID(), second.lease.ID())
	require.NotEqual(t, first.Token(), second.lease.Token())
	require.NoError(t, second.lease.Release(ctx))
}

// Claim on a pool that has no keys fails at once with ErrUnknownPool,
// plain or labelled, however long ctx would let it wait: a misspelt pool
// never gets a key by waiting.
func TestClaimNeverWaitsOnAnUnknownPool(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	proxy := newRecordingProxy(t, servertest.Start(t, servertest.Options{}).URL)
	c := newClient(t, proxy.URL)
	for _, opts := range [][]client.ClaimOption{nil, {client.WithLabels("tier=paid")}} {
		start := time.Now()
		_, err := c.Claim(ctxWithTimeout(t, ctx, time.Minute), "nowhere", opts...)
		require.ErrorIs(t, err, client.ErrUnknownPool)
		require.NotErrorIs(t, err, client.ErrNoKeyAvailable)
		require.NotErrorIs(t, err, context.DeadlineExceeded)
		require.Less(t, time.Since(start), 10*time.Second, "answered at once")
	}
	requests, statuses := proxy.recorded()
	require.Len(t, requests, 2, "one request per Claim: no retry")
	require.Equal(t, []int{http.StatusNotFound, http.StatusNotFound}, statuses)
}

func TestLeaseIsLostWhenTheKeyIsDeleted(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	// Leases and database timeouts in these tests are short, but long enough
	// for a new database connection on a machine busy with other tests.
	_, c, lease := claimOneKey(t, ctx, servertest.Options{LeaseTTL: time.Second})

	_, err := c.DeleteKey(ctx, lease.ID())
	require.NoError(t, err)
	waitForLoss(t, ctx, lease)
	require.ErrorIs(t, lease.Err(), client.ErrNotFound)
	require.ErrorIs(t, lease.Release(ctx), client.ErrNotFound)
}

// A holder whose lease was taken over learns it at its next keep-alive, and
// can neither extend nor release the next holder's lease.
func TestLeaseIsLostWhenAnotherHolderHasTheKey(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	// No background job: the next holder's lease, which nobody keeps alive,
	// must stay put while the test looks at it.
	_, c, lease := claimOneKey(t, ctx, servertest.Options{LeaseTTL: time.Second, SweepInterval: time.Hour})

	// An operator frees the key without a token; someone else takes it.
	_, err := c.ReleaseKey(ctx, lease.ID(), "")
	require.NoError(t, err)
	next, err := c.ClaimKey(ctx, "", 0)
	require.NoError(t, err)
	require.Equal(t, lease.ID(), next.ID)

	waitForLoss(t, ctx, lease)
	require.ErrorIs(t, lease.Err(), client.ErrLeaseLost)
	require.ErrorIs(t, lease.Release(ctx), client.ErrLeaseLost)
	info, err := c.GetKey(ctx, next.ID)
	require.NoError(t, err)
	require.True(t, info.IsBlocked, "the next holder keeps the key")
	_, err = c.KeepAlive(ctx, next.ID, next.LeaseToken)
	require.NoError(t, err, "the next holder's lease is intact")
}

// When no keep-alive gets through before the lease ends, the holder must
// stop using the key: the server may already have given it to someone else.
func TestLeaseIsLostWhenKeepAlivesFailUntilItEnds(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	replica, _, lease := claimOneKey(t, ctx, servertest.Options{LeaseTTL: 2 * time.Second, DBTimeout: time.Second})

	replica.CutDatabase()
	waitForLoss(t, ctx, lease)
	require.ErrorIs(t, lease.Err(), client.ErrLeaseLost)
	require.ErrorContains(t, lease.Err(), "ran out")
	replica.RestoreDatabase()
}

func TestRetriesWhileTheDatabaseIsUnavailable(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	replica := servertest.Start(t, servertest.Options{DBTimeout: time.Second})
	proxy := newRecordingProxy(t, replica.URL)
	c := newClient(t, proxy.URL)

	replica.CutDatabase()
	_, err := c.CreateKey(ctx, "retry")
	require.ErrorIs(t, err, client.ErrUnavailable)
	var apiErr *client.APIError
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, "database_unavailable", apiErr.Code)
	require.Equal(t, time.Second, apiErr.RetryAfter)
	_, statuses := proxy.recorded()
	require.Equal(t, []int{503, 503, 503}, statuses, "three tries in all")

	// The database comes back after the second 503 of the next call: the
	// third try succeeds.
	proxy.mu.Lock()
	proxy.onResponse = func(n, status int) {
		if n == 5 {
			replica.RestoreDatabase()
		}
	}
	proxy.mu.Unlock()
	created, err := c.CreateKey(ctx, "retry")
	require.NoError(t, err)
	_, statuses = proxy.recorded()
	require.Equal(t, []int{503, 503, 503, 503, 503, 201}, statuses)
	status, err := c.PoolStatus(ctx, "retry")
	require.NoError(t, err)
	require.EqualValues(t, 1, status.Keys, "the failed tries created nothing: %s", created.ID)

	// Other errors are not retried.
	_, err = c.GetKey(ctx, "00000000-0000-4000-8000-000000000000")
	require.ErrorIs(t, err, client.ErrNotFound)
	_, statuses = proxy.recorded()
	require.Equal(t, 404, statuses[len(statuses)-1])
	require.Len(t, statuses, 8)
}

func TestBearerTokenAndLeaseTokenAreSent(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	proxy := newRecordingProxy(t, servertest.Start(t, servertest.Options{}).URL)
	c := newClient(t, proxy.URL, client.WithToken("s3cret"))
	_, err := c.CreateKey(ctx, "")
	require.NoError(t, err)
	lease, err := c.Claim(ctx, "")
	require.NoError(t, err)
	require.NoError(t, lease.Release(ctx))

	requests, _ := proxy.recorded()
	require.Len(t, requests, 3)
	for _, r := range requests {
		require.Equal(t, "Bearer s3cret", r.Header.Get("Authorization"), "%s %s", r.Method, r.URL)
	}
	release := requests[2]
	require.Equal(t, http.MethodPut, release.Method)
	require.Equal(t, `"`+lease.Token()+`"`, release.Header.Get("If-Match"))
}

func TestNewRefusesABadURL(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"", "localhost:8080", "ftp://host", "http://", "://x"} {
		_, err := client.New(bad)
		require.Error(t, err, bad)
	}
	_, err := client.New("http://127.0.0.1:8080/")
	require.NoError(t, err)
}

// Other modules import the client: it must not depend on this module's
// internal packages, nor on anything beyond the standard library. Its tests
// neither, since the client's module (client/go.mod) would then list their
// dependencies for every program that imports it.
func TestClientUsesTheStandardLibraryOnly(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob(filepath.Join("..", "..", "client", "*.go"))
	require.NoError(t, err)
	checked := 0
	for _, file := range files {
		f, err := parser.ParseFile(token.NewFileSet(), file, nil, parser.ImportsOnly)
		require.NoError(t, err)
		for _, imp := range f.Imports {
			path, err := strconv.Unquote(imp.Path.Value)
			require.NoError(t, err)
			if path == "github.com/tokenorchestrator/tokenorchestrator/client" {
				continue // the client's examples and external tests
			}
			first := strings.Split(path, "/")[0]
			require.NotContains(t, first, ".", "%s imports %s", file, path)
		}
		checked++
	}
	require.NotZero(t, checked)
}

func ctxWithTimeout(t *testing.T, parent context.Context, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(parent, d)
	t.Cleanup(cancel)
	return ctx
}

// A claim whose answer is lost after the server committed it, and which the
// client therefore retries, ends with one lease: the retry answers the lease
// the first try took instead of stranding it and claiming another key.
func TestClaimRetriedThroughALostAnswerHoldsOneLease(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dbURL := testdb.New(t)
	replica := servertest.Start(t, servertest.Options{DatabaseURL: dbURL, SweepInterval: time.Hour})
	proxy := newRecordingProxy(t, replica.URL)
	c := newClient(t, proxy.URL)
	_, err := c.CreateKeys(ctx, "lost", 2)
	require.NoError(t, err)

	proxy.mu.Lock()
	proxy.rewrite = func(n int, resp *http.Response) {
		if resp.Request.Method == http.MethodGet && resp.Request.URL.Path == "/keys" && resp.StatusCode == http.StatusOK && n == 2 {
			loseAnswer(resp)
		}
	}
	proxy.mu.Unlock()
	lease, err := c.Claim(ctx, "lost")
	require.NoError(t, err)
	requests, statuses := proxy.recorded()
	require.Equal(t, []int{201, 200, 200}, statuses, "the first claim's answer was lost and the claim retried")
	require.Equal(t, requests[1].URL.RawQuery, requests[2].URL.RawQuery)
	sentKey := requests[1].Header.Get("Idempotency-Key")
	require.Regexp(t, `^[0-9a-f]{32}$`, sentKey, "Claim sends a random idempotency key")
	require.Equal(t, sentKey, requests[2].Header.Get("Idempotency-Key"), "and the same one on its retry")

	status, err := c.PoolStatus(ctx, "lost")
	require.NoError(t, err)
	require.EqualValues(t, 1, status.Blocked, "one lease, not one per try")
	require.Equal(t, 1, countEvents(t, dbURL, "lost", "assigned"), "one lease in the history")
	info, err := c.GetKey(ctx, lease.ID())
	require.NoError(t, err)
	require.True(t, info.IsBlocked)
	require.NoError(t, lease.Release(ctx), "the lease answered is the key's current one")
	status, err = c.PoolStatus(ctx, "lost")
	require.NoError(t, err)
	require.EqualValues(t, 0, status.Blocked, "nothing stranded")
}

// ClaimKey with an idempotency key answers its repeats with the same
// lease, and once that lease has ended, with ErrIdempotencyKeyReused.
func TestClaimKeyWithAnIdempotencyKey(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	c := newClient(t, servertest.Start(t, servertest.Options{}).URL)
	_, err := c.CreateKeys(ctx, "idem", 3)
	require.NoError(t, err)

	idempotencyKey := client.NewIdempotencyKey()
	require.NotEqual(t, idempotencyKey, client.NewIdempotencyKey())
	first, err := c.ClaimKey(ctx, "idem", 0, client.WithIdempotencyKey(idempotencyKey))
	require.NoError(t, err)
	again, err := c.ClaimKey(ctx, "idem", time.Second, client.WithIdempotencyKey(idempotencyKey))
	require.NoError(t, err)
	require.Equal(t, first.ID, again.ID)
	require.Equal(t, first.LeaseToken, again.LeaseToken)
	other, err := c.ClaimKey(ctx, "idem", 0, client.WithIdempotencyKey(client.NewIdempotencyKey()))
	require.NoError(t, err)
	require.NotEqual(t, first.ID, other.ID)
	status, err := c.PoolStatus(ctx, "idem")
	require.NoError(t, err)
	require.EqualValues(t, 2, status.Blocked)

	_, err = c.ReleaseKey(ctx, first.ID, first.LeaseToken)
	require.NoError(t, err)
	_, err = c.ClaimKey(ctx, "idem", 0, client.WithIdempotencyKey(idempotencyKey))
	require.ErrorIs(t, err, client.ErrIdempotencyKeyReused)
	require.NotErrorIs(t, err, client.ErrLeaseLost)
	var apiErr *client.APIError
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, http.StatusConflict, apiErr.Status)
	require.Equal(t, "idempotency_key_reused", apiErr.Code)
}

// Listing a pool pages through its keys in id order without claiming any;
// the stats count every pool.
func TestListKeysAndStats(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	c := newClient(t, servertest.Start(t, servertest.Options{}).URL)

	created, err := c.CreateKeys(ctx, "listed", 5)
	require.NoError(t, err)
	_, err = c.CreateKey(ctx, "")
	require.NoError(t, err)
	held, err := c.ClaimKey(ctx, "listed", 0)
	require.NoError(t, err)

	var ids []string
	for _, k := range created {
		ids = append(ids, k.ID)
	}
	slices.Sort(ids)
	var listed []string
	after := ""
	for pages := 0; ; pages++ {
		require.Less(t, pages, 3, "two keys a page: three pages at most")
		page, err := c.ListKeys(ctx, "listed", after, 2)
		require.NoError(t, err)
		require.Equal(t, "listed", page.Pool)
		for _, k := range page.Keys {
			require.Empty(t, k.LeaseToken, "a listing never shows lease tokens")
			require.Equal(t, k.ID == held.ID, k.IsBlocked, k.ID)
			listed = append(listed, k.ID)
		}
		if page.NextAfter == "" {
			break
		}
		require.Len(t, page.Keys, 2)
		after = page.NextAfter
	}
	require.Equal(t, ids, listed)

	first, err := c.ListKeys(ctx, "", "", 0)
	require.NoError(t, err)
	require.Equal(t, "default", first.Pool)
	require.Len(t, first.Keys, 1)
	empty, err := c.ListKeys(ctx, "nobody", "", 0)
	require.NoError(t, err)
	require.Empty(t, empty.Keys)
	_, err = c.ListKeys(ctx, "listed", "", client.MaxPageSize+1)
	var apiErr *client.APIError
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, http.StatusBadRequest, apiErr.Status)

	stats, err := c.Stats(ctx)
	require.NoError(t, err)
	require.Equal(t, client.Stats{
		Pools: []client.PoolStats{
			{Pool: "default", Total: 1, Seats: 1, Free: 1},
			{Pool: "listed", Total: 5, Seats: 5, Free: 4, Blocked: 1},
		},
		Total: client.PoolStats{Total: 6, Seats: 6, Free: 5, Blocked: 1},
	}, stats)
}
