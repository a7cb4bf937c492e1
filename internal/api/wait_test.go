package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

// noPoll keeps waiters from polling during a test, so that only the
// database's notification can wake them.
const noPoll = time.Hour

// holdAll creates n keys in the pool and claims them all.
func holdAll(t *testing.T, s *testServer, pool string, n int) []reply {
	t.Helper()
	require.Equal(t, http.StatusCreated, do(t, "POST", s.url+"/keys?pool="+pool, fmt.Sprintf(`{"count": %d}`, n)).status)
	held := make([]reply, n)
	for i := range held {
		held[i] = do(t, "GET", s.url+"/keys?pool="+pool, "")
		require.Equal(t, http.StatusOK, held[i].status)
	}
	return held
}

func release(t *testing.T, s *testServer, key reply) {
	t.Helper()
	r := do(t, "PUT", s.url+"/keys/"+key.str("keyId"), "", "If-Match", `"`+key.str("leaseToken")+`"`)
	require.Equal(t, http.StatusOK, r.status, r.raw)
}

// A waiter on one replica is served when a key is released on another: the
// wake-up travels through the database's NOTIFY, since waiters here never
// poll.
func TestWaiterIsWokenByAReleaseOnAnotherReplica(t *testing.T) {
	t.Parallel()
	dbURL := testdb.New(t)
	a := newServer(t, dbURL, options{poll: noPoll})
	b := newServer(t, dbURL, options{poll: noPoll})
	held := holdAll(t, a, "w", 1)

	got := make(chan reply, 1)
	go func() { got <- do(t, "GET", b.url+"/keys?pool=w&wait=30s", "") }()
	time.Sleep(200 * time.Millisecond) // the waiter is queued
	released := time.Now()
	release(t, a, held[0])
	r := <-got
	require.Equal(t, http.StatusOK, r.status, r.raw)
	require.Equal(t, held[0].str("keyId"), r.str("keyId"))
	t.Logf("served %s after the release on the other replica", time.Since(released).Round(time.Millisecond))
}

// Fifty waiters, fifty keys freed one by one on another replica: every
// waiter gets exactly one key, and no key goes to two waiters. Polling is
// off: while the waiters are registered, every release notifies, even one
// that commits while a claim for the waiters is still open.
func TestEveryWaiterGetsExactlyOneKey(t *testing.T) {
	t.Parallel()
	const n = 50
	dbURL := testdb.New(t)
	a := newServer(t, dbURL, options{poll: noPoll})
	b := newServer(t, dbURL, options{poll: noPoll})
	held := holdAll(t, a, "fifty", n)

	type outcome struct {
		status int
		key    string
		err    error
	}
	var wg sync.WaitGroup
	results := make(chan outcome, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(b.url + "/keys?pool=fifty&wait=60s")
			if err != nil {
				results <- outcome{err: err}
				return
			}
			defer resp.Body.Close()
			var body struct {
				KeyID string `json:"keyId"`
			}
			err = json.NewDecoder(resp.Body).Decode(&body)
			results <- outcome{status: resp.StatusCode, key: body.KeyID, err: err}
		}()
	}
	time.Sleep(300 * time.Millisecond) // all are queued
	for _, key := range held {
		release(t, a, key)
		time.Sleep(5 * time.Millisecond)
	}
	wg.Wait()
	close(results)
	seen := map[string]bool{}
	for r := range results {
		require.NoError(t, r.err)
		require.Equal(t, http.StatusOK, r.status)
		require.False(t, seen[r.key], "key %s went to two waiters", r.key)
		seen[r.key] = true
	}
	require.Len(t, seen, n)
}

// Waiters of one replica are served in the order they came.
func TestWaitersAreServedInArrivalOrder(t *testing.T) {
	t.Parallel()
	dbURL := testdb.New(t)
	s := newServer(t, dbURL, options{poll: noPoll})
	held := holdAll(t, s, "fifo", 3)

	order := make(chan int, 3)
	for i := range 3 {
		go func() {
			r := do(t, "GET", s.url+"/keys?pool=fifo&wait=30s", "")
			require.Equal(t, http.StatusOK, r.status, r.raw)
			order <- i
		}()
		time.Sleep(100 * time.Millisecond) // arrive in turn
	}
	for i := range 3 {
		release(t, s, held[i])
		select {
		case got := <-order:
			require.Equal(t, i, got, "the waiter that came first is served first")
		case <-time.After(10 * time.Second):
			t.Fatalf("no waiter was served after release %d", i)
		}
	}
}

// A client that leaves while waiting takes nothing: the key freed after it
// left stays free.
func TestWaiterThatLeavesTakesNothing(t *testing.T) {
	t.Parallel()
	s := newServer(t, testdb.New(t), options{poll: noPoll})
	held := holdAll(t, s, "gone", 1)

	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/keys?pool=gone&wait=30s", nil)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		done <- err
	}()
	time.Sleep(200 * time.Millisecond)
	cancel()
	require.Error(t, <-done)
	time.Sleep(100 * time.Millisecond) // the server notices the client left
	release(t, s, held[0])

	// Another waiter is served at once; the one that left took nothing.
	r := do(t, "GET", s.url+"/keys?pool=gone&wait=5s", "")
	require.Equal(t, http.StatusOK, r.status, r.raw)
	require.EqualValues(t, 2, r.body["timesAssigned"], "assigned once before, once now: never to the client that left")
}

// A wait that ends with nothing answers 404.
func TestWaitEndsWithNoKey(t *testing.T) {
	t.Parallel()
	s := newServer(t, testdb.New(t), options{poll: 50 * time.Millisecond})
	holdAll(t, s, "none", 1)
	requireProblem(t, do(t, "GET", s.url+"/keys?pool=none&wait=300ms", ""), 404, "no_free_key")
}

// A replica that shuts down closes its hub of waiters: a client waiting for
// a key is answered at once, 503 shutting_down with Retry-After, and so is
// a new wait when no key is free, while a key free at once is still handed
// out. The answers are held to openapi.yaml like every other.
func TestWaitsEndWhenTheReplicaShutsDown(t *testing.T) {
	t.Parallel()
	s := newServer(t, testdb.New(t), options{poll: noPoll})
	holdAll(t, s, "closing", 1)
	got := make(chan reply, 1)
	go func() { got <- do(t, "GET", s.url+"/keys?pool=closing&wait=60s", "") }()
	deadline := time.Now().Add(30 * time.Second)
	for waiting := false; !waiting; {
		require.True(t, time.Now().Before(deadline), "the client never waited")
		time.Sleep(10 * time.Millisecond)
		require.NoError(t, s.pool.QueryRow(context.Background(),
			"SELECT EXISTS (SELECT 1 FROM pool_waiters WHERE pool = 'closing')").Scan(&waiting))
	}

	s.waiters.Close()
	waiter := <-got
	requireProblem(t, waiter, http.StatusServiceUnavailable, "shutting_down")
	require.Equal(t, "1", waiter.header.Get("Retry-After"))
	requireProblem(t, do(t, "GET", s.url+"/keys?pool=closing&wait=30s", ""), http.StatusServiceUnavailable, "shutting_down")

	require.Equal(t, http.StatusCreated, do(t, "POST", s.url+"/keys?pool=closing", "").status)
	key := do(t, "GET", s.url+"/keys?pool=closing&wait=30s", "")
	require.Equal(t, http.StatusOK, key.status, key.raw)
	require.NotEmpty(t, key.str("leaseToken"))
}

// waiterQueued waits until the replica has registered waiting clients for
// the pool, which it does once the first of them is queued.
func waiterQueued(t *testing.T, s *testServer, pool string) {
	t.Helper()
	require.Eventually(t, func() bool {
		var n int
		err := s.pool.QueryRow(context.Background(), "SELECT count(*) FROM pool_waiters WHERE pool = $1", pool).Scan(&n)
		return err == nil && n > 0
	}, 10*time.Second, 5*time.Millisecond)
}

// waitInBackground starts a client waiting for a key of the pool; it leaves
// when the test ends.
func waitInBackground(t *testing.T, s *testServer, pool string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/keys?pool="+pool+"&wait=60s", nil)
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// A replica takes at most MAX_WAITERS waiting clients, on at most
// MAX_WAITED_POOLS pools; past either cap a client is answered 503 at once,
// with Retry-After, instead of costing the database a registration and
// polls of its own.
func TestWaitersBeyondTheCapsAreAnswered503(t *testing.T) {
	t.Parallel()
	dbURL := testdb.New(t)

	pools := newServer(t, dbURL, options{poll: noPoll, maxWaitedPools: 1})
	for _, pool := range []string{"first", "second", "third"} {
		holdAll(t, pools, pool, 1) // a pool without keys is not waited for
	}
	waitInBackground(t, pools, "first")
	waiterQueued(t, pools, "first")
	r := do(t, "GET", pools.url+"/keys?pool=second&wait=1s", "")
	requireProblem(t, r, http.StatusServiceUnavailable, "too_many_waited_pools")
	require.NotEmpty(t, r.header.Get("Retry-After"))
	r = do(t, "GET", pools.url+"/keys?pool=second", "")
	requireProblem(t, r, http.StatusNotFound, "no_free_key")

	waiters := newServer(t, dbURL, options{poll: noPoll, maxWaiters: 1})
	waitInBackground(t, waiters, "third")
	waiterQueued(t, waiters, "third")
	r = do(t, "GET", waiters.url+"/keys?pool=third&wait=1s", "")
	requireProblem(t, r, http.StatusServiceUnavailable, "too_many_waiters")
	require.NotEmpty(t, r.header.Get("Retry-After"))
}

// waitInBackgroundWith is waitInBackground for a claim with the given
// query and headers (labels, an idempotency key).
func waitInBackgroundWith(t *testing.T, s *testServer, query string, headers ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/keys?"+query+"&wait=60s", nil)
	require.NoError(t, err)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// The caps on waiting clients hold for every kind of wait: plain,
// labelled and idempotent, whichever came first.
func TestCapsHoldForEveryKindOfWait(t *testing.T) {
	t.Parallel()
	dbURL := testdb.New(t)
	kinds := []struct {
		name    string
		query   string
		headers []string
	}{
		{"plain", "pool=%s", nil},
		{"labelled", "pool=%s&label=tier=paid", nil},
		{"idempotent", "pool=%s", []string{"Idempotency-Key", "caps-%s"}},
	}
	for _, first := range kinds {
		for _, second := range kinds {
			pool := "caps-" + first.name + "-" + second.name
			s := newServer(t, dbURL, options{poll: noPoll, maxWaiters: 1})
			holdAll(t, s, pool, 1)
			firstHeaders := slices.Clone(first.headers)
			if firstHeaders != nil {
				firstHeaders[1] = fmt.Sprintf(firstHeaders[1], "first")
			}
			waitInBackgroundWith(t, s, fmt.Sprintf(first.query, pool), firstHeaders...)
			require.Eventually(t, func() bool { return s.waiters.Waiters() == 1 }, 10*time.Second, 5*time.Millisecond, "%s waits", first.name)
			headers := slices.Clone(second.headers)
			if headers != nil {
				headers[1] = fmt.Sprintf(headers[1], "second")
			}
			r := do(t, "GET", s.url+"/keys?"+fmt.Sprintf(second.query, pool)+"&wait=1s", "", headers...)
			requireProblem(t, r, http.StatusServiceUnavailable, "too_many_waiters")
			require.NotEmpty(t, r.header.Get("Retry-After"), "%s after %s", second.name, first.name)
		}
	}

	// The cap on pools, across kinds of waits.
	s := newServer(t, dbURL, options{poll: noPoll, maxWaitedPools: 1})
	holdAll(t, s, "pools-a", 1)
	holdAll(t, s, "pools-b", 1)
	waitInBackgroundWith(t, s, "pool=pools-a", "Idempotency-Key", "pools-a")
	require.Eventually(t, func() bool { return s.waiters.Waiters() == 1 }, 10*time.Second, 5*time.Millisecond)
	requireProblem(t, do(t, "GET", s.url+"/keys?pool=pools-b&label=tier=paid&wait=1s", ""), http.StatusServiceUnavailable, "too_many_waited_pools")
	requireProblem(t, do(t, "GET", s.url+"/keys?pool=pools-b&wait=1s", ""), http.StatusServiceUnavailable, "too_many_waited_pools")
}

// A replica that shuts down answers every waiting client at once, 503
// shutting_down, whatever kind of wait: plain, labelled or idempotent.
func TestShutdownAnswersEveryKindOfWait(t *testing.T) {
	t.Parallel()
	s := newServer(t, testdb.New(t), options{poll: noPoll})
	holdAll(t, s, "closing", 1)
	answers := make(chan reply, 3)
	for _, h := range [][]string{nil, {"Idempotency-Key", "closing-1"}} {
		go func() { answers <- do(t, "GET", s.url+"/keys?pool=closing&wait=60s", "", h...) }()
	}
	go func() { answers <- do(t, "GET", s.url+"/keys?pool=closing&label=tier=paid&wait=60s", "") }()
	require.Eventually(t, func() bool { return s.waiters.Waiters() == 3 }, 10*time.Second, 5*time.Millisecond)
	s.waiters.Close()
	for range 3 {
		select {
		case r := <-answers:
			requireProblem(t, r, http.StatusServiceUnavailable, "shutting_down")
		case <-time.After(10 * time.Second):
			t.Fatal("a waiting client got no answer after the shutdown began")
		}
	}
	// Afterwards a wait claims a free key if there is one, and waits for none.
	requireProblem(t, do(t, "GET", s.url+"/keys?pool=closing&wait=5s", "", "Idempotency-Key", "closing-2"), http.StatusServiceUnavailable, "shutting_down")
}
