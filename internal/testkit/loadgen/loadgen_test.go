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
	"github.com/tokenorchestrator/tokenorchestrator/internal/claim"
	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
	"github.com/tokenorchestrator/tokenorchestrator/internal/wakeup"
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
		logger := slog.New(slog.NewTextHandler(io.Discard, nil))
		waiters := wakeup.New(st, wakeup.Config{Logger: logger})
		claims := claim.New(claim.Config{Store: st, Waiters: waiters})
		srv := httptest.NewServer(api.New(api.Config{Store: st, Logger: logger, Claims: claims}))
		t.Cleanup(srv.Close)
		servers = append(servers, srv.URL)
	}
	_, err := first.Create(context.Background(), "smoke", 50)
	require.NoError(t, err)

	res, err := Run(context.Background(), Config{Servers: servers, Pool: "smoke", Clients: 16, Duration: time.Second, KeepAlive: true})
	require.NoError(t, err)
	require.Positive(t, res.Cycles)
	require.Zero(t, res.DoubleClaims)
	require.Len(t, res.ClaimLatencies, int(res.Cycles))
	require.LessOrEqual(t, res.ClaimPercentile(50), res.ClaimPercentile(99))

	// Every cycle released its key (a claim cut short by the end of the run
	// is released by the server).
	require.Eventually(t, func() bool {
		counts, err := first.CountPool(context.Background(), "smoke")
		return err == nil && counts.Held == 0
	}, 5*time.Second, 20*time.Millisecond)
}

// The load generator notices a server that claims a key held by another
// worker.
func TestRunFailsOnDoubleClaim(t *testing.T) {
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
	require.Positive(t, res.DoubleClaims)
}

// Cycles land in the window in which they finished; a last window cut short
// by the end of the run has its own length, and cycles finishing after the
// planned end are left out.
func TestWindows(t *testing.T) {
	t.Parallel()
	ms := time.Millisecond
	got := windows([]cycle{
		{done: 5 * ms, claim: 3 * ms},
		{done: 9 * ms, claim: 1 * ms},
		{done: 10 * ms, claim: 7 * ms}, // the second window's first instant
		{done: 24 * ms, claim: 2 * ms},
		{done: 25 * ms, claim: 9 * ms}, // after the end
	}, 10*ms, 25*ms)
	require.Len(t, got, 3)
	require.Equal(t, Window{Start: 0, Length: 10 * ms, Cycles: 2, ClaimLatencies: []time.Duration{1 * ms, 3 * ms}}, got[0])
	require.Equal(t, Window{Start: 10 * ms, Length: 10 * ms, Cycles: 1, ClaimLatencies: []time.Duration{7 * ms}}, got[1])
	require.Equal(t, Window{Start: 20 * ms, Length: 5 * ms, Cycles: 1, ClaimLatencies: []time.Duration{2 * ms}}, got[2])
	require.InDelta(t, 200.0, got[2].CyclesPerSecond(), 1e-9)
	require.Equal(t, 3*ms, got[0].ClaimPercentile(100))
	require.Equal(t, 1*ms, got[0].ClaimPercentile(0))

	require.Nil(t, windows(nil, 0, time.Second), "no window asked for")
	empty := windows(nil, 10*ms, 20*ms)
	require.Len(t, empty, 2)
	require.Zero(t, empty[1].Cycles)
	require.Zero(t, empty[1].ClaimPercentile(99))
}

// With a window set, a run's windows cover its planned duration and count
// the cycles that finished within it.
func TestRunWindows(t *testing.T) {
	t.Parallel()
	var next atomic.Int64
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Millisecond)
		if r.Method == http.MethodGet {
			fmt.Fprintf(w, `{"keyId":"k%d","leaseToken":"1"}`, next.Add(1))
			return
		}
		fmt.Fprint(w, `{}`)
	}))
	defer fake.Close()
	res, err := Run(context.Background(), Config{Servers: []string{fake.URL}, Pool: "p", Clients: 4, Duration: 500 * time.Millisecond, Window: 100 * time.Millisecond})
	require.NoError(t, err)
	require.False(t, res.Started.IsZero())
	require.Len(t, res.Windows, 5)
	var inWindows int64
	for i, w := range res.Windows {
		require.Equal(t, time.Duration(i)*100*time.Millisecond, w.Start)
		require.Len(t, w.ClaimLatencies, int(w.Cycles))
		inWindows += w.Cycles
	}
	require.Positive(t, inWindows)
	// Cycles that finished after the planned end are left out (the run's
	// timer may fire late on a busy machine, so no bound on how many).
	require.LessOrEqual(t, inWindows, res.Cycles)
}
