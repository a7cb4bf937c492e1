package store

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/lease"
)

// One batch may name the same key several times, with the current token, a
// stale one or none: each request gets the answer it would get alone.
func TestBatchedReleasesAnswerEachRequest(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, pool := internalStore(t, Config{KeyTTL: time.Hour, LeaseTTL: time.Hour})
	_, err := s.Create(ctx, "p", 3)
	require.NoError(t, err)
	held, err := s.ClaimMany(ctx, "p", 3)
	require.NoError(t, err)
	a, b, c := held[0], held[1], held[2]
	stale := *a.LeaseToken + 100
	zero := int64(0)

	results := s.runReleases(ctx, struct{}{}, []leaseRequest{
		{id: a.ID, token: &stale},       // stale, but the next request releases a
		{id: a.ID, token: nil},          // releases a
		{id: b.ID, token: &stale},       // stale: b stays held
		{id: c.ID, token: c.LeaseToken}, // releases c
		{id: c.ID, token: c.LeaseToken}, // the same release twice: both succeed
		{id: uuid.New(), token: nil},    // unknown
		{id: b.ID, token: &zero},        // a token below 1 names no lease
	})
	// Ordered after the release that freed a, the stale release finds a free
	// key: idempotent, nothing changed on its account.
	require.NoError(t, results[0].Err)
	require.False(t, results[0].Value.Held())
	require.NoError(t, results[1].Err)
	require.False(t, results[1].Value.Held())
	require.ErrorIs(t, results[2].Err, lease.ErrLeaseMismatch)
	require.NoError(t, results[3].Err)
	require.NoError(t, results[4].Err)
	require.ErrorIs(t, results[5].Err, lease.ErrKeyNotFound)
	require.ErrorIs(t, results[6].Err, lease.ErrLeaseMismatch)

	stillHeld, err := s.Get(ctx, b.ID)
	require.NoError(t, err)
	require.Equal(t, b, stillHeld)
	var released int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM key_events WHERE event = 'released'").Scan(&released))
	require.Equal(t, 2, released, "one history row per key released")
}

func TestBatchedKeepAlivesAnswerEachRequest(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := internalStore(t, Config{KeyTTL: time.Hour, LeaseTTL: time.Minute})
	_, err := s.Create(ctx, "p", 2)
	require.NoError(t, err)
	held, err := s.Claim(ctx, "p")
	require.NoError(t, err)
	free, err := s.ClaimMany(ctx, "p", 1)
	require.NoError(t, err)
	_, err = s.Release(ctx, free[0].ID, nil)
	require.NoError(t, err)
	stale := *held.LeaseToken + 100

	results := s.runKeepAlives(ctx, struct{}{}, []leaseRequest{
		{id: held.ID, token: held.LeaseToken},
		{id: held.ID, token: &stale},
		{id: free[0].ID, token: nil},
		{id: free[0].ID, token: free[0].LeaseToken}, // that lease ended
	})
	require.NoError(t, results[0].Err)
	require.True(t, results[0].Value.LeaseExpiresAt.After(*held.LeaseExpiresAt))
	require.ErrorIs(t, results[1].Err, lease.ErrLeaseMismatch)
	require.NoError(t, results[2].Err)
	require.NotNil(t, results[2].Value.LastKeepAliveAt)
	require.ErrorIs(t, results[3].Err, lease.ErrLeaseMismatch)
}

// A request without a token is not answered with the change that another
// request of its batch made under its own lease: a release without a token
// of a key of several seats changes nothing (428), and a keep-alive without
// a token is answered with its own change, whatever the other requests for
// the key.
func TestBatchedRequestsWithoutATokenTakeNoOtherLeasesChange(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := internalStore(t, Config{KeyTTL: time.Hour, LeaseTTL: time.Minute})
	keys, err := s.CreateSeats(ctx, "shared", 1, 2)
	require.NoError(t, err)
	id := keys[0].ID
	first, err := s.Claim(ctx, "shared")
	require.NoError(t, err)
	second, err := s.Claim(ctx, "shared")
	require.NoError(t, err)
	require.Equal(t, id, second.ID)

	kept := s.runKeepAlives(ctx, struct{}{}, []leaseRequest{
		{id: id, token: second.LeaseToken},
		{id: id, token: nil},
	})
	require.NoError(t, kept[0].Err)
	require.Equal(t, second.LeaseToken, kept[0].Value.LeaseToken)
	require.NoError(t, kept[1].Err)
	require.Nil(t, kept[1].Value.LeaseToken, "a key of several seats has no one lease to show")
	require.Nil(t, kept[1].Value.LeaseExpiresAt, "nor another client's deadline")

	released := s.runReleases(ctx, struct{}{}, []leaseRequest{
		{id: id, token: second.LeaseToken},
		{id: id, token: nil},
	})
	require.NoError(t, released[0].Err)
	require.ErrorIs(t, released[1].Err, lease.ErrSeatLeaseRequired, "answered with the other lease's release")
	mine, err := s.Get(ctx, id)
	require.NoError(t, err)
	require.Equal(t, 1, *mine.SeatsHeld, "the first lease is still held")
	_, err = s.Release(ctx, id, first.LeaseToken)
	require.NoError(t, err)

	// A key of one seat: the release without a token and the one with the
	// lease's token both succeed, as do the two keep-alives.
	single, err := s.Create(ctx, "single", 1)
	require.NoError(t, err)
	held, err := s.Claim(ctx, "single")
	require.NoError(t, err)
	require.Equal(t, single[0].ID, held.ID)
	kept = s.runKeepAlives(ctx, struct{}{}, []leaseRequest{
		{id: held.ID, token: held.LeaseToken},
		{id: held.ID, token: nil},
	})
	require.NoError(t, kept[0].Err)
	require.NoError(t, kept[1].Err)
	released = s.runReleases(ctx, struct{}{}, []leaseRequest{
		{id: held.ID, token: held.LeaseToken},
		{id: held.ID, token: nil},
	})
	require.NoError(t, released[0].Err)
	require.NoError(t, released[1].Err)
	require.False(t, released[1].Value.Held())

	// A pool that requires tokens: the release without one is refused,
	// though the release with the lease's token frees the key in its batch.
	_, _, err = s.PutPolicy(ctx, lease.Policy{Pool: "strict", RequireLeaseToken: true})
	require.NoError(t, err)
	_, err = s.Create(ctx, "strict", 1)
	require.NoError(t, err)
	strict, err := s.Claim(ctx, "strict")
	require.NoError(t, err)
	// So is the keep-alive without one, though the keep-alive with the
	// lease's token keeps the key alive in its batch.
	kept = s.runKeepAlives(ctx, struct{}{}, []leaseRequest{
		{id: strict.ID, token: strict.LeaseToken},
		{id: strict.ID, token: nil},
	})
	require.NoError(t, kept[0].Err)
	require.Equal(t, strict.LeaseToken, kept[0].Value.LeaseToken)
	require.ErrorIs(t, kept[1].Err, lease.ErrLeaseTokenRequired, "answered with the other request's keep-alive")
	released = s.runReleases(ctx, struct{}{}, []leaseRequest{
		{id: strict.ID, token: strict.LeaseToken},
		{id: strict.ID, token: nil},
	})
	require.NoError(t, released[0].Err)
	require.ErrorIs(t, released[1].Err, lease.ErrLeaseTokenRequired)
}
