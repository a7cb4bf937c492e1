package store_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/lease"
	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
	"github.com/tokenorchestrator/tokenorchestrator/internal/sweeper"
)

// A key of N seats is held by up to N leases at once, each with its own
// token, deadline and history; one more claim finds no free seat.
func TestKeyOfSeatsIsHeldUpToItsSeats(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{})
	keys, err := b.store.CreateSeats(b.ctx, "shared", 1, 3)
	require.NoError(t, err)
	require.Equal(t, 3, keys[0].Seats)
	require.Equal(t, 0, *keys[0].SeatsHeld)
	id := keys[0].ID

	tokens := map[int64]bool{}
	var leases []lease.Key
	for range 3 {
		k, err := b.store.Claim(b.ctx, "shared")
		require.NoError(t, err)
		require.Equal(t, id, k.ID)
		require.NotNil(t, k.LeaseToken)
		tokens[*k.LeaseToken] = true
		leases = append(leases, k)
	}
	require.Len(t, tokens, 3, "each lease has its own token")
	_, err = b.store.Claim(b.ctx, "shared")
	require.ErrorIs(t, err, lease.ErrNoFreeKey, "every seat is held")

	counts, err := b.store.CountPool(b.ctx, "shared")
	require.NoError(t, err)
	require.Equal(t, store.PoolCounts{Pool: "shared", Keys: 1, Seats: 3, Held: 3}, counts)
	whole, err := b.store.Get(b.ctx, id)
	require.NoError(t, err)
	require.Equal(t, 3, *whole.SeatsHeld)
	require.True(t, whole.Held(), "no claim can take it")
	require.Nil(t, whole.LeaseToken, "a key of several seats has no one lease")

	// A release without a token cannot tell the leases apart.
	_, err = b.store.Release(b.ctx, id, nil)
	require.ErrorIs(t, err, lease.ErrSeatLeaseRequired)
	require.ErrorIs(t, err, lease.ErrLeaseTokenRequired)

	// Keeping one lease alive extends that lease only.
	time.Sleep(20 * time.Millisecond)
	kept, err := b.store.KeepAlive(b.ctx, id, leases[1].LeaseToken)
	require.NoError(t, err)
	require.Equal(t, *leases[1].LeaseToken, *kept.LeaseToken)
	require.True(t, kept.LeaseExpiresAt.After(*leases[1].LeaseExpiresAt))

	// Releasing one seat frees one seat, which the next claim takes.
	released, err := b.store.Release(b.ctx, id, leases[0].LeaseToken)
	require.NoError(t, err)
	require.False(t, released.Held())
	again, err := b.store.Release(b.ctx, id, leases[0].LeaseToken)
	require.NoError(t, err, "a release is idempotent")
	require.False(t, again.Held())
	whole, err = b.store.Get(b.ctx, id)
	require.NoError(t, err)
	require.Equal(t, 2, *whole.SeatsHeld)
	require.False(t, whole.Held())
	next, err := b.store.Claim(b.ctx, "shared")
	require.NoError(t, err)
	require.NotEqual(t, *leases[0].LeaseToken, *next.LeaseToken)

	// The first lease's seat now has a later lease: the first token is stale.
	_, err = b.store.Release(b.ctx, id, leases[0].LeaseToken)
	require.ErrorIs(t, err, lease.ErrLeaseMismatch)
	_, err = b.store.KeepAlive(b.ctx, id, leases[0].LeaseToken)
	require.ErrorIs(t, err, lease.ErrLeaseMismatch)

	// History: each lease has its seat, and the seats are distinct.
	rows, err := b.pool.Query(b.ctx, `SELECT lease_token, seat FROM key_events WHERE key_id = $1 AND event = 'assigned' ORDER BY id`, id)
	require.NoError(t, err)
	seatOf := map[int64]int16{}
	for rows.Next() {
		var token int64
		var seat int16
		require.NoError(t, rows.Scan(&token, &seat))
		seatOf[token] = seat
	}
	require.NoError(t, rows.Err())
	require.Len(t, seatOf, 4)
	require.ElementsMatch(t, []int16{0, 1, 2}, []int16{seatOf[*leases[0].LeaseToken], seatOf[*leases[1].LeaseToken], seatOf[*leases[2].LeaseToken]})
	require.Equal(t, seatOf[*leases[0].LeaseToken], seatOf[*next.LeaseToken], "the freed seat was claimed again")
}

// The pool's policy gives new keys their seats unless a key names its own;
// labels hold on every seat; deleting a key ends each of its leases.
func TestSeatsFromThePolicyLabelsAndDeletion(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{})
	two := 2
	_, _, err := b.store.PutPolicy(b.ctx, lease.Policy{Pool: "p", Seats: &two})
	require.NoError(t, err)
	byPolicy, err := b.store.Create(b.ctx, "p", 1)
	require.NoError(t, err)
	require.Equal(t, 2, byPolicy[0].Seats)
	res, err := b.store.Import(b.ctx, "p", []store.NewKey{
		{Labels: map[string]string{"tier": "paid"}, Seats: 3},
		{Labels: map[string]string{"tier": "free"}},
	}, store.ImportOptions{})
	require.NoError(t, err)
	require.Equal(t, 3, res.Keys[0].Seats)
	require.Equal(t, 2, res.Keys[1].Seats)

	var paid []lease.Key
	for range 3 {
		k, err := b.store.Claim(b.ctx, "p", "tier=paid")
		require.NoError(t, err)
		require.Equal(t, res.Keys[0].ID, k.ID)
		paid = append(paid, k)
	}
	_, err = b.store.Claim(b.ctx, "p", "tier=paid")
	require.ErrorIs(t, err, lease.ErrNoFreeKey)
	// A released seat is claimable by label again.
	_, err = b.store.Release(b.ctx, paid[1].ID, paid[1].LeaseToken)
	require.NoError(t, err)
	k, err := b.store.Claim(b.ctx, "p", "tier=paid")
	require.NoError(t, err)
	require.Equal(t, res.Keys[0].ID, k.ID)

	counts, err := b.store.CountPool(b.ctx, "p")
	require.NoError(t, err)
	require.Equal(t, store.PoolCounts{Pool: "p", Keys: 3, Seats: 7, Held: 3}, counts)

	deleted, err := b.store.Delete(b.ctx, res.Keys[0].ID)
	require.NoError(t, err)
	require.Equal(t, 3, *deleted.SeatsHeld)
	counts, err = b.store.CountPool(b.ctx, "p")
	require.NoError(t, err)
	require.Equal(t, store.PoolCounts{Pool: "p", Keys: 2, Seats: 4, Held: 0}, counts)
	var ended int
	require.NoError(t, b.pool.QueryRow(b.ctx, `
		SELECT count(DISTINCT lease_token) FROM key_events
		WHERE key_id = $1 AND event = 'deleted' AND lease_token IS NOT NULL`, res.Keys[0].ID).Scan(&ended))
	require.Equal(t, 3, ended, "each lease the deletion ended has its end in history")
	var deletedKeys, keysChange int
	require.NoError(t, b.pool.QueryRow(b.ctx, `SELECT sum(deleted) FROM key_activity_hourly WHERE pool = 'p'`).Scan(&deletedKeys))
	require.Equal(t, 1, deletedKeys, "the key is counted once")
	require.NoError(t, b.pool.QueryRow(b.ctx, `SELECT sum(keys) FROM key_event_changes WHERE pool = 'p'`).Scan(&keysChange))
	require.Equal(t, 2, keysChange, "three created, one deleted")

	_, err = b.store.CreateSeats(b.ctx, "p", 1, lease.MaxSeats+1)
	require.ErrorIs(t, err, lease.ErrInvalidSeats)
	_, err = b.store.CreateSeats(b.ctx, "p", 200, 1000)
	require.ErrorIs(t, err, lease.ErrInvalidSeats, "more seats than one call creates")
}

// A cooldown sent after its lease ran out applies to that lease's seat,
// while the seat is free; the key's other seats are not touched.
func TestLateCooldownCoolsItsSeat(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{LeaseTTL: 100 * time.Millisecond})
	keys, err := b.store.CreateSeats(b.ctx, "p", 1, 2)
	require.NoError(t, err)
	first, err := b.store.Claim(b.ctx, "p")
	require.NoError(t, err)
	time.Sleep(150 * time.Millisecond)
	require.Equal(t, 1, sweeper.New(b.store, sweeper.Config{}).RunOnce(b.ctx).LeasesReleased)

	cooled, err := b.store.ReleaseWithCooldown(b.ctx, keys[0].ID, first.LeaseToken, time.Hour)
	require.NoError(t, err)
	require.NotNil(t, cooled.CoolingUntil)
	// One seat cools; the other is claimable, and then the key is full.
	other, err := b.store.Claim(b.ctx, "p")
	require.NoError(t, err)
	require.Equal(t, keys[0].ID, other.ID)
	_, err = b.store.Claim(b.ctx, "p")
	require.ErrorIs(t, err, lease.ErrNoFreeKey)
}

// Replicas claim, keep alive, release and let leases run out on keys of
// several seats at once, with the background job running: no seat is ever
// held by two leases at once, so no key by more than its seats.
func TestSeatsAreNeverHeldTwiceAcrossReplicas(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{})
	ctx := b.ctx
	// Each replica has its own connections to the one database.
	const replicas = 3
	stores := make([]*store.Store, replicas)
	for i := range stores {
		conns, err := pgxpool.NewWithConfig(ctx, b.pool.Config().Copy())
		require.NoError(t, err)
		t.Cleanup(conns.Close)
		stores[i] = store.New(conns, store.Config{KeyTTL: time.Hour, LeaseTTL: 150 * time.Millisecond, MaxBatch: 8})
	}
	start := time.Now().Add(-time.Second)
	keys, err := stores[0].CreateSeats(ctx, "busy", 4, 3)
	require.NoError(t, err)
	require.Len(t, keys, 4)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sw := sweeper.New(stores[0], sweeper.Config{})
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				sw.RunOnce(ctx)
			}
		}
	}()
	var claims atomic.Int64
	for w := range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := stores[w%replicas]
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k, err := s.Claim(ctx, "busy")
				if err != nil {
					// Every seat is held: one ends soon.
					time.Sleep(5 * time.Millisecond)
					continue
				}
				claims.Add(1)
				switch i % 3 {
				case 0:
					_, _ = s.Release(ctx, k.ID, k.LeaseToken)
				case 1:
					_, _ = s.KeepAlive(ctx, k.ID, k.LeaseToken)
					_, _ = s.Release(ctx, k.ID, k.LeaseToken)
				default:
					// Left to run out; the job frees it.
				}
			}
		}()
	}
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	// More claims than seats: seats were claimed again after releases and
	// after leases ran out.
	require.Greater(t, claims.Load(), int64(2*4*3))
	// Every key has exactly one lease-state row per seat, so no count of
	// holders can pass its seats (a row holds one lease at most).
	var misfit int
	require.NoError(t, b.pool.QueryRow(ctx, `
		SELECT count(*) FROM keys AS k
		WHERE k.seats <> (SELECT count(*) FROM key_state AS s WHERE s.key_id = k.id)
		   OR EXISTS (SELECT 1 FROM key_state AS s WHERE s.key_id = k.id AND s.seat >= k.seats)`).Scan(&misfit))
	require.Zero(t, misfit)

	audit, err := stores[0].AuditHistory(ctx, start)
	require.NoError(t, err)
	require.Empty(t, audit.Overlaps, "no seat was held by two leases at once")
	// Every lease is on a seat its key has.
	var outside int
	require.NoError(t, b.pool.QueryRow(ctx, `
		SELECT count(*) FROM key_events AS e JOIN keys AS k ON k.id = e.key_id
		WHERE e.event = 'assigned' AND (e.seat IS NULL OR e.seat >= k.seats)`).Scan(&outside))
	require.Zero(t, outside)
}

// An import's keys without seats of their own take the policy's, read in
// the import's transaction; too many seats in all create nothing.
func TestImportTakesThePolicysSeats(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{})
	four := 4
	_, _, err := b.store.PutPolicy(b.ctx, lease.Policy{Pool: "imp", Seats: &four})
	require.NoError(t, err)
	res, err := b.store.Import(b.ctx, "imp", []store.NewKey{{Name: "a"}, {Name: "b", Seats: 2}}, store.ImportOptions{})
	require.NoError(t, err)
	require.Equal(t, []int{4, 2}, []int{res.Keys[0].Seats, res.Keys[1].Seats})
	many := make([]store.NewKey, 101)
	for i := range many {
		many[i].Seats = 1000
	}
	_, err = b.store.Import(b.ctx, "imp", many, store.ImportOptions{})
	require.ErrorIs(t, err, lease.ErrInvalidSeats)
	counts, err := b.store.CountPool(b.ctx, "imp")
	require.NoError(t, err)
	require.Equal(t, store.PoolCounts{Pool: "imp", Keys: 2, Seats: 6}, counts)
}

// A page of a pool's keys shows each key as Get does, whatever its seats
// and state: a key of one seat free, held, released with a cooldown or
// claimed before; a key of several seats with none, some or all held.
func TestListKeysShowsEachKeyAsGetDoes(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{})
	ones, err := b.store.Create(b.ctx, "listed", 4)
	require.NoError(t, err)
	many, err := b.store.CreateSeats(b.ctx, "listed", 3, 3)
	require.NoError(t, err)
	_, err = b.store.Create(b.ctx, "other", 2)
	require.NoError(t, err)

	// Claims take random keys: claim every seat, then give some back.
	leases := map[uuid.UUID][]*int64{}
	for range len(ones) + 3*len(many) {
		k, err := b.store.Claim(b.ctx, "listed")
		require.NoError(t, err)
		leases[k.ID] = append(leases[k.ID], k.LeaseToken)
	}
	release := func(id uuid.UUID, seats int) {
		for _, token := range leases[id][:seats] {
			_, err := b.store.Release(b.ctx, id, token)
			require.NoError(t, err)
		}
	}
	// ones[0] stays held; ones[2] cools down.
	release(ones[1].ID, 1)
	_, err = b.store.ReleaseWithCooldown(b.ctx, ones[2].ID, leases[ones[2].ID][0], time.Hour)
	require.NoError(t, err)
	release(ones[3].ID, 1)
	// many[0] keeps its 3 seats held, many[1] 2, many[2] none.
	release(many[1].ID, 1)
	release(many[2].ID, 3)

	var listed []lease.Key
	after := uuid.Nil
	for {
		page, err := b.store.ListKeys(b.ctx, "listed", after, 3)
		require.NoError(t, err)
		if len(page) == 0 {
			break
		}
		listed = append(listed, page...)
		after = page[len(page)-1].ID
	}
	require.Len(t, listed, len(ones)+len(many))
	held := 0
	for i, k := range listed {
		if i > 0 {
			require.Less(t, listed[i-1].ID.String(), k.ID.String(), "in id order")
		}
		got, err := b.store.Get(b.ctx, k.ID)
		require.NoError(t, err)
		require.Equal(t, got, k)
		require.NotNil(t, k.SeatsHeld)
		held += *k.SeatsHeld
		require.Positive(t, k.TimesClaimed)
	}
	counts, err := b.store.CountPool(b.ctx, "listed")
	require.NoError(t, err)
	require.Equal(t, counts.Held, int64(held), "the seats held that the page shows are the pool's")
}
