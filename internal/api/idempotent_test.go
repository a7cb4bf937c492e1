package api_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

// claimWith claims a key of the pool under the idempotency key; more is
// appended to the query (e.g. "&wait=5s").
func claimWith(t *testing.T, s *testServer, pool, idempotencyKey, more string) reply {
	t.Helper()
	return do(t, "GET", s.url+"/keys?pool="+pool+more, "", "Idempotency-Key", idempotencyKey)
}

// requireSameLease checks that r answers the lease of first, as a repeat.
func requireSameLease(t *testing.T, first, r reply) {
	t.Helper()
	require.Equal(t, http.StatusOK, r.status, r.raw)
	require.Equal(t, first.str("keyId"), r.str("keyId"))
	require.Equal(t, first.str("leaseToken"), r.str("leaseToken"))
	require.Equal(t, `"`+first.str("leaseToken")+`"`, r.header.Get("ETag"))
	require.Equal(t, true, r.body["isBlocked"])
	require.Equal(t, "true", r.header.Get("Idempotent-Replayed"))
}

// countRows runs a count(*) query on the test database.
func countRows(t *testing.T, s *testServer, query string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, s.pool.QueryRow(context.Background(), query, args...).Scan(&n))
	return n
}

func heldInPool(t *testing.T, s *testServer, pool string) string {
	t.Helper()
	return do(t, "HEAD", s.url+"/keys?pool="+pool, "").header.Get("X-Pool-Blocked")
}

// A claim repeated with its Idempotency-Key, on the replica that served it
// or on another one, answers the same lease; another key, or the same key in
// another pool, claims another.
func TestIdempotentClaimAnswersTheSameLeaseOnEveryReplica(t *testing.T) {
	t.Parallel()
	dbURL := testdb.New(t)
	a := newServer(t, dbURL, options{})
	b := newServer(t, dbURL, options{})
	require.Equal(t, http.StatusCreated, do(t, "POST", a.url+"/keys?pool=idem", `{"count": 3}`).status)

	first := claimWith(t, a, "idem", "claim-1", "")
	require.Equal(t, http.StatusOK, first.status, first.raw)
	require.Empty(t, first.header.Get("Idempotent-Replayed"), "the first claim is no repeat")
	requireSameLease(t, first, claimWith(t, b, "idem", "claim-1", ""))
	requireSameLease(t, first, claimWith(t, a, "idem", "claim-1", ""))
	requireSameLease(t, first, claimWith(t, b, "idem", "claim-1", "&wait=5s"))
	require.Equal(t, "1", heldInPool(t, a, "idem"))

	other := claimWith(t, b, "idem", "claim-2", "")
	require.Equal(t, http.StatusOK, other.status, other.raw)
	require.Empty(t, other.header.Get("Idempotent-Replayed"))
	require.NotEqual(t, first.str("keyId"), other.str("keyId"))
	require.NotEqual(t, first.str("leaseToken"), other.str("leaseToken"))

	// The key is scoped to the pool.
	require.Equal(t, http.StatusCreated, do(t, "POST", a.url+"/keys?pool=idem-other", "").status)
	elsewhere := claimWith(t, a, "idem-other", "claim-1", "")
	require.Equal(t, http.StatusOK, elsewhere.status, elsewhere.raw)
	require.Equal(t, "idem-other", elsewhere.str("pool"))
	require.Empty(t, elsewhere.header.Get("Idempotent-Replayed"))

	require.Equal(t, "2", heldInPool(t, a, "idem"))
	require.Equal(t, 2, countRows(t, a, "SELECT count(*) FROM key_events WHERE pool = 'idem' AND event = 'assigned'"),
		"one lease per idempotency key in the history")
}

// Many copies of one claim, sent at once to two replicas, all answer the
// same lease, and only one lease was ever made.
func TestConcurrentIdempotentClaimsMakeOneLease(t *testing.T) {
	t.Parallel()
	const copies = 16
	dbURL := testdb.New(t)
	replicas := []*testServer{newServer(t, dbURL, options{}), newServer(t, dbURL, options{})}
	require.Equal(t, http.StatusCreated, do(t, "POST", replicas[0].url+"/keys?pool=race", `{"count": 8}`).status)

	type answer struct {
		status   int
		replayed string
		keyID    string
		token    string
		err      error
	}
	answers := make(chan answer, copies)
	start := make(chan struct{})
	for i := range copies {
		url := replicas[i%2].url + "/keys?pool=race"
		go func() {
			<-start
			req, err := http.NewRequest(http.MethodGet, url, nil)
			if err != nil {
				answers <- answer{err: err}
				return
			}
			req.Header.Set("Idempotency-Key", "the same claim")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				answers <- answer{err: err}
				return
			}
			defer resp.Body.Close()
			var body struct {
				KeyID      string `json:"keyId"`
				LeaseToken string `json:"leaseToken"`
			}
			raw, err := io.ReadAll(resp.Body)
			if err == nil {
				err = json.Unmarshal(raw, &body)
			}
			answers <- answer{resp.StatusCode, resp.Header.Get("Idempotent-Replayed"), body.KeyID, body.LeaseToken, err}
		}()
	}
	close(start)
	var leases = map[string]bool{}
	claimed := 0
	for range copies {
		a := <-answers
		require.NoError(t, a.err)
		require.Equal(t, http.StatusOK, a.status)
		leases[a.keyID+" "+a.token] = true
		if a.replayed == "" {
			claimed++
		}
	}
	require.Len(t, leases, 1, "every copy answers the same key and lease token")
	require.Equal(t, 1, claimed, "one copy claimed, the others repeated its answer")
	require.Equal(t, 1, countRows(t, replicas[0], "SELECT count(*) FROM key_events WHERE pool = 'race' AND event = 'assigned'"),
		"one lease in the history")
	require.Equal(t, "1", heldInPool(t, replicas[1], "race"))
}

// Once the lease claimed under a key has ended, a repeat answers 409 and
// claims nothing, however the lease ended.
func TestIdempotentClaimAfterItsLeaseEnded(t *testing.T) {
	t.Parallel()
	dbURL := testdb.New(t)
	a := newServer(t, dbURL, options{})
	b := newServer(t, dbURL, options{})
	require.Equal(t, http.StatusCreated, do(t, "POST", a.url+"/keys?pool=ended", `{"count": 2}`).status)

	released := claimWith(t, a, "ended", "released", "")
	require.Equal(t, http.StatusOK, released.status, released.raw)
	release(t, a, released)
	requireProblem(t, claimWith(t, b, "ended", "released", ""), http.StatusConflict, "idempotency_key_reused")
	requireProblem(t, claimWith(t, a, "ended", "released", "&wait=1s"), http.StatusConflict, "idempotency_key_reused")

	deleted := claimWith(t, a, "ended", "deleted", "")
	require.Equal(t, http.StatusOK, deleted.status, deleted.raw)
	require.Equal(t, http.StatusOK, do(t, "DELETE", a.url+"/keys/"+deleted.str("keyId"), "").status)
	requireProblem(t, claimWith(t, b, "ended", "deleted", ""), http.StatusConflict, "idempotency_key_reused")

	require.Equal(t, "0", heldInPool(t, a, "ended"), "the repeats claimed nothing")
	require.Equal(t, 2, countRows(t, a, "SELECT count(*) FROM key_events WHERE pool = 'ended' AND event = 'assigned'"))

	// A key whose life ends ends its lease too.
	short := newServer(t, dbURL, options{keyTTL: 300 * time.Millisecond})
	require.Equal(t, http.StatusCreated, do(t, "POST", short.url+"/keys?pool=expiring", "").status)
	expiring := claimWith(t, short, "expiring", "expiring", "")
	require.Equal(t, http.StatusOK, expiring.status, expiring.raw)
	waitFor(t, 5*time.Second, func() bool {
		return do(t, "GET", a.url+"/keys/"+expiring.str("keyId"), "").status == http.StatusNotFound
	})
	requireProblem(t, claimWith(t, a, "expiring", "expiring", ""), http.StatusConflict, "idempotency_key_reused")
}

// A claim's record lasts LEASE_TTL, as long as its lease without
// keep-alives: until then a repeat answers the lease, from then on it claims
// anew (never a 409 in between, since both end at the same moment), and the
// new claim replaces the record.
func TestIdempotentClaimAfterItsRecordExpired(t *testing.T) {
	t.Parallel()
	s := newServer(t, testdb.New(t), options{leaseTTL: 300 * time.Millisecond})
	require.Equal(t, http.StatusCreated, do(t, "POST", s.url+"/keys?pool=again", `{"count": 2}`).status)

	first := claimWith(t, s, "again", "again", "")
	require.Equal(t, http.StatusOK, first.status, first.raw)
	var renewed reply
	waitFor(t, 10*time.Second, func() bool {
		r := claimWith(t, s, "again", "again", "")
		require.Equal(t, http.StatusOK, r.status, r.raw)
		if r.header.Get("Idempotent-Replayed") == "true" {
			requireSameLease(t, first, r)
			return false
		}
		renewed = r
		return true
	})
	require.NotEqual(t, first.str("leaseToken"), renewed.str("leaseToken"))
	require.Equal(t, 1, countRows(t, s,
		"SELECT count(*) FROM claim_requests WHERE pool = 'again' AND idempotency_key = 'again' AND lease_token = $1::bigint",
		renewed.str("leaseToken")), "the new claim replaced the record")
}

// A malformed Idempotency-Key is refused with 400, and nothing is claimed.
func TestIdempotencyKeyIsValidated(t *testing.T) {
	t.Parallel()
	s := newServer(t, testdb.New(t), options{})
	require.Equal(t, http.StatusCreated, do(t, "POST", s.url+"/keys?pool=valid", "").status)

	// Empty, too long, not ASCII, a control character.
	for _, value := range []string{"", strings.Repeat("k", 256), "caf\u00e9", "a\tb"} {
		requireProblem(t, claimWith(t, s, "valid", value, ""), http.StatusBadRequest, "invalid_idempotency_key")
		requireProblem(t, claimWith(t, s, "valid", value, "&wait=1s"), http.StatusBadRequest, "invalid_idempotency_key")
	}
	req, err := http.NewRequest(http.MethodGet, s.url+"/keys?pool=valid", nil)
	require.NoError(t, err)
	req.Header.Add("Idempotency-Key", "one")
	req.Header.Add("Idempotency-Key", "two")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, "two keys")

	require.Equal(t, "0", heldInPool(t, s, "valid"), "nothing was claimed")
	require.Equal(t, 0, countRows(t, s, "SELECT count(*) FROM claim_requests"), "nothing was recorded")

	longest := claimWith(t, s, "valid", strings.Repeat("~", 255), "")
	require.Equal(t, http.StatusOK, longest.status, longest.raw)
	release(t, s, longest)
	spaced := claimWith(t, s, "valid", "with spaces inside", "")
	require.Equal(t, http.StatusOK, spaced.status, spaced.raw)
}

// An idempotent claim that waits gets a key freed on another replica and
// records it under its key; one whose wait ends with nothing records
// nothing, so that its repeat claims; one whose client leaves takes nothing.
func TestIdempotentClaimWaitsForAKey(t *testing.T) {
	t.Parallel()
	dbURL := testdb.New(t)
	a := newServer(t, dbURL, options{})
	b := newServer(t, dbURL, options{})
	held := holdAll(t, a, "iw", 1)

	requireProblem(t, claimWith(t, a, "iw", "nothing yet", "&wait=200ms"), http.StatusNotFound, "no_free_key")
	require.Equal(t, 0, countRows(t, a, "SELECT count(*) FROM claim_requests"), "a claim that got nothing records nothing")

	// A client that leaves while waiting takes nothing.
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.url+"/keys?pool=iw&wait=30s", nil)
	require.NoError(t, err)
	req.Header.Set("Idempotency-Key", "gone")
	left := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		left <- err
	}()
	time.Sleep(100 * time.Millisecond) // the request is waiting
	cancel()
	require.Error(t, <-left)

	got := make(chan reply, 1)
	go func() { got <- claimWith(t, b, "iw", "waiting", "&wait=30s") }()
	time.Sleep(100 * time.Millisecond) // the request is waiting
	release(t, a, held[0])
	waited := <-got
	require.Equal(t, http.StatusOK, waited.status, waited.raw)
	require.Equal(t, held[0].str("keyId"), waited.str("keyId"))
	require.Empty(t, waited.header.Get("Idempotent-Replayed"))
	requireSameLease(t, waited, claimWith(t, a, "iw", "waiting", "&wait=30s"))
	require.Equal(t, 0, countRows(t, a, "SELECT count(*) FROM claim_requests WHERE idempotency_key = 'gone'"),
		"the client that left took nothing")

	release(t, a, waited)
	again := claimWith(t, a, "iw", "nothing yet", "")
	require.Equal(t, http.StatusOK, again.status, again.raw)
	require.Empty(t, again.header.Get("Idempotent-Replayed"))
}
