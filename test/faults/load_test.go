package faults

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/loadgen"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

// checkHistory asserts what the history must say after any run: no two
// leases of a key overlapped, and every key ever created still exists or
// has a recorded deletion or expiry.
func checkHistory(t *testing.T, dbURL string, since time.Time) map[string]int64 {
	t.Helper()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, dbURL)
	require.NoError(t, err)
	defer pool.Close()
	audit, err := store.New(pool, store.Config{}).AuditHistory(ctx, since)
	require.NoError(t, err)
	require.Empty(t, audit.Overlaps, "leases of one key overlapped")
	var live int64
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM keys").Scan(&live))
	require.Equal(t, audit.Events["created"], live+audit.Events["deleted"]+audit.Events["expired"],
		"every key created still exists or was deleted or expired")
	return audit.Events
}

// Three server processes on one database, 64 clients spread over them doing
// claim / keep-alive / release cycles for 20 seconds: no key is ever held by
// two clients (checked on every claim by the load generator, and afterwards
// from the history), and no key is lost.
func TestThreeReplicasUnderLoad(t *testing.T) {
	t.Parallel()
	dbURL := testdb.New(t)
	a := startReplica(t, dbURL, "LEASE_TTL=5s", "SWEEP_INTERVAL=200ms")
	b := startReplica(t, dbURL, "LEASE_TTL=5s", "SWEEP_INTERVAL=200ms")
	c := startReplica(t, dbURL, "LEASE_TTL=5s", "SWEEP_INTERVAL=200ms")
	start := time.Now()
	const keys = 48
	created := call("POST", a.url+"/keys?pool=load", fmt.Sprintf(`{"count": %d}`, keys))
	require.Equal(t, http.StatusCreated, created.status)

	res, err := loadgen.Run(context.Background(), loadgen.Config{
		Servers: urls(a, b, c), Pool: "load", Clients: 64, Duration: 20 * time.Second, KeepAlive: true,
	})
	require.NoError(t, err)
	require.Zero(t, res.DoubleClaims)
	t.Logf("3 replicas, 64 clients, %d keys: %d cycles in %s (%.0f/s), claim p50 %s p99 %s, %d claims found no key",
		keys, res.Cycles, res.Elapsed.Round(time.Millisecond), res.CyclesPerSecond(),
		res.ClaimPercentile(50), res.ClaimPercentile(99), res.Empty)

	events := checkHistory(t, dbURL, start)
	require.EqualValues(t, keys, events["created"])
	require.Equal(t, res.Cycles, events["assigned"], "one claim per cycle")
	require.Equal(t, res.Cycles, events["released"], "one release per cycle")
	require.Zero(t, events["lease_expired"], "every lease was released by its holder")
	stats := call("HEAD", b.url+"/keys?pool=load", "")
	require.Equal(t, fmt.Sprint(keys), stats.header.Get("X-Pool-Free"), "every key is free again")
}
