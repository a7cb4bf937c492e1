package client_test

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
