package api_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

// A key released with a cooldown is not served to a waiter before the
// cooldown is over, and then it is, woken by the end of the cooldown (the
// background job runs on one replica, the waiter on another that never
// polls).
func TestWaiterIsWokenWhenACooldownEnds(t *testing.T) {
	t.Parallel()
	dbURL := testdb.New(t)
	job := newServer(t, dbURL, options{poll: noPoll, sweep: 20 * time.Millisecond})
	waiting := newServer(t, dbURL, options{poll: noPoll})
	held := holdAll(t, job, "cool", 1)

	cooled := do(t, "PUT", job.url+"/keys/"+held[0].str("keyId")+"?cooldown=700ms", `{"cooldown": "700ms"}`,
		"If-Match", `"`+held[0].str("leaseToken")+`"`)
	require.Equal(t, http.StatusOK, cooled.status, cooled.raw)
	until, err := time.Parse(time.RFC3339Nano, cooled.str("coolingUntil"))
	require.NoError(t, err)
	require.False(t, cooled.body["isBlocked"].(bool))

	head := do(t, "HEAD", job.url+"/keys?pool=cool", "")
	require.Equal(t, "false", head.header.Get("X-Pool-Available"), "a cooling key is not available")

	got := do(t, "GET", waiting.url+"/keys?pool=cool&wait=10s", "")
	require.Equal(t, http.StatusOK, got.status, got.raw)
	require.Equal(t, held[0].str("keyId"), got.str("keyId"))
	claimedAt, err := time.Parse(time.RFC3339Nano, got.str("blockedAt"))
	require.NoError(t, err)
	require.False(t, claimedAt.Before(until), "claimed at %s, before the cooldown's end %s", claimedAt, until)

	requireProblem(t, do(t, "PUT", job.url+"/keys/"+got.str("keyId")+"?cooldown=24h1s", ""), http.StatusBadRequest, "invalid_parameter")
	requireProblem(t, do(t, "PUT", job.url+"/keys/"+got.str("keyId")+"?cooldown=-1s", ""), http.StatusBadRequest, "invalid_parameter")
	requireProblem(t, do(t, "PUT", job.url+"/keys/"+got.str("keyId")+"?cooldown=1s", `{"cooldown": "2s"}`), http.StatusBadRequest, "invalid_parameter")
	requireProblem(t, do(t, "PUT", job.url+"/keys/"+got.str("keyId"), `{"cooldown": 5}`), http.StatusBadRequest, "invalid_body")
	still := do(t, "GET", job.url+"/keys/"+got.str("keyId"), "")
	require.True(t, still.body["isBlocked"].(bool), "a refused cooldown changed nothing")
}
