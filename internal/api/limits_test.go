package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

// maxBody is the largest body the API reads (64 KiB).
const maxBody = 64 << 10

// The limits on what one request may ask: a body of at most 64 KiB, at
// most 10000 keys in one batch, a wait of at most 60 seconds. Each is
// checked at its edge: the limit itself is served, one step past it is
// refused and changes nothing.
func TestRequestLimits(t *testing.T) {
	t.Parallel()
	s := newServer(t, testdb.New(t), options{})

	body := `{"count": 1, "pool": "limits"}`
	atLimit := body + strings.Repeat(" ", maxBody-len(body))
	require.Len(t, atLimit, maxBody)
	r := do(t, "POST", s.url+"/keys", atLimit)
	require.Equal(t, http.StatusCreated, r.status, r.raw)
	requireProblem(t, do(t, "POST", s.url+"/keys", atLimit+" "), http.StatusRequestEntityTooLarge, "body_too_large")
	requireProblem(t, do(t, "POST", s.url+"/keys", `{"count": 10001, "pool": "limits"}`), http.StatusBadRequest, "invalid_body")

	// A free key is there, so a wait at the limit answers at once.
	for _, wait := range []string{"60s", "60", "1m", "59.999", "0"} {
		r := do(t, "GET", s.url+"/keys?pool=limits&wait="+wait, "")
		require.Equal(t, http.StatusOK, r.status, "wait=%s: %s", wait, r.raw)
		release(t, s, r)
	}
	for _, wait := range []string{"60.001s", "61", "60.5", "2m", "1h", "1e300", "-1", "-0.5s", "NaN", "Inf", "-Inf", "+Inf", "9223372036854775807", "99999999999h"} {
		requireProblem(t, do(t, "GET", s.url+"/keys?pool=limits&wait="+wait, ""), http.StatusBadRequest, "invalid_parameter")
	}

	head := do(t, "HEAD", s.url+"/keys?pool=limits", "")
	require.Equal(t, "1", head.header.Get("X-Pool-Keys"), "only the request at the limit created a key")
	require.Equal(t, "1", head.header.Get("X-Pool-Free"), "no refused wait holds a key")
}
