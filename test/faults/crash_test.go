package faults

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/pgembed"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/loadgen"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

// A replica killed with SIGKILL while it holds leases: the other replicas'
// background job releases those leases within LEASE_TTL + SWEEP_INTERVAL,
// and their own clients see no error meanwhile.
func TestKilledReplicasLeasesAreReleased(t *testing.T) {
	t.Parallel()
	const leaseTTL, sweep = 2 * time.Second, 200 * time.Millisecond
	settings := []string{"LEASE_TTL=" + leaseTTL.String(), "SWEEP_INTERVAL=" + sweep.String()}
	dbURL := testdb.New(t)
	doomed := startReplica(t, dbURL, settings...)
	b := startReplica(t, dbURL, settings...)
	c := startReplica(t, dbURL, settings...)
	require.Equal(t, http.StatusCreated, call("POST", b.url+"/keys?pool=held", `{"count": 5}`).status)
	require.Equal(t, http.StatusCreated, call("POST", b.url+"/keys?pool=work", `{"count": 20}`).status)
	// The survivors' own leases last longer than the killed replica's: on a
	// machine busy enough to stall a client for LEASE_TTL between its claim
	// and its release, the job would rightly end that lease and the client
	// would see a 409 that says nothing about the crash.
	require.Equal(t, http.StatusOK, call("PUT", b.url+"/pools/work", `{"leaseTTL": "1m"}`).status)

	// The survivors' clients work through the crash.
	type outcome struct {
		res loadgen.Result
		err error
	}
	survivors := make(chan outcome, 1)
	go func() {
		res, err := loadgen.Run(context.Background(), loadgen.Config{
			Servers: urls(b, c), Pool: "work", Clients: 16, Duration: leaseTTL + 3*time.Second, KeepAlive: true,
		})
		survivors <- outcome{res, err}
	}()

	var held []string
	for range 5 {
		got := call("GET", doomed.url+"/keys?pool=held", "")
		require.Equal(t, http.StatusOK, got.status)
		held = append(held, got.str("keyId"))
	}
	claimed := time.Now()
	doomed.kill()

	for _, id := range held {
		for {
			info := call("GET", b.url+"/keys/"+id, "")
			require.NoError(t, info.err)
			if info.body["isBlocked"] == false {
				break
			}
			// The deadline, plus a margin for the pass itself, this poll, and
			// a busy machine.
			require.Less(t, time.Since(claimed), leaseTTL+sweep+2*time.Second, "lease of %s not released", id)
			time.Sleep(20 * time.Millisecond)
		}
	}
	t.Logf("all 5 leases of the killed replica released %s after they were taken (LEASE_TTL %s, SWEEP_INTERVAL %s)",
		time.Since(claimed).Round(time.Millisecond), leaseTTL, sweep)
	out := <-survivors
	require.NoError(t, out.err, "the survivors' clients saw an error")
	require.Positive(t, out.res.Cycles)
	checkHistory(t, dbURL, claimed.Add(-time.Minute))
}

// The database stops (immediate shutdown) in the middle of a load and
// starts again. While it is down, requests answer 503 with Retry-After
// within DB_TIMEOUT, never hang, never crash a replica; within a few seconds
// of its return every replica serves again without a restart; no create
// that was acknowledged is lost; no key is held twice.
func TestDatabaseRestartUnderLoad(t *testing.T) {
	t.Parallel()
	cluster, cfg := ownCluster(t)
	dbURL := cluster.URL()

	const dbTimeout = time.Second
	settings := []string{"DB_TIMEOUT=" + dbTimeout.String(), "LEASE_TTL=30s", "SWEEP_INTERVAL=200ms"}
	replicas := []*replica{startReplica(t, dbURL, settings...), startReplica(t, dbURL, settings...)}
	start := time.Now()
	load := startOutageLoad(t, replicas, 8)

	time.Sleep(2 * time.Second)
	require.NoError(t, cluster.StopImmediate())
	down := time.Now()
	servedBefore := load.served[0].Load() + load.served[1].Load()
	time.Sleep(2 * time.Second)
	require.Positive(t, load.unavailable.Load(), "requests during the outage answered 503")
	for _, r := range replicas {
		got := call("GET", r.url+"/readyz", "")
		require.Equal(t, http.StatusServiceUnavailable, got.status, "not ready without a database")
	}

	cluster, err := pgembed.Start(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = cluster.Stop() })
	restarted := time.Now()
	for _, r := range replicas {
		for call("GET", r.url+"/readyz", "").status != http.StatusOK {
			require.Less(t, time.Since(restarted), 10*time.Second, "replica %s did not recover", r.url)
			time.Sleep(50 * time.Millisecond)
		}
	}
	recovered := time.Since(restarted)
	servedDuringOutage := load.served[0].Load() + load.served[1].Load() - servedBefore
	time.Sleep(2 * time.Second) // load after the return
	load.finish(t, dbTimeout+2*time.Second)
	t.Logf("down %s; %d answers 503; %d served (some just before the stop); replicas ready %s after the restart; slowest answer %s",
		restarted.Sub(down).Round(time.Millisecond), load.unavailable.Load(), servedDuringOutage, recovered.Round(time.Millisecond),
		time.Duration(load.slowest.Load()).Round(time.Millisecond))
	checkHistory(t, dbURL, start)
}

// leading reads whether a replica says it leads the background job.
func leading(t *testing.T, r *replica) bool {
	t.Helper()
	resp, err := httpClient.Get(r.url + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return strings.Contains(string(raw), "\ntokenorchestrator_sweeper_leading 1\n")
}

// With leader election, one replica of three runs the background job; when
// it is killed, another takes over within the leader's term and a third,
// and the killed leader's leases are still released.
func TestLeaderDiesAnotherTakesOver(t *testing.T) {
	t.Parallel()
	const ttl = time.Second
	settings := []string{"LEADER_ELECTION=true", "LEADER_TTL=" + ttl.String(), "LEASE_TTL=1s", "SWEEP_INTERVAL=100ms"}
	dbURL := testdb.New(t)
	replicas := []*replica{startReplica(t, dbURL, settings...), startReplica(t, dbURL, settings...), startReplica(t, dbURL, settings...)}

	var leader *replica
	for deadline := time.Now().Add(5 * time.Second); leader == nil; {
		require.True(t, time.Now().Before(deadline), "nobody leads")
		count := 0
		for _, r := range replicas {
			if leading(t, r) {
				leader = r
				count++
			}
		}
		require.LessOrEqual(t, count, 1, "two replicas lead at once")
		time.Sleep(50 * time.Millisecond)
	}
	require.Equal(t, http.StatusCreated, call("POST", leader.url+"/keys?pool=l", `{"count": 2}`).status)
	for range 2 {
		require.Equal(t, http.StatusOK, call("GET", leader.url+"/keys?pool=l", "").status)
	}
	leader.kill()
	killed := time.Now()

	var survivors []*replica
	for _, r := range replicas {
		if r != leader {
			survivors = append(survivors, r)
		}
	}
	for {
		count := 0
		for _, r := range survivors {
			if leading(t, r) {
				count++
			}
		}
		require.LessOrEqual(t, count, 1, "two replicas lead at once")
		if count == 1 {
			break
		}
		require.Less(t, time.Since(killed), ttl+ttl/3+time.Second, "no replica took over")
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("a new leader %s after the leader was killed (LEADER_TTL %s)", time.Since(killed).Round(time.Millisecond), ttl)
	for call("HEAD", survivors[0].url+"/keys?pool=l", "").header.Get("X-Pool-Free") != "2" {
		require.Less(t, time.Since(killed), 5*time.Second, "the killed leader's leases were not released")
		time.Sleep(50 * time.Millisecond)
	}
}
