package faults

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/pgembed"
)

// outageLoad is clients creating, claiming and releasing keys of pool "r"
// on the replicas in turn while the database goes away and comes back.
// Every answer must be a success or a 503 with Retry-After and its code.
type outageLoad struct {
	replicas     []*replica
	mu           sync.Mutex
	acknowledged []string
	unavailable  atomic.Int64
	slowest      atomic.Int64
	// served counts the successes per replica.
	served   []atomic.Int64
	failures chan string
	stop     chan struct{}
	wg       sync.WaitGroup
}

func startOutageLoad(t *testing.T, replicas []*replica, clients int) *outageLoad {
	t.Helper()
	require.Equal(t, http.StatusCreated, call("POST", replicas[0].url+"/keys?pool=r", `{"count": 20}`).status)
	l := &outageLoad{replicas: replicas, served: make([]atomic.Int64, len(replicas)),
		failures: make(chan string, 100), stop: make(chan struct{})}
	for w := range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				ri := (w + i) % len(replicas)
				r := replicas[ri]
				if created := call("POST", r.url+"/keys?pool=r", ""); l.check(ri, "create", created, http.StatusCreated) {
					l.mu.Lock()
					l.acknowledged = append(l.acknowledged, created.str("keyId"))
					l.mu.Unlock()
				}
				got := call("GET", r.url+"/keys?pool=r", "")
				if !l.check(ri, "claim", got, http.StatusOK, http.StatusNotFound) || got.status != http.StatusOK {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				// A release lost to the outage leaves the lease to run out;
				// no one else can hold the key meanwhile.
				l.check(ri, "release", call("PUT", r.url+"/keys/"+got.str("keyId")+"?lease="+got.str("leaseToken"), ""),
					http.StatusOK, http.StatusConflict)
			}
		}()
	}
	return l
}

// check counts the answer of replica ri, and reports whether it was one of
// the ok statuses.
func (l *outageLoad) check(ri int, what string, got answer, ok ...int) bool {
	l.slowest.Store(max(l.slowest.Load(), int64(got.elapsed)))
	what = fmt.Sprintf("%s on %s", what, l.replicas[ri].url)
	switch {
	case got.err != nil:
		l.failures <- fmt.Sprintf("%s: %v", what, got.err)
	case got.status == http.StatusServiceUnavailable:
		if got.header.Get("Retry-After") == "" || got.str("code") != "database_unavailable" {
			l.failures <- fmt.Sprintf("%s: 503 without Retry-After or code: %v", what, got.body)
		}
		l.unavailable.Add(1)
		return false
	default:
		for _, status := range ok {
			if got.status == status {
				l.served[ri].Add(1)
				return true
			}
		}
		l.failures <- fmt.Sprintf("%s: status %d: %v", what, got.status, got.body)
	}
	return false
}

// finish stops the clients and fails the test on every bad answer, and on
// an answer slower than bound: a request that hung.
func (l *outageLoad) finish(t *testing.T, bound time.Duration) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	close(l.failures)
	for f := range l.failures {
		t.Error(f)
	}
	require.Less(t, time.Duration(l.slowest.Load()), bound, "a request hung")
	for _, r := range l.replicas {
		select {
		case <-r.done:
			t.Fatalf("replica %s died", r.url)
		default:
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	require.NotEmpty(t, l.acknowledged)
	for _, id := range l.acknowledged {
		require.Equal(t, http.StatusOK, call("GET", l.replicas[0].url+"/keys/"+id, "").status, "acknowledged key %s is lost", id)
	}
}

// ownCluster starts a throwaway cluster of the test's own, never the
// shared server, which the test may stop and start.
func ownCluster(t *testing.T) (*pgembed.Cluster, pgembed.Config) {
	t.Helper()
	dir, err := os.MkdirTemp("", "faults-pg-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o755))
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := pgembed.Config{DataDir: filepath.Join(dir, "data"), Port: freePort(t)}
	cluster, err := pgembed.Start(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = cluster.Stop() })
	return cluster, cfg
}
