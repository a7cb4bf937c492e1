package api_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

// claimVariants are the forms a claim takes: with or without a wait,
// labels or an Idempotency-Key, each claimed its own way. wait is appended
// to the query when the variant waits.
var claimVariants = []struct {
	name    string
	query   string
	wait    bool
	headers []string
}{
	{name: "plain"},
	{name: "waiting", wait: true},
	{name: "labelled", query: "&label=tier=paid"},
	{name: "labelled, waiting", query: "&label=tier=paid", wait: true},
	{name: "idempotent", headers: []string{"Idempotency-Key", "unknown-pool-1"}},
	{name: "idempotent, waiting", wait: true, headers: []string{"Idempotency-Key", "unknown-pool-2"}},
	{name: "idempotent, labelled, waiting", query: "&label=tier=paid", wait: true, headers: []string{"Idempotency-Key", "unknown-pool-3"}},
}

// A claim on a pool that has no keys answers 404 unknown_pool at once in
// every form, even when asked to wait half a minute; a pool whose keys are
// all held answers no_free_key, after the wait. A pool whose last key was
// deleted is unknown again.
func TestClaimOnAPoolWithoutKeysAnswersUnknownPoolAtOnce(t *testing.T) {
	t.Parallel()
	s := newServer(t, testdb.New(t), options{poll: noPoll})
	require.Equal(t, http.StatusCreated, do(t, "POST", s.url+"/keys?pool=held", `{"keys": [{"labels": {"tier": "paid"}}]}`).status)
	held := do(t, "GET", s.url+"/keys?pool=held", "")
	require.Equal(t, http.StatusOK, held.status, held.raw)
	gone := do(t, "POST", s.url+"/keys?pool=gone", "")
	require.Equal(t, http.StatusOK, do(t, "DELETE", s.url+"/keys/"+gone.str("keyId"), "").status)

	for _, v := range claimVariants {
		for _, pool := range []string{"nowhere", "gone"} {
			query := "/keys?pool=" + pool + v.query
			if v.wait {
				query += "&wait=30s"
			}
			start := time.Now()
			r := do(t, "GET", s.url+query, "", v.headers...)
			requireProblem(t, r, http.StatusNotFound, "unknown_pool")
			require.Contains(t, r.str("detail"), `"`+pool+`"`, "the detail names the pool")
			require.Less(t, time.Since(start), 5*time.Second, "%s on pool %s answered at once", v.name, pool)
		}
		query := "/keys?pool=held" + v.query
		if v.wait {
			query += "&wait=100ms"
		}
		requireProblem(t, do(t, "GET", s.url+query, "", v.headers...), http.StatusNotFound, "no_free_key")
	}
}

// A pool whose last key is deleted while a client waits for one is unknown
// when the wait ends: no_free_key always means that the pool has keys.
func TestWaitOnAPoolThatLosesItsKeysEndsWithUnknownPool(t *testing.T) {
	t.Parallel()
	s := newServer(t, testdb.New(t), options{poll: noPoll})
	for i, v := range claimVariants {
		if !v.wait {
			continue
		}
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			pool := fmt.Sprintf("vanishing-%d", i)
			require.Equal(t, http.StatusCreated, do(t, "POST", s.url+"/keys?pool="+pool, `{"keys": [{"labels": {"tier": "paid"}}]}`).status)
			key := do(t, "GET", s.url+"/keys?pool="+pool, "")
			require.Equal(t, http.StatusOK, key.status, key.raw)
			got := make(chan reply, 1)
			go func() { got <- do(t, "GET", s.url+"/keys?pool="+pool+v.query+"&wait=1s", "", v.headers...) }()
			time.Sleep(200 * time.Millisecond) // the claim waits
			require.Equal(t, http.StatusOK, do(t, "DELETE", s.url+"/keys/"+key.str("keyId"), "").status)
			requireProblem(t, <-got, http.StatusNotFound, "unknown_pool")
		})
	}
}
