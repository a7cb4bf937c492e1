package loadgen

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/api"
	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testdb"
)

func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }

// A short run against two real replicas on one database: the harness's
// smoke test. It measures nothing; it checks that cycles complete and that
// no key ends up held.
func TestRunAgainstTwoReplicas(t *testing.T) {
	t.Parallel()
	dbURL := testdb.New(t)
	var servers []string
	var first *store.Store
	for range 2 {
		pool, err := pgxpool.New(context.Background(), dbURL)
		require.NoError(t, err)
		t.Cleanup(pool.Close)
		st := store.New(pool, store.Config{KeyTTL: time.Hour, LeaseTTL: time.Hour})
		t.Cleanup(st.Close)
		if first == nil {
			first = st
		}
		srv := httptest.NewServer(api.New(api.Config{Store: st, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}))
		t.Cleanup(srv.Close)
		servers = append(servers, srv.URL)
	}
	_, err := first.Create(context.Background(), "smoke", 50)
	require.NoError(t, err)

	res, err := Run(context.Background(), Config{Servers: servers, Pool: "smoke", Clients: 16, Duration: time.Second, KeepAlive: true})
	require.NoError(t, err)
	require.Positive(t, res.Cycles)
	require.Zero(t, res.DoubleAssignments)
	require.Len(t, res.ClaimLatencies, int(res.Cycles))
	require.LessOrEqual(t, res.ClaimPercentile(50), res.ClaimPercentile(99))

	// Every cycle gave its key back (a claim cut short by the end of the run
	// is given back by the server).
	require.Eventually(t, func() bool {
		counts, err := first.CountPool(context.Background(), "smoke")
		return err == nil && counts.Blocked == 0
	}, 5*time.Second, 20*time.Millisecond)
}

// The load generator notices a server that hands out a key held by another
// worker.
func TestRunFailsOnDoubleAssignment(t *testing.T) {
	t.Parallel()
	var claims atomic.Int64
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			claims.Add(1)
			time.Sleep(time.Millisecond)
			fmt.Fprintf(w, `{"keyId":"always-the-same","leaseToken":"%d"}`, claims.Load())
			return
		}
		time.Sleep(2 * time.Millisecond) // hold the key a while
		fmt.Fprint(w, `{}`)
	}))
	defer broken.Close()
	res, err := Run(context.Background(), Config{Servers: []string{broken.URL}, Pool: "p", Clients: 8, Duration: 300 * time.Millisecond, KeepAlive: true})
	require.Error(t, err)
	require.Positive(t, res.DoubleAssignments)
}
