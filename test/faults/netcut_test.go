package faults

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/netcut"
)

// The network between one replica and the database drops every packet for
// a while, then comes back, delivering what it held: the cut replica
// answers 503 within its DB_TIMEOUT meanwhile (never hangs, nor waits
// for one timeout after another), the other
// serves throughout, nothing acknowledged is lost, no two leases of a key
// overlap, and the cut replica serves again soon after the network does.
func TestNetworkCutToTheDatabase(t *testing.T) {
	t.Parallel()
	cluster, _ := ownCluster(t)
	dbURL := cluster.URL()
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	proxy := netcut.Start(t, u.Host)
	cutURL := *u
	cutURL.Host = fmt.Sprintf("127.0.0.1:%d", proxy.Port())

	const dbTimeout = 2 * time.Second
	settings := []string{"DB_TIMEOUT=" + dbTimeout.String(), "LEASE_TTL=30s", "SWEEP_INTERVAL=200ms"}
	cut := startReplica(t, cutURL.String(), settings...)
	other := startReplica(t, dbURL, settings...)
	start := time.Now()
	load := startOutageLoad(t, []*replica{cut, other}, 8)

	time.Sleep(2 * time.Second)
	proxy.Cut()
	cutAt := time.Now()
	time.Sleep(3 * dbTimeout)
	require.Equal(t, http.StatusServiceUnavailable, call("GET", cut.url+"/readyz", "").status, "the cut replica is not ready")
	servedBefore := load.served[1].Load()
	time.Sleep(time.Second)
	require.Greater(t, load.served[1].Load(), servedBefore, "the other replica serves during the cut")
	require.Positive(t, load.unavailable.Load(), "requests to the cut replica answered 503")

	proxy.Restore()
	restored := time.Now()
	servedAtRestore := load.served[0].Load()
	for load.served[0].Load() == servedAtRestore {
		require.Less(t, time.Since(restored), 4*dbTimeout, "the cut replica served nothing after the network came back")
		time.Sleep(10 * time.Millisecond)
	}
	back := time.Since(restored)
	time.Sleep(2 * time.Second) // load after the return
	// A request makes more than one call to the database at times, and
	// keep-alives and releases queue behind the batch in flight: the
	// request as a whole is still bounded by DB_TIMEOUT.
	load.finish(t, dbTimeout*3/2)
	t.Logf("cut %s; %d answers 503; the cut replica served again %s after the network came back; slowest answer %s",
		restored.Sub(cutAt).Round(time.Millisecond), load.unavailable.Load(), back.Round(time.Millisecond),
		time.Duration(load.slowest.Load()).Round(time.Millisecond))
	checkHistory(t, dbURL, start)
}
