package store_test

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/lease"
	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
	"github.com/tokenorchestrator/tokenorchestrator/internal/sweeper"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }

type bundle struct {
	store *store.Store
	pool  *pgxpool.Pool
	ctx   context.Context
}

func setup(t *testing.T, cfg store.Config) *bundle {
	t.Helper()
	if cfg.KeyTTL == 0 {
		cfg.KeyTTL = time.Hour
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = time.Hour
	}
	pool := testdbPool(t)
	return &bundle{store: store.New(pool, cfg), pool: pool, ctx: context.Background()}
}

// reports returns where the bundle's store reads reports.
func (b *bundle) reports(t *testing.T) *store.Reports {
	t.Helper()
	r, err := b.store.Reports(b.ctx)
	require.NoError(t, err)
	return r
}

func testdbPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(testdb.New(t))
	require.NoError(t, err)
	cfg.MaxConns = 64
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

// events returns the history of one key as (event, lease token) pairs.
func (b *bundle) events(t *testing.T, id uuid.UUID) []string {
	t.Helper()
	rows, err := b.pool.Query(b.ctx, "SELECT event, coalesce(lease_token::text, '-') FROM key_events WHERE key_id = $1 ORDER BY id", id)
	require.NoError(t, err)
	defer rows.Close()
	var out []string
	for rows.Next() {
		var event, token string
		require.NoError(t, rows.Scan(&event, &token))
		out = append(out, event+":"+token)
	}
	require.NoError(t, rows.Err())
	return out
}

func token(k lease.Key) string {
	if k.LeaseToken == nil {
		return "-"
	}
	return strconv.FormatInt(*k.LeaseToken, 10)
}

func TestCreateGetAndCounts(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{})

	keys, err := b.store.Create(b.ctx, "alpha", 25)
	require.NoError(t, err)
	require.Len(t, keys, 25)
	seen := map[uuid.UUID]bool{}
	for _, k := range keys {
		require.Equal(t, "alpha", k.Pool)
		require.False(t, k.Held())
		require.WithinDuration(t, k.CreatedAt.Add(time.Hour), *k.ExpiresAt, time.Millisecond)
		seen[k.ID] = true
	}
	require.Len(t, seen, 25, "ids are unique")

	got, err := b.store.Get(b.ctx, keys[3].ID)
	require.NoError(t, err)
	require.Equal(t, keys[3], got)

	_, err = b.store.Get(b.ctx, uuid.New())
	require.ErrorIs(t, err, lease.ErrKeyNotFound)

	_, err = b.store.Create(b.ctx, "alpha", 0)
	require.Error(t, err)
	_, err = b.store.Create(b.ctx, "alpha", lease.MaxCreate+1)
	require.Error(t, err)

	claimed, err := b.store.Claim(b.ctx, "alpha")
	require.NoError(t, err)
	counts, err := b.store.CountPool(b.ctx, "alpha")
	require.NoError(t, err)
	require.Equal(t, store.PoolCounts{Pool: "alpha", Keys: 25, Seats: 25, Held: 1}, counts)
	require.EqualValues(t, 24, counts.Free())

	empty, err := b.store.CountPool(b.ctx, "nothing-here")
	require.NoError(t, err)
	require.Zero(t, empty.Keys)
	// The claim took a random key: look at one it did not take.
	untouched := keys[0]
	if untouched.ID == claimed.ID {
		untouched = keys[1]
	}
	require.Equal(t, []string{"created:-"}, b.events(t, untouched.ID))
}

func TestClaimHoldsOnlyFreeKeysOfThePool(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{LeaseTTL: time.Minute})

	created, err := b.store.Create(b.ctx, "one", 1)
	require.NoError(t, err)
	_, err = b.store.Create(b.ctx, "other", 3)
	require.NoError(t, err)

	key, err := b.store.Claim(b.ctx, "one")
	require.NoError(t, err)
	require.Equal(t, created[0].ID, key.ID)
	require.True(t, key.Held())
	require.NotNil(t, key.ClaimedAt)
	require.WithinDuration(t, key.ClaimedAt.Add(time.Minute), *key.LeaseExpiresAt, time.Millisecond)
	require.EqualValues(t, 1, key.TimesClaimed)

	_, err = b.store.Claim(b.ctx, "one")
	require.ErrorIs(t, err, lease.ErrNoFreeKey, "the only key of the pool is held; other pools are not touched")
	_, err = b.store.Claim(b.ctx, "empty")
	require.ErrorIs(t, err, lease.ErrNoFreeKey)

	free, err := b.store.HasFree(b.ctx, "one")
	require.NoError(t, err)
	require.False(t, free)
	free, err = b.store.HasFree(b.ctx, "other")
	require.NoError(t, err)
	require.True(t, free)

	// Every lease gets a token of its own.
	_, err = b.store.Release(b.ctx, key.ID, nil)
	require.NoError(t, err)
	again, err := b.store.Claim(b.ctx, "one")
	require.NoError(t, err)
	require.NotEqual(t, *key.LeaseToken, *again.LeaseToken)
	require.EqualValues(t, 2, again.TimesClaimed)
	require.Equal(t, []string{"created:-", "assigned:" + token(key), "released:" + token(key), "assigned:" + token(again)},
		b.events(t, key.ID))
}

func TestClaimManyTakesDistinctKeysAndWrapsAround(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{})
	_, err := b.store.Create(b.ctx, "p", 7)
	require.NoError(t, err)

	// Whatever the random start, asking for more than there is returns all
	// of them: the scan wraps around past the end of the index.
	keys, err := b.store.ClaimMany(b.ctx, "p", 10)
	require.NoError(t, err)
	require.Len(t, keys, 7)
	ids := map[uuid.UUID]bool{}
	tokens := map[int64]bool{}
	for _, k := range keys {
		ids[k.ID] = true
		tokens[*k.LeaseToken] = true
	}
	require.Len(t, ids, 7)
	require.Len(t, tokens, 7)
	_, err = b.store.ClaimMany(b.ctx, "p", 3)
	require.ErrorIs(t, err, lease.ErrNoFreeKey)
}

func TestReleaseHonoursLeaseTokens(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{})
	_, err := b.store.Create(b.ctx, "p", 1)
	require.NoError(t, err)
	key, err := b.store.Claim(b.ctx, "p")
	require.NoError(t, err)

	stale := *key.LeaseToken + 1000
	_, err = b.store.Release(b.ctx, key.ID, &stale)
	require.ErrorIs(t, err, lease.ErrLeaseMismatch)
	unchanged, err := b.store.Get(b.ctx, key.ID)
	require.NoError(t, err)
	require.Equal(t, key, unchanged, "a stale token changes nothing")

	released, err := b.store.Release(b.ctx, key.ID, key.LeaseToken)
	require.NoError(t, err)
	require.False(t, released.Held())
	require.Nil(t, released.ClaimedAt)
	require.Nil(t, released.LeaseExpiresAt)

	// Releasing a free key is idempotent, with or without the old token.
	again, err := b.store.Release(b.ctx, key.ID, key.LeaseToken)
	require.NoError(t, err)
	require.Equal(t, released, again)
	again, err = b.store.Release(b.ctx, key.ID, nil)
	require.NoError(t, err)
	require.Equal(t, released, again)

	_, err = b.store.Release(b.ctx, uuid.New(), nil)
	require.ErrorIs(t, err, lease.ErrKeyNotFound)
	require.Equal(t, []string{"created:-", "assigned:" + token(key), "released:" + token(key)}, b.events(t, key.ID))
}

func TestKeepAliveExtendsLifeAndLease(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{KeyTTL: time.Hour, LeaseTTL: time.Minute})
	created, err := b.store.Create(b.ctx, "p", 1)
	require.NoError(t, err)

	// A free key: its life is extended, it gets no lease.
	kept, err := b.store.KeepAlive(b.ctx, created[0].ID, nil)
	require.NoError(t, err)
	require.False(t, kept.Held())
	require.Nil(t, kept.LeaseExpiresAt)
	require.NotNil(t, kept.LastKeepAliveAt)
	require.True(t, kept.ExpiresAt.After(*created[0].ExpiresAt))
	require.WithinDuration(t, kept.LastKeepAliveAt.Add(time.Hour), *kept.ExpiresAt, time.Millisecond)

	key, err := b.store.Claim(b.ctx, "p")
	require.NoError(t, err)
	kept, err = b.store.KeepAlive(b.ctx, key.ID, key.LeaseToken)
	require.NoError(t, err)
	require.True(t, kept.Held())
	require.Equal(t, *key.LeaseToken, *kept.LeaseToken)
	require.True(t, kept.LeaseExpiresAt.After(*key.LeaseExpiresAt))
	require.WithinDuration(t, kept.LastKeepAliveAt.Add(time.Minute), *kept.LeaseExpiresAt, time.Millisecond)
	require.Equal(t, *key.ClaimedAt, *kept.ClaimedAt, "a keep-alive does not start a new lease")

	stale := *key.LeaseToken - 1
	_, err = b.store.KeepAlive(b.ctx, key.ID, &stale)
	require.ErrorIs(t, err, lease.ErrLeaseMismatch)
	unchanged, err := b.store.Get(b.ctx, key.ID)
	require.NoError(t, err)
	require.Equal(t, kept, unchanged)

	// Once released, the old lease cannot be kept alive.
	_, err = b.store.Release(b.ctx, key.ID, nil)
	require.NoError(t, err)
	_, err = b.store.KeepAlive(b.ctx, key.ID, key.LeaseToken)
	require.ErrorIs(t, err, lease.ErrLeaseMismatch)

	_, err = b.store.KeepAlive(b.ctx, uuid.New(), nil)
	require.ErrorIs(t, err, lease.ErrKeyNotFound)
	_, err = b.store.KeepAlive(b.ctx, uuid.New(), key.LeaseToken)
	require.ErrorIs(t, err, lease.ErrKeyNotFound)
	require.Equal(t, []string{"created:-", "kept_alive:-", "assigned:" + token(key), "kept_alive:" + token(key), "released:" + token(key)},
		b.events(t, key.ID))
}

func TestDelete(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{})
	_, err := b.store.Create(b.ctx, "p", 1)
	require.NoError(t, err)
	key, err := b.store.Claim(b.ctx, "p")
	require.NoError(t, err)

	deleted, err := b.store.Delete(b.ctx, key.ID)
	require.NoError(t, err)
	require.Equal(t, key.ID, deleted.ID)
	_, err = b.store.Get(b.ctx, key.ID)
	require.ErrorIs(t, err, lease.ErrKeyNotFound)
	_, err = b.store.Delete(b.ctx, key.ID)
	require.ErrorIs(t, err, lease.ErrKeyNotFound)
	_, err = b.store.Claim(b.ctx, "p")
	require.ErrorIs(t, err, lease.ErrNoFreeKey)
	counts, err := b.store.CountPool(b.ctx, "p")
	require.NoError(t, err)
	require.Zero(t, counts.Keys)
	require.Zero(t, counts.Held)
	require.Equal(t, []string{"created:-", "assigned:" + token(key), "deleted:" + token(key)}, b.events(t, key.ID))
}

// A key whose life has ended is gone at once, before the background job
// deletes it: never claimed, and every call on it answers not found.
func TestExpiredKeyIsGoneBeforeTheSweep(t *testing.T) {
	t.Parallel()
	// Long enough to claim a key before its life ends, even on a busy
	// machine; the test then waits for the end by the database's clock.
	const keyTTL = 2 * time.Second
	b := setup(t, store.Config{KeyTTL: keyTTL, LeaseTTL: time.Hour})
	keys, err := b.store.Create(b.ctx, "p", 2)
	require.NoError(t, err)
	held, err := b.store.Claim(b.ctx, "p")
	require.NoError(t, err)
	time.Sleep(time.Until(*keys[1].ExpiresAt) + 50*time.Millisecond)

	for _, k := range keys {
		_, err = b.store.Get(b.ctx, k.ID)
		require.ErrorIs(t, err, lease.ErrKeyNotFound)
		_, err = b.store.KeepAlive(b.ctx, k.ID, nil)
		require.ErrorIs(t, err, lease.ErrKeyNotFound)
		_, err = b.store.Release(b.ctx, k.ID, nil)
		require.ErrorIs(t, err, lease.ErrKeyNotFound)
		_, err = b.store.Delete(b.ctx, k.ID)
		require.ErrorIs(t, err, lease.ErrKeyNotFound)
	}
	_, err = b.store.KeepAlive(b.ctx, held.ID, held.LeaseToken)
	require.ErrorIs(t, err, lease.ErrKeyNotFound)
	_, err = b.store.Claim(b.ctx, "p")
	require.ErrorIs(t, err, lease.ErrNoFreeKey)
	free, err := b.store.HasFree(b.ctx, "p")
	require.NoError(t, err)
	require.False(t, free)

	result := sweeper.New(b.store, sweeper.Config{}).RunOnce(b.ctx)
	require.NoError(t, result.Err)
	require.Equal(t, 2, result.KeysExpired)
	require.Equal(t, 0, result.LeasesReleased, "the held key's lease has not ended; its key has")
	require.Equal(t, []string{"created:-", "assigned:" + token(held), "expired:" + token(held)}, b.events(t, held.ID))
	var rows int
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM keys").Scan(&rows))
	require.Zero(t, rows)
}

func TestKeepAliveKeepsAKeyFromExpiring(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{KeyTTL: time.Second})
	keys, err := b.store.Create(b.ctx, "p", 2)
	require.NoError(t, err)
	for range 6 {
		time.Sleep(250 * time.Millisecond)
		_, err := b.store.KeepAlive(b.ctx, keys[0].ID, nil)
		require.NoError(t, err)
	}
	// 1.5 s after creation: the key kept alive lives, the other is gone.
	_, err = b.store.Get(b.ctx, keys[0].ID)
	require.NoError(t, err)
	_, err = b.store.Get(b.ctx, keys[1].ID)
	require.ErrorIs(t, err, lease.ErrKeyNotFound)
}

func TestSweeperReleasesEndedLeasesInBatches(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{LeaseTTL: time.Second})
	_, err := b.store.Create(b.ctx, "p", 40)
	require.NoError(t, err)
	held, err := b.store.ClaimMany(b.ctx, "p", 35)
	require.NoError(t, err)
	require.Len(t, held, 35)

	sw := sweeper.New(b.store, sweeper.Config{BatchSize: 10})
	result := sw.RunOnce(b.ctx)
	require.NoError(t, result.Err)
	require.Zero(t, result.LeasesReleased, "no lease has ended yet")

	time.Sleep(time.Until(*held[34].LeaseExpiresAt) + 50*time.Millisecond)
	result = sw.RunOnce(b.ctx)
	require.NoError(t, result.Err)
	require.Equal(t, 35, result.LeasesReleased, "one pass drains every batch")
	counts, err := b.store.CountPool(b.ctx, "p")
	require.NoError(t, err)
	require.Zero(t, counts.Held)
	require.Equal(t, []string{"created:-", "assigned:" + token(held[0]), "lease_expired:" + token(held[0])}, b.events(t, held[0].ID))
}

// A client whose lease ran out can neither release nor extend the lease of
// the client that got the key next.
func TestStaleHolderCannotTouchTheNextLease(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{LeaseTTL: 100 * time.Millisecond})
	_, err := b.store.Create(b.ctx, "p", 1)
	require.NoError(t, err)
	first, err := b.store.Claim(b.ctx, "p")
	require.NoError(t, err)
	time.Sleep(150 * time.Millisecond)
	require.Equal(t, 1, sweeper.New(b.store, sweeper.Config{}).RunOnce(b.ctx).LeasesReleased)

	second, err := b.store.Claim(b.ctx, "p")
	require.NoError(t, err)
	require.Equal(t, first.ID, second.ID)

	_, err = b.store.Release(b.ctx, first.ID, first.LeaseToken)
	require.ErrorIs(t, err, lease.ErrLeaseMismatch)
	_, err = b.store.KeepAlive(b.ctx, first.ID, first.LeaseToken)
	require.ErrorIs(t, err, lease.ErrLeaseMismatch)
	now, err := b.store.Get(b.ctx, first.ID)
	require.NoError(t, err)
	require.Equal(t, second, now, "the second lease is untouched")
}

// Over many claims every key gets its share. Each claim takes the first free
// key at or after a random point, so a key's chance is the gap before it;
// redrawing a key's position whenever it is freed makes the long-run share
// of every key 1/N. Simulated, 3,000 cycles over 10 keys keep every share
// within ±25% of 1/N in 300 of 300 runs (about 3 standard deviations of a
// binomial count, σ ≈ 16); the test allows ±40% (7σ), so it fails only if
// the draw is really biased. Without the redraw, shares follow the gaps of
// 10 random points, and one falls outside ±40% almost surely.
func TestClaimsAreSpreadEvenly(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{})
	const keys, cycles = 10, 3000
	_, err := b.store.Create(b.ctx, "p", keys)
	require.NoError(t, err)
	picks := map[uuid.UUID]int{}
	for range cycles {
		k, err := b.store.Claim(b.ctx, "p")
		require.NoError(t, err)
		picks[k.ID]++
		_, err = b.store.Release(b.ctx, k.ID, k.LeaseToken)
		require.NoError(t, err)
	}
	require.Len(t, picks, keys, "every key is picked")
	for id, n := range picks {
		share := float64(n) * keys / cycles
		require.InDelta(t, 1.0, share, 0.4, "key %s has %.2f of its fair share (%d of %d)", id, share, n, cycles)
	}
}

// A keep-alive without a lease token resets the key's life only: the owner
// of a pool who keeps its keys alive does not keep a crashed holder's lease
// alive. A keep-alive with the token extends only a lease still running:
// nothing revives a lease past its deadline, even before the background job
// has freed the key. History tells the two apart: a lease extended carries
// its token, a key kept alive carries none.
func TestKeepAliveWithoutTokenNeverTouchesALease(t *testing.T) {
	t.Parallel()
	const leaseTTL = 400 * time.Millisecond
	b := setup(t, store.Config{KeyTTL: time.Hour, LeaseTTL: leaseTTL})
	_, err := b.store.Create(b.ctx, "p", 1)
	require.NoError(t, err)
	held, err := b.store.Claim(b.ctx, "p")
	require.NoError(t, err)

	kept, err := b.store.KeepAlive(b.ctx, held.ID, nil)
	require.NoError(t, err)
	require.True(t, kept.ExpiresAt.After(*held.ExpiresAt), "the key's life is reset")
	require.Equal(t, *held.LeaseExpiresAt, *kept.LeaseExpiresAt, "the lease is not extended")
	now, err := b.store.Get(b.ctx, held.ID)
	require.NoError(t, err)
	require.Equal(t, *held.LeaseExpiresAt, *now.LeaseExpiresAt)

	// Past the lease's deadline, before any sweep: neither call revives it.
	time.Sleep(time.Until(*held.LeaseExpiresAt) + 50*time.Millisecond)
	_, err = b.store.KeepAlive(b.ctx, held.ID, held.LeaseToken)
	require.ErrorIs(t, err, lease.ErrLeaseMismatch)
	_, err = b.store.KeepAlive(b.ctx, held.ID, nil)
	require.NoError(t, err)
	now, err = b.store.Get(b.ctx, held.ID)
	require.NoError(t, err)
	require.Equal(t, *held.LeaseExpiresAt, *now.LeaseExpiresAt, "an ended lease stays ended")

	released := sweeper.New(b.store, sweeper.Config{}).RunOnce(b.ctx).LeasesReleased
	require.Equal(t, 1, released)
	require.Equal(t, []string{"created:-", "assigned:" + token(held), "kept_alive:-", "kept_alive:-", "lease_expired:" + token(held)},
		b.events(t, held.ID))

	// The lease report counts lease extensions only.
	again, err := b.store.Claim(b.ctx, "p")
	require.NoError(t, err)
	_, err = b.store.KeepAlive(b.ctx, again.ID, again.LeaseToken)
	require.NoError(t, err)
	_, err = b.store.KeepAlive(b.ctx, again.ID, nil)
	require.NoError(t, err)
	var keepAlives []int64
	rows, err := b.pool.Query(b.ctx, "SELECT keep_alives FROM key_leases WHERE key_id = $1 ORDER BY started_at", held.ID)
	require.NoError(t, err)
	for rows.Next() {
		var n int64
		require.NoError(t, rows.Scan(&n))
		keepAlives = append(keepAlives, n)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []int64{0, 1}, keepAlives)
}

// A pool is known while it has keys, held or free; the last key deleted, it
// is unknown again, as one never used.
func TestPoolKnownWhileItHasKeys(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{})
	known := func(pool string) bool {
		t.Helper()
		ok, err := b.store.PoolKnown(b.ctx, pool)
		require.NoError(t, err)
		return ok
	}
	require.False(t, known("p"))
	keys, err := b.store.Create(b.ctx, "p", 2)
	require.NoError(t, err)
	require.True(t, known("p"))
	require.False(t, known("q"), "only the pool of the keys")
	_, err = b.store.Claim(b.ctx, "p")
	require.NoError(t, err)
	_, err = b.store.Claim(b.ctx, "p")
	require.NoError(t, err)
	require.True(t, known("p"), "every key held")
	for _, k := range keys {
		_, err := b.store.Delete(b.ctx, k.ID)
		require.NoError(t, err)
	}
	require.False(t, known("p"))
	// Counts folded into the totals, and the empty pool's counts removed,
	// change nothing.
	_, err = b.store.FoldCounts(b.ctx)
	require.NoError(t, err)
	require.False(t, known("p"))
	_, err = b.store.RemoveEmptyPools(b.ctx, 10)
	require.NoError(t, err)
	require.False(t, known("p"))
}
