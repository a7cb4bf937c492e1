package store_test

import (
	"crypto/rand"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/lease"
	"github.com/tokenorchestrator/tokenorchestrator/internal/secrets"
	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
)

func newKeyring(t *testing.T, older ...[]byte) (*secrets.Keyring, []byte) {
	t.Helper()
	raw := make([]byte, secrets.KeySize)
	_, err := rand.Read(raw)
	require.NoError(t, err)
	kr, err := secrets.New(raw, older...)
	require.NoError(t, err)
	return kr, raw
}

func TestSecretsSealedAndHandedOutOnlyToTheHolder(t *testing.T) {
	t.Parallel()
	kr, _ := newKeyring(t)
	b := setup(t, store.Config{Secrets: kr})

	created, err := b.store.CreateKeys(b.ctx, "p", []store.NewKey{{Secret: "sk-one", Labels: map[string]string{"tier": "paid"}}})
	require.NoError(t, err)
	require.Len(t, created, 1)
	require.Nil(t, created[0].Secret, "creation never answers the secret")
	require.Equal(t, map[string]string{"tier": "paid"}, created[0].Labels)

	// Stored sealed: neither the plaintext nor anything but the ciphertext.
	var stored []byte
	var keyID string
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT secret_ciphertext, secret_key_id FROM keys WHERE id = $1", created[0].ID).Scan(&stored, &keyID))
	require.NotContains(t, string(stored), "sk-one")
	require.Equal(t, kr.CurrentID(), keyID)

	got, err := b.store.Get(b.ctx, created[0].ID)
	require.NoError(t, err)
	require.Nil(t, got.Secret, "a plain read never carries the secret")

	claimed, err := b.store.Claim(b.ctx, "p")
	require.NoError(t, err)
	require.NotNil(t, claimed.Secret)
	require.Equal(t, "sk-one", *claimed.Secret)

	withToken, err := b.store.GetSecret(b.ctx, claimed.ID, *claimed.LeaseToken)
	require.NoError(t, err)
	require.Equal(t, "sk-one", *withToken.Secret)
	_, err = b.store.GetSecret(b.ctx, claimed.ID, *claimed.LeaseToken+1)
	require.ErrorIs(t, err, lease.ErrLeaseMismatch)

	_, err = b.store.Release(b.ctx, claimed.ID, claimed.LeaseToken)
	require.NoError(t, err)
	_, err = b.store.GetSecret(b.ctx, claimed.ID, *claimed.LeaseToken)
	require.ErrorIs(t, err, lease.ErrLeaseMismatch, "an ended lease no longer reads the secret")

	// A ciphertext moved to another row does not open there. The first key
	// goes, so that the claim below can only take the other.
	_, err = b.store.Delete(b.ctx, claimed.ID)
	require.NoError(t, err)
	other, err := b.store.CreateKeys(b.ctx, "p", []store.NewKey{{Secret: "sk-two"}})
	require.NoError(t, err)
	_, err = b.pool.Exec(b.ctx, "UPDATE keys SET secret_ciphertext = $1 WHERE id = $2", stored, other[0].ID)
	require.NoError(t, err)
	_, err = b.store.Claim(b.ctx, "p")
	require.ErrorIs(t, err, lease.ErrSecretUnavailable)
}

func TestSecretsRefusedWithoutKeyAndDuplicates(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{})
	_, err := b.store.CreateKeys(b.ctx, "p", []store.NewKey{{Labels: map[string]string{"a": "b"}}, {Secret: "sk"}})
	require.ErrorIs(t, err, lease.ErrNoEncryptionKey)
	var n int
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM keys").Scan(&n))
	require.Zero(t, n, "nothing stored")

	oldKR, oldRaw := newKeyring(t)
	old := setup(t, store.Config{Secrets: oldKR})
	_, err = old.store.CreateKeys(old.ctx, "p", []store.NewKey{{Secret: "sk-dup"}})
	require.NoError(t, err)
	_, err = old.store.CreateKeys(old.ctx, "p", []store.NewKey{{Secret: "sk-new"}, {Secret: "sk-dup"}})
	require.ErrorIs(t, err, lease.ErrDuplicateSecret)
	_, err = old.store.CreateKeys(old.ctx, "p", []store.NewKey{{Secret: "sk-x"}, {Secret: "sk-x"}})
	require.ErrorIs(t, err, lease.ErrDuplicateSecret)
	_, err = old.store.CreateKeys(old.ctx, "other", []store.NewKey{{Secret: "sk-dup"}})
	require.NoError(t, err, "another pool may carry the same secret")

	// After a rotation, rows sealed under the old key still count as
	// duplicates of a secret sealed under the new one.
	newKR, _ := newKeyring(t, oldRaw)
	rotated := store.New(old.pool, store.Config{KeyTTL: time.Hour, LeaseTTL: time.Hour, Secrets: newKR})
	_, err = rotated.CreateKeys(old.ctx, "p", []store.NewKey{{Secret: "sk-dup"}})
	require.ErrorIs(t, err, lease.ErrDuplicateSecret)
	require.NoError(t, old.pool.QueryRow(old.ctx, "SELECT count(*) FROM keys WHERE pool = 'p'").Scan(&n))
	require.Equal(t, 1, n)

	// Rotation reseals under the new key, resumably in batches; then the
	// new key alone opens every secret.
	resealed, last, err := rotated.ResealBatch(old.ctx, oldKR.CurrentID(), 1)
	require.NotEqual(t, uuid.Nil, last)
	require.NoError(t, err)
	require.Equal(t, 1, resealed)
	resealed, _, err = rotated.ResealBatch(old.ctx, oldKR.CurrentID(), 1)
	require.NoError(t, err)
	require.Equal(t, 1, resealed)
	resealed, _, err = rotated.ResealBatch(old.ctx, oldKR.CurrentID(), 10)
	require.NoError(t, err)
	require.Zero(t, resealed)
	var ids []string
	require.NoError(t, old.pool.QueryRow(old.ctx, "SELECT array_agg(DISTINCT secret_key_id) FROM keys").Scan(&ids))
	require.Equal(t, []string{newKR.CurrentID()}, ids)
	onlyNew := store.New(old.pool, store.Config{KeyTTL: time.Hour, LeaseTTL: time.Hour, Secrets: newKR.WithoutOlder()})
	k, err := onlyNew.Claim(old.ctx, "p")
	require.NoError(t, err)
	require.Equal(t, "sk-dup", *k.Secret)
	_, err = onlyNew.CreateKeys(old.ctx, "p", []store.NewKey{{Secret: "sk-dup"}})
	require.ErrorIs(t, err, lease.ErrDuplicateSecret, "the re-digested row still catches the duplicate")
}

func TestLabelledClaimsTakeOnlyMatchingKeys(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{})
	var keys []store.NewKey
	for i := range 60 {
		labels := map[string]string{"tier": "free"}
		switch i % 3 {
		case 0:
			labels = map[string]string{"tier": "paid", "region": "eu"}
		case 1:
			labels = map[string]string{"tier": "paid", "region": "us"}
		}
		keys = append(keys, store.NewKey{Labels: labels})
	}
	_, err := b.store.CreateKeys(b.ctx, "p", keys)
	require.NoError(t, err)
	_, err = b.store.Create(b.ctx, "p", 20)
	require.NoError(t, err)

	// 20 clients at once claim paid EU keys: each gets a distinct one, all
	// matching, and the 21st finds none.
	var mu sync.Mutex
	seen := map[uuid.UUID]bool{}
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := b.store.Claim(b.ctx, "p", "region=eu", "tier=paid")
			if !assertNoError(t, err) {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			require.Equal(t, "paid", k.Labels["tier"])
			require.Equal(t, "eu", k.Labels["region"])
			require.False(t, seen[k.ID], "a key claimed twice")
			seen[k.ID] = true
		}()
	}
	wg.Wait()
	require.Len(t, seen, 20)
	_, err = b.store.Claim(b.ctx, "p", "region=eu", "tier=paid")
	require.ErrorIs(t, err, lease.ErrNoFreeKey)
	_, err = b.store.Claim(b.ctx, "p", "tier=gold")
	require.ErrorIs(t, err, lease.ErrNoFreeKey)

	// A released labelled key is claimable by label again.
	var one uuid.UUID
	for id := range seen {
		one = id
		break
	}
	_, err = b.store.Release(b.ctx, one, nil)
	require.NoError(t, err)
	again, err := b.store.Claim(b.ctx, "p", "tier=paid", "region=eu")
	require.NoError(t, err)
	require.Equal(t, one, again.ID)

	// Plain claims take any key, labelled or not, and a labelled key so
	// claimed is no longer claimable by label.
	all, err := b.store.ClaimMany(b.ctx, "p", 100)
	require.NoError(t, err)
	require.Len(t, all, 60, "80 keys, 20 held")
	_, err = b.store.Claim(b.ctx, "p", "tier=free")
	require.ErrorIs(t, err, lease.ErrNoFreeKey)
}

func assertNoError(t *testing.T, err error) bool {
	t.Helper()
	if err != nil {
		t.Error(err)
		return false
	}
	return true
}

func TestCooldownKeepsKeyOutOfClaimsUntilItEnds(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{})
	created, err := b.store.CreateKeys(b.ctx, "p", []store.NewKey{{Labels: map[string]string{"tier": "paid"}}})
	require.NoError(t, err)
	k, err := b.store.Claim(b.ctx, "p")
	require.NoError(t, err)
	require.Equal(t, created[0].ID, k.ID)

	_, err = b.store.ReleaseWithCooldown(b.ctx, k.ID, k.LeaseToken, 25*time.Hour)
	require.ErrorIs(t, err, lease.ErrInvalidCooldown)
	cooling, err := b.store.ReleaseWithCooldown(b.ctx, k.ID, k.LeaseToken, 400*time.Millisecond)
	require.NoError(t, err)
	require.False(t, cooling.Held())
	require.NotNil(t, cooling.CoolingUntil)

	counts, err := b.store.CountPool(b.ctx, "p")
	require.NoError(t, err)
	require.Equal(t, int64(0), counts.Held, "a cooling key is under no lease")
	free, err := b.store.HasFree(b.ctx, "p")
	require.NoError(t, err)
	require.False(t, free)

	// Never cut short: claims and the background job leave it alone until
	// its time has come.
	for time.Now().Before(cooling.CoolingUntil.Add(-100 * time.Millisecond)) {
		_, err = b.store.Claim(b.ctx, "p")
		require.ErrorIs(t, err, lease.ErrNoFreeKey)
		_, err = b.store.Claim(b.ctx, "p", "tier=paid")
		require.ErrorIs(t, err, lease.ErrNoFreeKey)
		n, err := b.store.EndCooldowns(b.ctx, 10)
		require.NoError(t, err)
		require.Zero(t, n)
		time.Sleep(20 * time.Millisecond)
	}
	require.Eventually(t, func() bool {
		n, err := b.store.EndCooldowns(b.ctx, 10)
		require.NoError(t, err)
		return n == 1
	}, 5*time.Second, 20*time.Millisecond)
	var ended time.Time
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT now()").Scan(&ended))
	require.False(t, ended.Before(*cooling.CoolingUntil))

	again, err := b.store.Claim(b.ctx, "p", "tier=paid")
	require.NoError(t, err)
	require.Equal(t, k.ID, again.ID)
	require.Nil(t, again.CoolingUntil)

	// History records the cooldown with its length.
	var cooldown time.Duration
	require.NoError(t, b.pool.QueryRow(b.ctx,
		"SELECT extract(epoch FROM cooldown)::float8 * 1e9 FROM key_events WHERE key_id = $1 AND event = 'released'", k.ID).Scan(&cooldown))
	require.InDelta(t, float64(400*time.Millisecond), float64(cooldown), float64(time.Millisecond))
	counts, err = b.store.CountPool(b.ctx, "p")
	require.NoError(t, err)
	require.Equal(t, int64(1), counts.Held, "claimed again")
	require.Equal(t, int64(1), counts.Keys)

	// Deleting a cooling key leaves the counts right.
	_, err = b.store.ReleaseWithCooldown(b.ctx, again.ID, again.LeaseToken, time.Hour)
	require.NoError(t, err)
	_, err = b.store.Delete(b.ctx, again.ID)
	require.NoError(t, err)
	counts, err = b.store.CountPool(b.ctx, "p")
	require.NoError(t, err)
	require.Equal(t, store.PoolCounts{Pool: "p"}, counts)
	var labelRows int
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM key_labels").Scan(&labelRows))
	require.Zero(t, labelRows, "a deleted key's labels go with it")
}

// Mid-rotation, one replica seals under the old key and another under the
// new one, so they store different digests of one secret and the unique
// index cannot tell. Two such imports of the same secret at the same moment
// still create one key: the other is refused as a duplicate.
func TestConcurrentImportsAcrossARotationCreateOneKey(t *testing.T) {
	t.Parallel()
	_, oldRaw := newKeyring(t)
	_, newRaw := newKeyring(t)
	// Both replicas know both keys (the first step of a rotation); they
	// differ in the one they seal under.
	oldFirst, err := secrets.New(oldRaw, newRaw)
	require.NoError(t, err)
	newFirst, err := secrets.New(newRaw, oldRaw)
	require.NoError(t, err)
	a := setup(t, store.Config{Secrets: oldFirst})
	b := store.New(a.pool, store.Config{KeyTTL: time.Hour, LeaseTTL: time.Hour, Secrets: newFirst})

	const rounds = 40
	for round := range rounds {
		secret := "sk-race-" + uuid.NewString()
		start := make(chan struct{})
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for i, s := range []*store.Store{a.store, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, errs[i] = s.CreateKeys(a.ctx, "p", []store.NewKey{{Secret: secret}})
			}()
		}
		close(start)
		wg.Wait()
		created := 0
		for _, err := range errs {
			if err == nil {
				created++
			} else {
				require.ErrorIs(t, err, lease.ErrDuplicateSecret)
			}
		}
		require.Equal(t, 1, created, "round %d: one import of the secret succeeds, the other is a duplicate", round)
	}
	var n int
	require.NoError(t, a.pool.QueryRow(a.ctx, "SELECT count(*) FROM keys WHERE pool = 'p'").Scan(&n))
	require.Equal(t, rounds, n)
}

// A rotation is done only when no secret is sealed under the older key:
// a row that another statement holds locked is waited for, not skipped
// and forgotten.
func TestResealWaitsForLockedRows(t *testing.T) {
	t.Parallel()
	oldKR, oldRaw := newKeyring(t)
	b := setup(t, store.Config{Secrets: oldKR})
	created, err := b.store.CreateKeys(b.ctx, "p", []store.NewKey{{Secret: "sk-one-0123456789"}, {Secret: "sk-two-0123456789"}})
	require.NoError(t, err)

	// Another statement holds one of the rows.
	tx, err := b.pool.Begin(b.ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(b.ctx) }()
	_, err = tx.Exec(b.ctx, "SELECT 1 FROM keys WHERE id = $1 FOR UPDATE", created[0].ID)
	require.NoError(t, err)

	newKR, _ := newKeyring(t, oldRaw)
	rotated := store.New(b.pool, store.Config{KeyTTL: time.Hour, LeaseTTL: time.Hour, Secrets: newKR})
	type result struct {
		done int
		err  error
	}
	finished := make(chan result, 1)
	go func() {
		done, err := rotated.Reseal(b.ctx, oldKR.CurrentID(), 10, nil)
		finished <- result{done, err}
	}()
	select {
	case r := <-finished:
		t.Fatalf("the rotation ended with a row still locked under the old key: %d resealed, %v", r.done, r.err)
	case <-time.After(500 * time.Millisecond):
	}
	require.NoError(t, tx.Commit(b.ctx))
	r := <-finished
	require.NoError(t, r.err)
	require.Equal(t, 2, r.done)
	var ids []string
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT array_agg(DISTINCT secret_key_id) FROM keys").Scan(&ids))
	require.Equal(t, []string{newKR.CurrentID()}, ids)
}

// A key whose secret this server cannot open (sealed under an encryption
// key it is not configured with) fails neither the claims of its batch nor
// the ones after it: it is set aside with a cooldown, and the claim takes
// the other keys.
func TestKeyWhoseSecretDoesNotOpenIsSetAside(t *testing.T) {
	t.Parallel()
	goodKR, _ := newKeyring(t)
	otherKR, _ := newKeyring(t)
	b := setup(t, store.Config{Secrets: goodKR})
	good, err := b.store.CreateKeys(b.ctx, "p", []store.NewKey{{Secret: "sk-good-0123456789"}})
	require.NoError(t, err)
	foreign := store.New(b.pool, store.Config{KeyTTL: time.Hour, LeaseTTL: time.Hour, Secrets: otherKR})
	bad, err := foreign.CreateKeys(b.ctx, "p", []store.NewKey{{Secret: "sk-bad-0123456789"}})
	require.NoError(t, err)

	claimed, err := b.store.ClaimMany(b.ctx, "p", 2)
	require.NoError(t, err, "the good key is handed out")
	require.Len(t, claimed, 1)
	require.Equal(t, good[0].ID, claimed[0].ID)
	require.Equal(t, "sk-good-0123456789", *claimed[0].Secret)

	setAside, err := b.store.Get(b.ctx, bad[0].ID)
	require.NoError(t, err)
	require.False(t, setAside.Held())
	require.NotNil(t, setAside.CoolingUntil, "the key that does not open cools down")
	_, err = b.store.Claim(b.ctx, "p")
	require.ErrorIs(t, err, lease.ErrNoFreeKey, "and no claim takes it meanwhile")

	// Once it is released, the good key is claimed again: never the other.
	_, err = b.store.Release(b.ctx, claimed[0].ID, claimed[0].LeaseToken)
	require.NoError(t, err)
	for range 5 {
		k, err := b.store.Claim(b.ctx, "p")
		require.NoError(t, err)
		require.Equal(t, good[0].ID, k.ID)
		_, err = b.store.Release(b.ctx, k.ID, k.LeaseToken)
		require.NoError(t, err)
	}
}

// A key of several seats whose secret does not open is set aside as a
// whole: claims do not take its seats one at a time (each time failing
// with secret_unavailable) while a good key is free.
func TestKeyOfSeveralSeatsWhoseSecretDoesNotOpenIsSetAsideWhole(t *testing.T) {
	t.Parallel()
	goodKR, _ := newKeyring(t)
	otherKR, _ := newKeyring(t)
	b := setup(t, store.Config{Secrets: goodKR})
	good, err := b.store.CreateKeys(b.ctx, "p", []store.NewKey{{Secret: "sk-good-0123456789"}})
	require.NoError(t, err)
	// With the good key held, a claim can meet only the bad key's seats.
	held, err := b.store.Claim(b.ctx, "p")
	require.NoError(t, err)
	require.Equal(t, good[0].ID, held.ID)
	foreign := store.New(b.pool, store.Config{KeyTTL: time.Hour, LeaseTTL: time.Hour, Secrets: otherKR})
	bad, err := foreign.CreateKeys(b.ctx, "p", []store.NewKey{{Secret: "sk-bad-0123456789", Seats: 20, Labels: map[string]string{"tier": "paid"}}})
	require.NoError(t, err)
	_, err = b.store.Claim(b.ctx, "p")
	require.ErrorIs(t, err, lease.ErrSecretUnavailable)
	var claimable, labelled, cooledDown int
	require.NoError(t, b.pool.QueryRow(b.ctx,
		"SELECT count(*) FILTER (WHERE cooling_until IS NULL) FROM key_state WHERE key_id = $1", bad[0].ID).Scan(&claimable))
	require.Zero(t, claimable, "every seat of the key cools down, not only the one the claim met")
	require.NoError(t, b.pool.QueryRow(b.ctx,
		"SELECT count(position) FROM key_labels WHERE key_id = $1", bad[0].ID).Scan(&labelled))
	require.Zero(t, labelled, "nor is any of them claimable by label")
	require.NoError(t, b.pool.QueryRow(b.ctx,
		"SELECT count(*) FROM key_events WHERE key_id = $1 AND event = 'cooled_down' AND cooldown = interval '1 minute'", bad[0].ID).Scan(&cooledDown))
	require.Equal(t, 19, cooledDown, "history records the other seats' cooldowns; the seat the claim met has its released event")
	_, err = b.store.ClaimManyLabelled(b.ctx, "p", 1, []string{"tier=paid"})
	require.ErrorIs(t, err, lease.ErrNoFreeKey)

	// Released, the good key is the one every claim gets.
	_, err = b.store.Release(b.ctx, held.ID, held.LeaseToken)
	require.NoError(t, err)
	for range 10 {
		k, err := b.store.Claim(b.ctx, "p")
		require.NoError(t, err)
		require.Equal(t, good[0].ID, k.ID)
		_, err = b.store.Release(b.ctx, k.ID, k.LeaseToken)
		require.NoError(t, err)
	}
}

// An idempotent claim that meets a key whose secret does not open fails,
// its claim undone, and sets the key aside: the client's next try with the
// same idempotency key takes another key.
func TestIdempotentClaimSetsAsideAKeyWhoseSecretDoesNotOpen(t *testing.T) {
	t.Parallel()
	goodKR, _ := newKeyring(t)
	otherKR, _ := newKeyring(t)
	b := setup(t, store.Config{Secrets: goodKR})
	good, err := b.store.CreateKeys(b.ctx, "p", []store.NewKey{{Secret: "sk-good-0123456789"}})
	require.NoError(t, err)
	held, err := b.store.Claim(b.ctx, "p")
	require.NoError(t, err)
	foreign := store.New(b.pool, store.Config{KeyTTL: time.Hour, LeaseTTL: time.Hour, Secrets: otherKR})
	bad, err := foreign.CreateKeys(b.ctx, "p", []store.NewKey{{Secret: "sk-bad-0123456789"}})
	require.NoError(t, err)

	_, _, err = b.store.ClaimIdempotent(b.ctx, "p", "retry-me")
	require.ErrorIs(t, err, lease.ErrSecretUnavailable)
	setAside, err := b.store.Get(b.ctx, bad[0].ID)
	require.NoError(t, err)
	require.False(t, setAside.Held(), "the claim is undone")
	require.NotNil(t, setAside.CoolingUntil, "and the key set aside")

	_, err = b.store.Release(b.ctx, held.ID, held.LeaseToken)
	require.NoError(t, err)
	again, replayed, err := b.store.ClaimIdempotent(b.ctx, "p", "retry-me")
	require.NoError(t, err)
	require.False(t, replayed)
	require.Equal(t, good[0].ID, again.ID)
	require.Equal(t, "sk-good-0123456789", *again.Secret)
}
