package store

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The search for ended leases starts just below the previous pass's moment
// once a pass has come to their end, and from the start of the index once a
// minute: a lease whose deadline lies below the start (its release was
// skipped and then rolled back) is still released by the next search from
// the start.
func TestEndedLeasesAreFoundFromTheMomentBeforeAndOnceAMinuteFromTheStart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, pool := internalStore(t, Config{KeyTTL: time.Hour, LeaseTTL: time.Hour})
	_, err := s.Create(ctx, "p", 3)
	require.NoError(t, err)

	n, err := s.ReleaseEndedLeases(ctx, 10)
	require.NoError(t, err)
	require.Zero(t, n)
	require.NotNil(t, s.ended.from, "a search from the start that came to the end sets where the next starts")
	from := *s.ended.from

	// A lease whose deadline lies an hour below that start.
	straggler, err := s.Claim(ctx, "p")
	require.NoError(t, err)
	_, err = pool.Exec(ctx, "UPDATE key_state SET lease_expires_at = now() - interval '1 hour' WHERE key_id = $1", straggler.ID)
	require.NoError(t, err)
	// And one that ends now, above it.
	ending, err := s.Claim(ctx, "p")
	require.NoError(t, err)
	_, err = pool.Exec(ctx, "UPDATE key_state SET lease_expires_at = now() WHERE key_id = $1", ending.ID)
	require.NoError(t, err)

	n, err = s.ReleaseEndedLeases(ctx, 10)
	require.NoError(t, err)
	require.Equal(t, 1, n, "only the lease above the start")
	require.False(t, s.ended.from.Before(from), "the start never moves back")
	held, err := s.Get(ctx, straggler.ID)
	require.NoError(t, err)
	require.True(t, held.Held())

	s.ended.mu.Lock()
	s.ended.lastFull = time.Now().Add(-endedLeasesFullEvery)
	s.ended.mu.Unlock()
	n, err = s.ReleaseEndedLeases(ctx, 10)
	require.NoError(t, err)
	require.Equal(t, 1, n, "the search from the start finds it")
	freed, err := s.Get(ctx, straggler.ID)
	require.NoError(t, err)
	require.False(t, freed.Held())
}
