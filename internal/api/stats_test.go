package api_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

// GET /stats counts the keys about to expire up to 1,000 of them, in the
// order they expire, and says when there are more: every key of a large
// pool of a short key life is about to expire, and the dashboard polls
// /stats every two seconds.
func TestStatsCountsKeysAboutToExpireUpToACap(t *testing.T) {
	t.Parallel()
	dbURL := testdb.New(t)
	s := newServer(t, dbURL, options{})
	soon := newServer(t, dbURL, options{keyTTL: 40 * time.Second})
	later := newServer(t, dbURL, options{keyTTL: 55 * time.Second})
	stats := func() reply {
		r := do(t, "GET", s.url+"/stats", "")
		require.Equal(t, http.StatusOK, r.status, r.raw)
		return r
	}
	expiring := func(r reply) map[string]float64 {
		counts := map[string]float64{}
		for _, p := range r.body["pools"].([]any) {
			p := p.(map[string]any)
			counts[p["pool"].(string)] = p["expiringWithinMinute"].(float64)
		}
		counts["total"] = r.body["total"].(map[string]any)["expiringWithinMinute"].(float64)
		return counts
	}

	// Exactly as many as the cap: every one counted, and no more.
	require.Equal(t, http.StatusCreated, do(t, "POST", soon.url+"/keys?pool=soon", `{"count": 999}`).status)
	require.Equal(t, http.StatusCreated, do(t, "POST", later.url+"/keys?pool=later", "").status)
	require.Equal(t, http.StatusCreated, do(t, "POST", s.url+"/keys?pool=stays", "").status)
	r := stats()
	require.Equal(t, map[string]float64{"soon": 999, "later": 1, "stays": 0, "total": 1000}, expiring(r))
	require.Equal(t, false, r.body["expiringWithinMinuteCapped"])

	// One more that expires before the key of pool later: the first 1,000
	// to expire are counted, the key of later is not, and the answer says
	// that there are more.
	require.Equal(t, http.StatusCreated, do(t, "POST", soon.url+"/keys?pool=soon", "").status)
	r = stats()
	require.Equal(t, map[string]float64{"soon": 1000, "later": 0, "stays": 0, "total": 1000}, expiring(r))
	require.Equal(t, true, r.body["expiringWithinMinuteCapped"])
}
