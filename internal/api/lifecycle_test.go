package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

// A held key that nobody releases or keeps alive is free again within
// LEASE_TTL + SWEEP_INTERVAL; a keep-alive pushes that back.
func TestLeaseEndsUnlessKeptAlive(t *testing.T) {
	t.Parallel()
	const leaseTTL, sweep = time.Second, 100 * time.Millisecond
	s := newServer(t, testdb.New(t), options{leaseTTL: leaseTTL, sweep: sweep})
	do(t, "POST", s.url+"/keys?pool=l", `{"count": 2}`)
	abandoned := do(t, "GET", s.url+"/keys?pool=l", "")
	kept := do(t, "GET", s.url+"/keys?pool=l", "")
	claimedAt := time.Now()

	// Keep one lease alive for three lease lengths.
	for time.Since(claimedAt) < 3*leaseTTL {
		r := do(t, "PUT", s.url+"/keepalive/"+kept.str("keyId"), "", "If-Match", `"`+kept.str("leaseToken")+`"`)
		require.Equal(t, http.StatusOK, r.status, r.raw)
		time.Sleep(leaseTTL / 4)
	}
	info := do(t, "GET", s.url+"/keys/"+kept.str("keyId"), "")
	require.Equal(t, true, info.body["isBlocked"], "a lease kept alive does not end")

	// The other was freed, and no later than its deadline allows (the margin
	// covers the pass's own time and this check's polling).
	released := waitFor(t, 2*time.Second, func() bool {
		return do(t, "GET", s.url+"/keys/"+abandoned.str("keyId"), "").body["isBlocked"] == false
	})
	require.Less(t, released.Sub(claimedAt), 3*leaseTTL+sweep+500*time.Millisecond)
	requireProblem(t, do(t, "PUT", s.url+"/keys/"+abandoned.str("keyId"), "", "If-Match", `"`+abandoned.str("leaseToken")+`"`), 200, "")
}

// A key not kept alive expires: it answers 404 at once, even before the
// background job deletes it, and is never claimed again.
func TestKeyExpires(t *testing.T) {
	t.Parallel()
	s := newServer(t, testdb.New(t), options{keyTTL: 300 * time.Millisecond})
	id := do(t, "POST", s.url+"/keys?pool=e", "").str("keyId")
	time.Sleep(350 * time.Millisecond)
	requireProblem(t, do(t, "GET", s.url+"/keys/"+id, ""), 404, "key_not_found")
	requireProblem(t, do(t, "HEAD", s.url+"/keys/"+id, ""), 404, "")
	requireProblem(t, do(t, "PUT", s.url+"/keepalive/"+id, ""), 404, "key_not_found")
	requireProblem(t, do(t, "GET", s.url+"/keys?pool=e", ""), 404, "no_free_key")
	var rows int
	require.NoError(t, s.pool.QueryRow(context.Background(), "SELECT count(*) FROM keys").Scan(&rows))
	require.Equal(t, 1, rows, "no sweeper runs here: the row is still there, yet the key is gone")
}

func waitFor(t *testing.T, limit time.Duration, cond func() bool) time.Time {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		require.True(t, time.Now().Before(deadline), "condition not met within %s", limit)
		time.Sleep(20 * time.Millisecond)
	}
	return time.Now()
}

// Many clients on two replicas sharing one database claim, keep alive and
// release keys for several seconds: no key is ever held by two clients at
// once (checked as the clients see it, and from the history table), and no
// key is lost.
func TestConcurrentClientsNeverShareAKey(t *testing.T) {
	t.Parallel()
	const clients, keys, duration = 64, 24, 4 * time.Second
	dbURL := testdb.New(t)
	replicas := []*testServer{
		newServer(t, dbURL, options{leaseTTL: 2 * time.Second, sweep: 50 * time.Millisecond}),
		newServer(t, dbURL, options{leaseTTL: 2 * time.Second, sweep: 50 * time.Millisecond}),
	}
	start := time.Now()
	do(t, "POST", replicas[0].url+"/keys?pool=c", fmt.Sprintf(`{"count": %d}`, keys))

	transport := &http.Transport{MaxIdleConnsPerHost: clients}
	client := &http.Client{Transport: transport, Timeout: 10 * time.Second}
	defer transport.CloseIdleConnections()
	call := func(method, url string, headers ...string) (int, map[string]any, error) {
		req, err := http.NewRequest(method, url, nil)
		if err != nil {
			return 0, nil, err
		}
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		var body map[string]any
		raw, _ := io.ReadAll(resp.Body)
		if err := json.Unmarshal(raw, &body); err != nil {
			return resp.StatusCode, nil, fmt.Errorf("not JSON: %q", raw)
		}
		return resp.StatusCode, body, nil
	}

	var (
		holders    sync.Map // key id → client number
		violations atomic.Int64
		cycles     atomic.Int64
		failures   = make(chan error, clients)
		wg         sync.WaitGroup
	)
	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				replica := replicas[(c+i)%len(replicas)]
				status, body, err := call("GET", replica.url+"/keys?pool=c")
				if err != nil {
					failures <- err
					return
				}
				if status == http.StatusNotFound {
					time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
					continue
				}
				if status != http.StatusOK {
					failures <- fmt.Errorf("claim answered %d: %v", status, body)
					return
				}
				id, token := body["keyId"].(string), body["leaseToken"].(string)
				if other, taken := holders.LoadOrStore(id, c); taken {
					violations.Add(1)
					t.Errorf("key %s claimed by client %d while client %v holds it", id, c, other)
				}
				time.Sleep(time.Duration(rand.IntN(1000)) * time.Microsecond)
				// Half the cycles keep alive first, on the other replica.
				if i%2 == 0 {
					other := replicas[(c+i+1)%len(replicas)]
					if status, body, err := call("PUT", other.url+"/keepalive/"+id, "If-Match", `"`+token+`"`); err != nil {
						failures <- fmt.Errorf("keep-alive: %w", err)
						return
					} else if status != http.StatusOK {
						failures <- fmt.Errorf("keep-alive answered %d: %v", status, body)
						return
					}
				}
				// Forget the key before giving it back: once released,
				// another client may get it at once.
				holders.Delete(id)
				if status, body, err := call("PUT", replica.url+"/keys/"+id+"?lease="+token); err != nil {
					failures <- fmt.Errorf("release: %w", err)
					return
				} else if status != http.StatusOK {
					failures <- fmt.Errorf("release answered %d: %v", status, body)
					return
				}
				cycles.Add(1)
			}
		}()
	}
	wg.Wait()
	close(failures)
	for err := range failures {
		require.NoError(t, err)
	}
	require.Zero(t, violations.Load())
	require.Greater(t, cycles.Load(), int64(keys), "the clients got work done")
	t.Logf("%d clients, 2 replicas, %d keys: %d claim/release cycles in %s", clients, keys, cycles.Load(), duration)

	// The history agrees: no two leases of a key overlap, every lease
	// started was ended, and every key is still there.
	pool, err := pgxpool.New(context.Background(), dbURL)
	require.NoError(t, err)
	defer pool.Close()
	audit, err := store.New(pool, store.Config{}).AuditHistory(context.Background(), start)
	require.NoError(t, err)
	require.Empty(t, audit.Overlaps)
	require.Equal(t, cycles.Load(), audit.Events["assigned"])
	require.Equal(t, cycles.Load(), audit.Events["released"])
	require.Equal(t, int64(keys), audit.Events["created"])
	require.Zero(t, audit.Events["lease_expired"]+audit.Events["deleted"]+audit.Events["expired"])
	var live, held int
	require.NoError(t, pool.QueryRow(context.Background(),
		"SELECT count(*), count(lease_token) FROM key_state WHERE pool = 'c'").Scan(&live, &held))
	require.Equal(t, keys, live)
	require.Zero(t, held)
}
