package api_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

// Over HTTP: a pool's policy gives its keys seats, a key is claimed up to
// its seats with a token per lease, the pool and the key count seats, and a
// release that names no lease of a key of several seats is refused.
func TestSeatsOverHTTP(t *testing.T) {
	t.Parallel()
	srv := newServer(t, testdb.New(t), options{secrets: testKeyring(t)})

	put := do(t, "PUT", srv.url+"/pools/shared", `{"seats": 2}`)
	require.Equal(t, http.StatusOK, put.status, put.raw)
	require.Equal(t, 2.0, put.body["effective"].(map[string]any)["seats"])
	created := do(t, "POST", srv.url+"/keys?pool=shared", "")
	require.Equal(t, http.StatusCreated, created.status, created.raw)
	require.Equal(t, 2.0, created.body["seats"])
	id := created.body["keyId"].(string)

	first := do(t, "GET", srv.url+"/keys?pool=shared", "")
	require.Equal(t, http.StatusOK, first.status, first.raw)
	second := do(t, "GET", srv.url+"/keys?pool=shared", "")
	require.Equal(t, http.StatusOK, second.status, second.raw)
	require.Equal(t, id, first.body["keyId"])
	require.Equal(t, id, second.body["keyId"])
	require.NotEqual(t, first.body["leaseToken"], second.body["leaseToken"])
	requireProblem(t, do(t, "GET", srv.url+"/keys?pool=shared", ""), http.StatusNotFound, "no_free_key")

	pool := do(t, "GET", srv.url+"/pools/shared", "")
	require.Equal(t, http.StatusOK, pool.status, pool.raw)
	require.Equal(t, []any{1.0, 2.0, 2.0, 0.0}, []any{pool.body["keys"], pool.body["seats"], pool.body["held"], pool.body["free"]})
	whole := do(t, "GET", srv.url+"/keys/"+id, "")
	require.Equal(t, 2.0, whole.body["seatsHeld"])
	require.Equal(t, true, whole.body["isBlocked"])
	require.Nil(t, whole.body["leaseExpiresAt"], "a key of several seats has a lease per seat")

	requireProblem(t, do(t, "PUT", srv.url+"/keys/"+id, ""), http.StatusPreconditionRequired, "lease_token_required")
	released := do(t, "PUT", srv.url+"/keys/"+id+"?lease="+first.body["leaseToken"].(string), "")
	require.Equal(t, http.StatusOK, released.status, released.raw)
	require.Equal(t, false, released.body["isBlocked"])
	// The other lease is untouched: read with its token, the key shows it.
	mine := do(t, "GET", srv.url+"/keys/"+id+"?lease="+second.body["leaseToken"].(string), "")
	require.Equal(t, http.StatusOK, mine.status, mine.raw)
	require.Equal(t, second.body["leaseExpiresAt"], mine.body["leaseExpiresAt"])
	require.Equal(t, true, mine.body["isBlocked"])
	whole = do(t, "GET", srv.url+"/keys/"+id, "")
	require.Equal(t, 1.0, whole.body["seatsHeld"])
	require.Equal(t, false, whole.body["isBlocked"])

	// Each lease ends with its own seat's end: the second, which began
	// before the first ended, ends with its own release, in the history.
	released = do(t, "PUT", srv.url+"/keys/"+id+"?lease="+second.body["leaseToken"].(string), "")
	require.Equal(t, http.StatusOK, released.status, released.raw)
	leases := do(t, "GET", srv.url+"/reports/leases?pool=shared", "")
	require.Equal(t, http.StatusOK, leases.status, leases.raw)
	require.Len(t, rows(leases), 2)
	for _, row := range rows(leases) {
		require.Equal(t, "released", row["endedBy"], row)
	}

	// Seats per key at creation and import; bad seats change nothing.
	batch := do(t, "POST", srv.url+"/keys", `{"pool": "shared", "count": 2, "seats": 5}`)
	require.Equal(t, http.StatusCreated, batch.status, batch.raw)
	require.Equal(t, 5.0, batch.body["keys"].([]any)[0].(map[string]any)["seats"])
	imported := do(t, "POST", srv.url+"/keys", `{"pool": "shared", "keys": [{"secret": "sk-shared-000000000001", "seats": 7}, {"secret": "sk-shared-000000000002"}]}`)
	require.Equal(t, http.StatusCreated, imported.status, imported.raw)
	keys := imported.body["keys"].([]any)
	require.Equal(t, 7.0, keys[0].(map[string]any)["seats"])
	require.Equal(t, 2.0, keys[1].(map[string]any)["seats"], "the policy's seats")
	for _, body := range []string{`{"pool": "shared", "seats": 0}`, `{"pool": "shared", "seats": 1001}`,
		`{"pool": "shared", "count": 200, "seats": 1000}`, `{"pool": "shared", "keys": [{"seats": 2}], "seats": 2}`,
		`{"pool": "shared", "keys": [{"seats": -1}]}`} {
		requireProblem(t, do(t, "POST", srv.url+"/keys", body), http.StatusBadRequest, "invalid_body")
	}
	pool = do(t, "GET", srv.url+"/pools/shared", "")
	require.Equal(t, []any{5.0, 2.0 + 10 + 7 + 2}, []any{pool.body["keys"], pool.body["seats"]}, "nothing more was created")
}
