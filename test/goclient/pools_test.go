package goclient_test

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/client"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/servertest"
)

// A pool's policy is set, shown with what applies and the counts, listed,
// obeyed (lease tokens required) and deleted, the pool's keys with it only
// when asked.
func TestPoolPolicies(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	replica := servertest.Start(t, servertest.Options{KeyTTL: time.Hour, LeaseTTL: time.Minute})
	c := newClient(t, replica.URL)
	_, err := c.CreateKeys(ctx, "strict", 2)
	require.NoError(t, err)

	plain, err := c.GetPool(ctx, "strict")
	require.NoError(t, err)
	require.Equal(t, client.Pool{
		Name: "strict", Keys: 2, Seats: 2, Free: 2,
		Effective: client.EffectivePolicy{KeyTTL: new(time.Hour), LeaseTTL: time.Minute, MaxWait: client.MaxWait, Seats: 1},
	}, plain, "no policy: the server's settings apply")
	_, err = c.GetPool(ctx, "nobody")
	require.ErrorIs(t, err, client.ErrUnknownPool)
	var apiErr *client.APIError
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, "unknown_pool", apiErr.Code)

	policy := client.Policy{KeysStay: true, LeaseTTL: new(2 * time.Minute), MaxLeaseTTL: new(time.Hour),
		RequireLeaseToken: true, MaxWait: new(100 * time.Millisecond)}
	put, err := c.PutPool(ctx, "strict", policy)
	require.NoError(t, err)
	require.True(t, put.HasPolicy)
	require.Equal(t, policy, put.Policy)
	require.Equal(t, client.EffectivePolicy{LeaseTTL: 2 * time.Minute, MaxLeaseTTL: new(time.Hour),
		RequireLeaseToken: true, MaxWait: 100 * time.Millisecond, Seats: 1}, put.Effective)
	require.Equal(t, 2, put.KeysRebased, "the keys stay from now on")
	require.NotNil(t, put.CreatedAt)
	require.EqualValues(t, 2, put.Keys)

	// The server writes a pool as the client does.
	resp, err := http.Get(replica.URL + "/pools/strict")
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	got, err := c.GetPool(ctx, "strict")
	require.NoError(t, err)
	ours, err := json.Marshal(got)
	require.NoError(t, err)
	require.JSONEq(t, string(raw), string(ours))
	require.Equal(t, policy, got.Policy)

	// Releases and keep-alives must name the lease now.
	held, err := c.ClaimKey(ctx, "strict", 0)
	require.NoError(t, err)
	require.Nil(t, held.ExpiresAt, "a key of the pool stays")
	_, err = c.ReleaseKey(ctx, held.ID, "")
	require.ErrorIs(t, err, client.ErrLeaseTokenRequired)
	require.NotErrorIs(t, err, client.ErrLeaseLost)
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, http.StatusPreconditionRequired, apiErr.Status)
	_, err = c.KeepAlive(ctx, held.ID, "")
	require.ErrorIs(t, err, client.ErrLeaseTokenRequired)
	_, err = c.ReleaseKey(ctx, held.ID, held.LeaseToken)
	require.NoError(t, err)
	lease, err := c.Claim(ctx, "strict")
	require.NoError(t, err)
	require.NoError(t, lease.Release(ctx), "a lease presents its token")

	// A policy is replaced whole: what it leaves out is the server's again.
	put, err = c.PutPool(ctx, "strict", client.Policy{KeyTTL: new(24 * time.Hour)})
	require.NoError(t, err)
	require.Equal(t, client.Policy{KeyTTL: new(24 * time.Hour)}, put.Policy)
	require.Equal(t, time.Minute, put.Effective.LeaseTTL)
	_, err = c.PutPool(ctx, "strict", client.Policy{KeyTTL: new(time.Hour), KeysStay: true})
	require.ErrorContains(t, err, "exclude each other")
	_, err = c.PutPool(ctx, "strict", client.Policy{LeaseTTL: new(-time.Second)})
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, "invalid_body", apiErr.Code)

	// A pool may have a policy and no keys yet.
	empty, err := c.PutPool(ctx, "later", client.Policy{MaxWait: new(5 * time.Second)})
	require.NoError(t, err)
	require.EqualValues(t, 0, empty.Keys)
	pools, err := c.ListPools(ctx)
	require.NoError(t, err)
	var names []string
	for _, p := range pools {
		names = append(names, p.Name)
		if p.Name == "later" {
			require.Equal(t, 5*time.Second, p.Effective.MaxWait)
		}
	}
	require.Equal(t, []string{"later", "strict"}, names)

	deleted, err := c.DeletePool(ctx, "strict", false)
	require.ErrorIs(t, err, client.ErrPoolNotEmpty)
	require.NotErrorIs(t, err, client.ErrLeaseLost)
	require.Zero(t, deleted)
	_, err = c.GetPool(ctx, "strict")
	require.NoError(t, err, "a refused delete changed nothing")
	deleted, err = c.DeletePool(ctx, "strict", true)
	require.NoError(t, err)
	require.Equal(t, 2, deleted)
	_, err = c.GetPool(ctx, "strict")
	require.ErrorIs(t, err, client.ErrUnknownPool)
	_, err = c.DeletePool(ctx, "strict", false)
	require.ErrorIs(t, err, client.ErrUnknownPool)
	deleted, err = c.DeletePool(ctx, "later", false)
	require.NoError(t, err)
	require.Zero(t, deleted)
}

// A pool's seats reach the client: a key is claimed up to its seats, each
// claim with its own token, and a release names its lease.
func TestSeatsThroughTheClient(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	replica := servertest.Start(t, servertest.Options{KeyTTL: time.Hour, LeaseTTL: time.Minute})
	c := newClient(t, replica.URL)
	put, err := c.PutPool(ctx, "shared", client.Policy{Seats: 2})
	require.NoError(t, err)
	require.Equal(t, 2, put.Policy.Seats)
	require.Equal(t, 2, put.Effective.Seats)
	keys, err := c.CreateKeysWithSeats(ctx, "shared", 1, 3)
	require.NoError(t, err)
	require.Equal(t, 3, keys[0].Seats)

	var tokens []string
	for range 3 {
		k, err := c.ClaimKey(ctx, "shared", 0)
		require.NoError(t, err)
		require.Equal(t, keys[0].ID, k.ID)
		tokens = append(tokens, k.LeaseToken)
	}
	require.Len(t, map[string]bool{tokens[0]: true, tokens[1]: true, tokens[2]: true}, 3)
	_, err = c.ClaimKey(ctx, "shared", 0)
	require.ErrorIs(t, err, client.ErrNoKeyAvailable)
	_, err = c.ReleaseKey(ctx, keys[0].ID, "")
	require.ErrorIs(t, err, client.ErrLeaseTokenRequired, "a key of several seats needs the lease named")

	whole, err := c.GetKey(ctx, keys[0].ID)
	require.NoError(t, err)
	require.Equal(t, 3, *whole.SeatsHeld)
	head, err := c.HeadKey(ctx, keys[0].ID)
	require.NoError(t, err)
	require.Equal(t, 3, head.Seats)
	require.Equal(t, 3, *head.SeatsHeld)
	pool, err := c.GetPool(ctx, "shared")
	require.NoError(t, err)
	require.Equal(t, []int64{1, 3, 0, 3}, []int64{pool.Keys, pool.Seats, pool.Free, pool.Held})
}
