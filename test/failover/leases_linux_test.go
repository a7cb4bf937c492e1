package failover

import (
	"context"
	"testing"
	"time"

	goclient "github.com/tokenorchestrator/tokenorchestrator/client"
)

// The Go client's leases of ridePool are held across every fault of a run.
// Their life is shorter than the run and longer than any outage, so they
// are still held at its end only if the client's keep-alives rode each
// outage out, and lost only if one was. The client keeps a lease alive a
// third of its life after the last keep-alive, so a lease outlives an
// outage that starts just before a keep-alive is due only if the outage is
// shorter than two thirds of its life: 40 s for a minute, against 28 s for
// the slowest kill -9 failover seen (a CI machine; 24 s here).
const (
	ridePool     = "ride-through"
	rideLeaseTTL = time.Minute
)

// holdLeases claims two leases through each replica with the Go client,
// which keeps them alive in the background.
func holdLeases(t *testing.T, replicas []*replica) []*goclient.Lease {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin, err := goclient.New(replicas[len(replicas)-1].url)
	if err != nil {
		fatalf(t, "%v", err)
	}
	ttl := rideLeaseTTL
	if _, err := admin.PutPool(ctx, ridePool, goclient.Policy{LeaseTTL: &ttl}); err != nil {
		fatalf(t, "%v", err)
	}
	if _, err := admin.CreateKeys(ctx, ridePool, 2*len(replicas)); err != nil {
		fatalf(t, "%v", err)
	}
	var leases []*goclient.Lease
	for _, r := range replicas {
		c, err := goclient.New(r.url)
		if err != nil {
			fatalf(t, "%v", err)
		}
		for range 2 {
			l, err := c.Claim(ctx, ridePool)
			if err != nil {
				fatalf(t, "%v", err)
			}
			leases = append(leases, l)
		}
	}
	t.Cleanup(func() {
		for _, l := range leases {
			_ = l.Release(context.Background())
		}
	})
	return leases
}

// checkLeases reports each lease the client lost or could not release:
// an error where nothing acknowledged may be lost (synchronous
// replication), a line of the log otherwise.
func checkLeases(t *testing.T, leases []*goclient.Lease, mustHold bool) {
	t.Helper()
	report := t.Logf
	if mustHold {
		report = func(format string, args ...any) { t.Helper(); errorf(t, format, args...) }
	}
	held := 0
	for _, l := range leases {
		select {
		case <-l.Lost():
			report("the Go client lost lease %s of key %s: %v", l.Token(), l.ID(), l.Err())
			continue
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := l.Release(ctx)
		cancel()
		if err != nil {
			report("the Go client's release of lease %s of key %s: %v", l.Token(), l.ID(), err)
			continue
		}
		held++
	}
	t.Logf("the Go client held %d of %d leases of %s (lease %s) through every fault, and released them",
		held, len(leases), rideLeaseTTL, ridePool)
}
