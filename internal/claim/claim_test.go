package claim_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/claim"
	"github.com/tokenorchestrator/tokenorchestrator/internal/lease"
	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
	"github.com/tokenorchestrator/tokenorchestrator/internal/wakeup"
)

func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }

// label is carried by every key the tests create, so that a labelled
// waiter may take any of them.
const label = "tier=paid"

// kinds are the three kinds of claim; request builds the claim of client i
// on the pool, which for an idempotent claim has a key of its own.
var kinds = []struct {
	name    string
	request func(pool string, i int) claim.Request
}{
	{"plain", func(pool string, _ int) claim.Request { return claim.Request{Pool: pool} }},
	{"labelled", func(pool string, _ int) claim.Request { return claim.Request{Pool: pool, Labels: []string{label}} }},
	{"idempotent", func(pool string, i int) claim.Request {
		return claim.Request{Pool: pool, IdempotencyKey: fmt.Sprintf("%s-%d", pool, i)}
	}},
}

// bundle is one replica's claim service over a test database.
type bundle struct {
	store  *store.Store
	hub    *wakeup.Hub
	claims *claim.Service
}

// setup gives the test a replica over its own database.
func setup(t *testing.T, cfg wakeup.Config) *bundle {
	t.Helper()
	return replica(t, testdb.New(t), cfg)
}

// replica is a claim service over the database, its hub listening for
// freed keys; without a Poll in cfg, only a notification wakes a waiter.
func replica(t *testing.T, dbURL string, cfg wakeup.Config) *bundle {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), dbURL)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	st := store.New(pool, store.Config{KeyTTL: time.Hour, LeaseTTL: time.Hour})
	t.Cleanup(st.Close)
	if cfg.Poll == 0 {
		cfg.Poll = time.Hour
	}
	// Claims of a hub that outlive the test's database fail, and say so.
	cfg.Logger = slog.New(slog.DiscardHandler)
	hub := wakeup.New(st, cfg)
	require.NoError(t, hub.Start(context.Background()))
	t.Cleanup(hub.Stop)
	return &bundle{store: st, hub: hub, claims: claim.New(claim.Config{Store: st, Waiters: hub})}
}

// hold creates n labelled keys in the pool and claims them all.
func (b *bundle) hold(t *testing.T, pool string, n int) []lease.Key {
	t.Helper()
	keys := make([]store.NewKey, n)
	for i := range keys {
		keys[i].Labels = map[string]string{"tier": "paid"}
	}
	_, err := b.store.Import(context.Background(), pool, keys, store.ImportOptions{})
	require.NoError(t, err)
	held := make([]lease.Key, n)
	for i := range held {
		held[i], err = b.store.Claim(context.Background(), pool)
		require.NoError(t, err)
	}
	return held
}

func (b *bundle) release(t *testing.T, key lease.Key) {
	t.Helper()
	_, err := b.store.Release(context.Background(), key.ID, key.LeaseToken)
	require.NoError(t, err)
}

// outcome is what a claim answered.
type outcome struct {
	key      lease.Key
	replayed bool
	err      error
}

// start runs the claim in the background; it leaves when the test ends.
func (b *bundle) start(t *testing.T, req claim.Request) <-chan outcome {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	answer := make(chan outcome, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		key, replayed, err := b.claims.Claim(ctx, req)
		answer <- outcome{key, replayed, err}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return answer
}

// waiting waits until n clients wait on the replica.
func (b *bundle) waiting(t *testing.T, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return b.hub.Waiters() == n }, 10*time.Second, time.Millisecond)
}

// answered returns the claim's answer, failing the test if it takes long.
func answered(t *testing.T, answer <-chan outcome) outcome {
	t.Helper()
	select {
	case o := <-answer:
		return o
	case <-time.After(10 * time.Second):
		t.Fatal("the claim was not answered")
		return outcome{}
	}
}

// When the hub closes (the replica shuts down), a waiting claim of every
// kind is answered ErrClosed at once, and so is a new one while no key is
// free; a key free at once is still handed out.
func TestShutdownAnswersEveryKindOfWait(t *testing.T) {
	t.Parallel()
	for _, kind := range kinds {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, wakeup.Config{})
			held := b.hold(t, "closing", 1)
			req := kind.request("closing", 0)
			req.Wait = time.Minute
			answer := b.start(t, req)
			b.waiting(t, 1)

			closed := time.Now()
			b.hub.Close()
			require.ErrorIs(t, answered(t, answer).err, claim.ErrClosed)
			require.Less(t, time.Since(closed), 2*time.Second, "answered at once")

			req = kind.request("closing", 1)
			req.Wait = 30 * time.Second
			_, _, err := b.claims.Claim(context.Background(), req)
			require.ErrorIs(t, err, claim.ErrClosed)

			b.release(t, held[0])
			key, _, err := b.claims.Claim(context.Background(), req)
			require.NoError(t, err)
			require.Equal(t, held[0].ID, key.ID)
		})
	}
}

// MAX_WAITERS holds for every kind of wait, whichever kind came first, and
// MAX_WAITED_POOLS too; a claim refused waits for nothing.
func TestCapsHoldForEveryKindOfWait(t *testing.T) {
	t.Parallel()
	dbURL := testdb.New(t)
	for _, first := range kinds {
		for _, second := range kinds {
			pool := "caps-" + first.name + "-" + second.name
			b := replica(t, dbURL, wakeup.Config{MaxWaiters: 1})
			b.hold(t, pool, 1)
			req := first.request(pool, 0)
			req.Wait = time.Minute
			b.start(t, req)
			b.waiting(t, 1)
			req = second.request(pool, 1)
			req.Wait = time.Minute
			start := time.Now()
			_, _, err := b.claims.Claim(context.Background(), req)
			require.ErrorIs(t, err, claim.ErrTooManyWaiters, "%s after %s", second.name, first.name)
			require.Less(t, time.Since(start), 5*time.Second, "refused at once")

			pools := replica(t, dbURL, wakeup.Config{MaxPools: 1})
			pools.hold(t, pool+"-a", 1)
			pools.hold(t, pool+"-b", 1)
			req = first.request(pool+"-a", 0)
			req.Wait = time.Minute
			pools.start(t, req)
			pools.waiting(t, 1)
			req = second.request(pool+"-b", 1)
			req.Wait = time.Minute
			_, _, err = pools.claims.Claim(context.Background(), req)
			require.ErrorIs(t, err, claim.ErrTooManyPools, "%s after %s", second.name, first.name)
		}
	}
}

// Waiters are served in the order they came, whatever their kind: keys
// freed one by one go to the earliest waiter that may take them, here any,
// as every key carries the label. An idempotent waiter's lease is recorded
// under its key.
func TestWaitersAreServedInArrivalOrder(t *testing.T) {
	t.Parallel()
	const waiters = 4
	cases := append([]struct {
		name    string
		request func(pool string, i int) claim.Request
	}{}, kinds...)
	cases = append(cases, struct {
		name    string
		request func(pool string, i int) claim.Request
	}{"mixed", func(pool string, i int) claim.Request { return kinds[i%len(kinds)].request(pool, i) }})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, wakeup.Config{})
			held := b.hold(t, "fifo", waiters)
			requests := make([]claim.Request, waiters)
			answers := make([]<-chan outcome, waiters)
			for i := range waiters {
				requests[i] = c.request("fifo", i)
				requests[i].Wait = time.Minute
				answers[i] = b.start(t, requests[i])
				b.waiting(t, i+1)
			}
			for i := range waiters {
				// A key freed while a round is under way may go to a later
				// waiter tried after the earlier ones found none: free it
				// between rounds.
				require.Eventually(t, func() bool { return !b.hub.Serving("fifo") }, 10*time.Second, time.Millisecond)
				b.release(t, held[i])
				o := answered(t, answers[i])
				require.NoError(t, o.err, "waiter %d (%+v)", i, requests[i])
				require.Equal(t, held[i].ID, o.key.ID, "the waiter that came first is served first")
				require.False(t, o.replayed)
				if requests[i].IdempotencyKey != "" {
					recorded, err := b.store.RecordedClaim(context.Background(), "fifo", requests[i].IdempotencyKey)
					require.NoError(t, err)
					require.Equal(t, *o.key.LeaseToken, *recorded.LeaseToken, "the lease is recorded under the idempotency key")
				}
			}
		})
	}
}

// A claim of any kind on a pool without keys or policy answers
// lease.ErrUnknownPool at once, naming the pool, however long it may wait.
func TestUnknownPoolIsNeverWaitedFor(t *testing.T) {
	t.Parallel()
	b := setup(t, wakeup.Config{})
	for i, kind := range kinds {
		req := kind.request("nowhere", i)
		req.Wait = 30 * time.Second
		start := time.Now()
		_, _, err := b.claims.Claim(context.Background(), req)
		require.ErrorIs(t, err, lease.ErrUnknownPool, kind.name)
		require.ErrorContains(t, err, `"nowhere"`)
		require.Less(t, time.Since(start), 5*time.Second, "%s answered at once", kind.name)
	}
	require.Zero(t, b.hub.Waiters())
}

// A pool's policy shortens the wait of every kind of claim.
func TestPolicyBoundsEveryKindOfWait(t *testing.T) {
	t.Parallel()
	const maxWait = 200 * time.Millisecond
	b := setup(t, wakeup.Config{})
	b.hold(t, "short", 1)
	_, _, err := b.store.PutPolicy(context.Background(), lease.Policy{Pool: "short", MaxWait: ptr(maxWait)})
	require.NoError(t, err)
	for i, kind := range kinds {
		req := kind.request("short", i)
		req.Wait = 30 * time.Second
		start := time.Now()
		_, _, err := b.claims.Claim(context.Background(), req)
		require.ErrorIs(t, err, lease.ErrNoFreeKey, kind.name)
		waited := time.Since(start)
		require.GreaterOrEqual(t, waited, maxWait, kind.name)
		require.Less(t, waited, 5*time.Second, "%s waited as the policy says", kind.name)
	}
}

// A repeat of an idempotent claim answers its lease at once, without
// waiting behind the clients that wait in line.
func TestRepeatOfAnIdempotentClaimDoesNotWaitInLine(t *testing.T) {
	t.Parallel()
	b := setup(t, wakeup.Config{})
	_, err := b.store.Create(context.Background(), "repeat", 1)
	require.NoError(t, err)
	first, replayed, err := b.claims.Claim(context.Background(), claim.Request{Pool: "repeat", IdempotencyKey: "once"})
	require.NoError(t, err)
	require.False(t, replayed)
	b.start(t, claim.Request{Pool: "repeat", Wait: time.Minute})
	b.waiting(t, 1)

	start := time.Now()
	again, replayed, err := b.claims.Claim(context.Background(), claim.Request{Pool: "repeat", IdempotencyKey: "once", Wait: time.Minute})
	require.NoError(t, err)
	require.True(t, replayed)
	require.Equal(t, *first.LeaseToken, *again.LeaseToken)
	require.Less(t, time.Since(start), 5*time.Second, "answered at once")
}

func ptr[T any](v T) *T { return &v }
