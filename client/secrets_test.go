package client_test

import (
	"crypto/rand"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/client"
	"github.com/tokenorchestrator/tokenorchestrator/internal/config"
	"github.com/tokenorchestrator/tokenorchestrator/internal/secrets"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/servertest"
)

func TestImportLabelsSecretsAndCooldowns(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	raw := make([]byte, secrets.KeySize)
	_, err := rand.Read(raw)
	require.NoError(t, err)
	kr, err := secrets.New(raw)
	require.NoError(t, err)
	c := newClient(t, servertest.Start(t, servertest.Options{
		SweepInterval: 20 * time.Millisecond,
		Configure:     func(cfg *config.Config) { cfg.Secrets = kr },
	}).URL)

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
