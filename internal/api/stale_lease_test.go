package api_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

// Client A's lease runs out and the background job gives the key to client
// B. A comes back late: its release and both keep-alives, with its token in
// If-Match or in the query, answer 409 and leave B's lease as it was; B
// then keeps its lease alive and releases it with its own token.
//
// A's replica grants short leases and runs the background job; B leases
// through a replica of long leases on the same database, so that B's lease
// cannot run out while the test looks at it.
func TestLateHolderCannotTouchTheNextLease(t *testing.T) {
	t.Parallel()
	dbURL := testdb.New(t)
	short := newServer(t, dbURL, options{leaseTTL: 300 * time.Millisecond, sweep: 50 * time.Millisecond})
	long := newServer(t, dbURL, options{leaseTTL: time.Hour})

	id := do(t, "POST", short.url+"/keys?pool=late", "").str("keyId")
	a := do(t, "GET", short.url+"/keys?pool=late", "")
	require.Equal(t, http.StatusOK, a.status, a.raw)
	aToken := a.str("leaseToken")

	// B waits for the key: it is free again only once A's lease has ended
	// and the background job has released it.
	b := do(t, "GET", long.url+"/keys?pool=late&wait=30s", "")
	require.Equal(t, http.StatusOK, b.status, b.raw)
	require.Equal(t, id, b.str("keyId"))
	bToken := b.str("leaseToken")
	require.NotEqual(t, aToken, bToken)
	var ended string
	require.NoError(t, short.pool.QueryRow(context.Background(),
		"SELECT event FROM key_events WHERE key_id = $1 AND lease_token = $2 AND event <> 'assigned'", id, aToken).Scan(&ended))
	require.Equal(t, "lease_expired", ended, "A's lease ran out; nobody released it")

	before := do(t, "GET", long.url+"/keys/"+id, "")
	require.Equal(t, true, before.body["isBlocked"])
	for _, s := range []*testServer{short, long} {
		for _, path := range []string{"/keys/" + id, "/keys/" + id + "/keepalive", "/keepalive/" + id} {
			requireProblem(t, do(t, "PUT", s.url+path, "", "If-Match", `"`+aToken+`"`), http.StatusConflict, "lease_mismatch")
			requireProblem(t, do(t, "PUT", s.url+path+"?lease="+aToken, ""), http.StatusConflict, "lease_mismatch")
		}
	}
	after := do(t, "GET", long.url+"/keys/"+id, "")
	require.Equal(t, before.body, after.body, "B's lease is untouched: still held, same deadline, same last keep-alive")
	var bEvents int
	require.NoError(t, short.pool.QueryRow(context.Background(),
		"SELECT count(*) FROM key_events WHERE key_id = $1 AND lease_token = $2", id, bToken).Scan(&bEvents))
	require.Equal(t, 1, bEvents, "the history of B's lease holds its claim only")

	kept := do(t, "PUT", long.url+"/keepalive/"+id, "", "If-Match", `"`+bToken+`"`)
	require.Equal(t, http.StatusOK, kept.status, kept.raw)
	released := do(t, "PUT", long.url+"/keys/"+id+"?lease="+bToken, "")
	require.Equal(t, http.StatusOK, released.status, released.raw)
	require.Equal(t, false, released.body["isBlocked"])
}

// An empty If-Match names no lease: it is refused, and never taken for a
// request without a token that would release or extend the current
// holder's lease.
func TestEmptyIfMatchIsRefused(t *testing.T) {
	t.Parallel()
	srv := newServer(t, testdb.New(t), options{})
	require.Equal(t, http.StatusCreated, do(t, "POST", srv.url+"/keys?pool=e", "").status)
	held := do(t, "GET", srv.url+"/keys?pool=e", "")
	require.Equal(t, http.StatusOK, held.status, held.raw)
	for _, path := range []string{"/keys/" + held.str("keyId"), "/keys/" + held.str("keyId") + "/keepalive", "/keepalive/" + held.str("keyId")} {
		for _, tag := range []string{`""`, `W/""`} {
			requireProblem(t, do(t, "PUT", srv.url+path, "", "If-Match", tag), http.StatusBadRequest, "invalid_parameter")
		}
	}
	after := do(t, "GET", srv.url+"/keys/"+held.str("keyId"), "")
	require.Equal(t, true, after.body["isBlocked"], "the holder's lease is untouched")
	require.Nil(t, after.body["lastKeepAliveAt"])
}
