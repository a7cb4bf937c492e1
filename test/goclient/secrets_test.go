package goclient_test

import (
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/client"
	"github.com/tokenorchestrator/tokenorchestrator/internal/config"
	"github.com/tokenorchestrator/tokenorchestrator/internal/secrets"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/servertest"
)

// withSecrets configures a replica with a random encryption key, so that
// it takes secrets.
func withSecrets(t *testing.T, o servertest.Options) servertest.Options {
	t.Helper()
	raw := make([]byte, secrets.KeySize)
	_, err := rand.Read(raw)
	require.NoError(t, err)
	kr, err := secrets.New(raw)
	require.NoError(t, err)
	o.Configure = func(cfg *config.Config) { cfg.Secrets = kr }
	return o
}

func TestImportLabelsSecretsAndCooldowns(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	c := newClient(t, servertest.Start(t, withSecrets(t, servertest.Options{SweepInterval: 20 * time.Millisecond})).URL)

	keys, err := c.ImportKeys(ctx, "api", []client.NewKey{
		{Secret: "sk-paid", Labels: map[string]string{"tier": "paid"}},
		{Secret: "sk-free", Labels: map[string]string{"tier": "free"}},
	})
	require.NoError(t, err)
	require.Len(t, keys, 2)
	require.Empty(t, keys[0].Secret, "an import never echoes secrets")
	_, err = c.ImportKeys(ctx, "api", []client.NewKey{{Secret: "sk-paid"}})
	require.ErrorIs(t, err, client.ErrDuplicateSecret)
	require.NotErrorIs(t, err, client.ErrLeaseLost)

	lease, err := c.Claim(ctx, "api", client.WithLabels("tier=paid"))
	require.NoError(t, err)
	require.Equal(t, "sk-paid", lease.Secret())
	require.Equal(t, map[string]string{"tier": "paid"}, lease.Key().Labels)
	withSecret, err := c.GetKeySecret(ctx, lease.ID(), lease.Token())
	require.NoError(t, err)
	require.Equal(t, "sk-paid", withSecret.Secret)

	require.NoError(t, lease.ReleaseWithCooldown(ctx, 300*time.Millisecond))
	info, err := c.GetKey(ctx, lease.ID())
	require.NoError(t, err)
	require.NotNil(t, info.CoolingUntil)
	_, err = c.ClaimKey(ctx, "api", 0, client.WithLabels("tier=paid"))
	require.ErrorIs(t, err, client.ErrNoKeyAvailable, "the key cools down")
	again, err := c.Claim(ctx, "api", client.WithLabels("tier=paid"))
	require.NoError(t, err)
	require.Equal(t, lease.ID(), again.ID())
	require.NoError(t, again.Release(ctx))

	plain := newClient(t, servertest.Start(t, servertest.Options{}).URL)
	_, err = plain.ImportKeys(ctx, "api", []client.NewKey{{Secret: "sk"}})
	require.ErrorIs(t, err, client.ErrSecretsNotConfigured)
}

// Secrets imported into a pool without a policy stay until deleted: their
// keys have no end of life, by GET, by HEAD and in JSON, and show the last
// four characters of their secrets.
func TestImportedKeysStayAndShowHints(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	replica := servertest.Start(t, withSecrets(t, servertest.Options{}))
	c := newClient(t, replica.URL)

	keys, err := c.ImportKeys(ctx, "stay", []client.NewKey{{Secret: "sk-live-0123456789abcd"}, {Secret: "short"}})
	require.NoError(t, err)
	require.Len(t, keys, 2)
	require.Nil(t, keys[0].ExpiresAt, "an imported key stays")
	require.Equal(t, "abcd", keys[0].SecretHint)
	require.Empty(t, keys[1].SecretHint, "a secret of fewer than 12 characters has no hint")
	require.Empty(t, keys[0].Name)

	info, err := c.GetKey(ctx, keys[0].ID)
	require.NoError(t, err)
	require.Nil(t, info.ExpiresAt)
	require.Equal(t, "abcd", info.SecretHint)
	head, err := c.HeadKey(ctx, keys[0].ID)
	require.NoError(t, err)
	require.Nil(t, head.ExpiresAt, "no X-Key-Expires-At: the key stays")
	require.Equal(t, info.CreatedAt, head.CreatedAt)

	resp, err := http.Get(replica.URL + "/keys/" + info.ID)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Contains(t, string(raw), `"expiresAt":null`)
	ours, err := json.Marshal(info)
	require.NoError(t, err)
	require.JSONEq(t, string(raw), string(ours), "a key that stays round-trips")
}

// An import names its keys, says which keys it skipped and whether it gave
// the pool its policy, and names the key that repeats a secret or a name;
// named keys are read and deleted by name.
func TestImportNamesAndKeysByName(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	c := newClient(t, servertest.Start(t, withSecrets(t, servertest.Options{})).URL)

	first, err := c.Import(ctx, "ai", []client.NewKey{
		{Secret: "sk-alpha-0000000001", Name: "alpha"},
		{Secret: "sk-beta-00000000002", Name: "beta", Labels: map[string]string{"tier": "paid"}},
	}, client.ImportOptions{})
	require.NoError(t, err)
	require.True(t, first.PolicyCreated, "the pool had no policy")
	require.Empty(t, first.Skipped)
	require.Len(t, first.Keys, 2)
	require.Equal(t, "alpha", first.Keys[0].Name)
	require.Equal(t, "0001", first.Keys[0].SecretHint)
	require.Equal(t, map[string]string{"tier": "paid"}, first.Keys[1].Labels)
	require.Nil(t, first.Keys[1].ExpiresAt)

	var apiErr *client.APIError
	_, err = c.Import(ctx, "ai", []client.NewKey{{Secret: "sk-gamma-0000000003"}, {Secret: "sk-alpha-0000000001"}}, client.ImportOptions{})
	require.ErrorIs(t, err, client.ErrDuplicateSecret)
	require.ErrorAs(t, err, &apiErr)
	require.Contains(t, apiErr.Detail, "keys[1]")
	_, err = c.Import(ctx, "ai", []client.NewKey{{Secret: "sk-gamma-0000000003"}, {Secret: "sk-delta-0000000004", Name: "alpha"}}, client.ImportOptions{})
	require.ErrorIs(t, err, client.ErrDuplicateName)
	require.NotErrorIs(t, err, client.ErrDuplicateSecret)
	require.NotErrorIs(t, err, client.ErrLeaseLost)
	require.ErrorContains(t, err, "keys[1]")
	_, err = c.ImportKeys(ctx, "ai", []client.NewKey{{Secret: "sk-gamma-0000000003"}, {Secret: "sk-gamma-0000000003"}})
	require.ErrorIs(t, err, client.ErrDuplicateSecret)
	require.ErrorContains(t, err, "keys[1] has the same secret as keys[0]")

	skipped, err := c.Import(ctx, "ai", []client.NewKey{
		{Secret: "sk-alpha-0000000001"},
		{Secret: "sk-gamma-0000000003", Name: "gamma", Labels: map[string]string{"who": "gamma"}},
		{Secret: "sk-epsilon-00000005", Name: "beta"},
	}, client.ImportOptions{SkipExisting: true})
	require.NoError(t, err)
	require.False(t, skipped.PolicyCreated, "the pool has its policy")
	require.Len(t, skipped.Keys, 1)
	require.Equal(t, "gamma", skipped.Keys[0].Name)
	require.Equal(t, []client.SkippedKey{{Index: 0, Reason: client.SkippedSecret}, {Index: 2, Reason: client.SkippedName}}, skipped.Skipped)

	gamma, err := c.GetKeyByName(ctx, "ai", "gamma")
	require.NoError(t, err)
	require.Equal(t, skipped.Keys[0].ID, gamma.ID)
	require.Equal(t, "0003", gamma.SecretHint)
	require.Empty(t, gamma.Secret)
	_, err = c.GetKeyByName(ctx, "other", "gamma")
	require.ErrorIs(t, err, client.ErrNotFound)

	held, err := c.ClaimKey(ctx, "ai", 0, client.WithLabels("who=gamma"))
	require.NoError(t, err)
	withSecret, err := c.GetKeySecretByName(ctx, "ai", "gamma", held.LeaseToken)
	require.NoError(t, err)
	require.Equal(t, "sk-gamma-0000000003", withSecret.Secret)
	_, err = c.GetKeySecretByName(ctx, "ai", "gamma", "999999")
	require.ErrorIs(t, err, client.ErrLeaseLost)

	deleted, err := c.DeleteKeyByName(ctx, "ai", "gamma")
	require.NoError(t, err)
	require.Equal(t, gamma.ID, deleted.ID)
	_, err = c.GetKeyByName(ctx, "ai", "gamma")
	require.ErrorIs(t, err, client.ErrNotFound)
	_, err = c.DeleteKeyByName(ctx, "ai", "gamma")
	require.ErrorIs(t, err, client.ErrNotFound)

	// An import may give the pool a key life instead.
	timed, err := c.Import(ctx, "timed", []client.NewKey{{Secret: "sk-timed-0000000006"}}, client.ImportOptions{KeyTTL: 24 * time.Hour})
	require.NoError(t, err)
	require.True(t, timed.PolicyCreated)
	require.NotNil(t, timed.Keys[0].ExpiresAt)
	require.WithinDuration(t, time.Now().Add(24*time.Hour), *timed.Keys[0].ExpiresAt, time.Minute)
	pool, err := c.GetPool(ctx, "timed")
	require.NoError(t, err)
	require.Equal(t, client.Policy{KeyTTL: new(24 * time.Hour)}, pool.Policy)
}
