package secrets_test

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/secrets"
)

func randomKey(t *testing.T) []byte {
	raw := make([]byte, secrets.KeySize)
	_, err := rand.Read(raw)
	require.NoError(t, err)
	return raw
}

func TestSealOpenBindsRowAndKey(t *testing.T) {
	t.Parallel()
	oldRaw, newRaw := randomKey(t), randomKey(t)
	old, err := secrets.New(oldRaw)
	require.NoError(t, err)
	kr, err := secrets.New(newRaw, oldRaw)
	require.NoError(t, err)
	require.Equal(t, []string{kr.CurrentID(), old.CurrentID()}, kr.IDs())

	row, other := uuid.New(), uuid.New()
	sealed, err := old.Seal(row, []byte("sk-secret"))
	require.NoError(t, err)
	require.False(t, bytes.Contains(sealed.Ciphertext, []byte("sk-secret")))
	again, err := old.Seal(row, []byte("sk-secret"))
	require.NoError(t, err)
	require.NotEqual(t, sealed.Ciphertext, again.Ciphertext, "a random nonce per seal")

	plain, err := kr.Open(row, sealed)
	require.NoError(t, err, "an older key still opens")
	require.Equal(t, "sk-secret", string(plain))
	_, err = kr.Open(other, sealed)
	require.ErrorIs(t, err, secrets.ErrOpen, "moved to another row")
	_, err = kr.Open(row, secrets.Sealed{KeyID: kr.CurrentID(), Ciphertext: sealed.Ciphertext})
	require.ErrorIs(t, err, secrets.ErrOpen, "relabelled with another key id")
	_, err = kr.WithoutOlder().Open(row, sealed)
	require.ErrorIs(t, err, secrets.ErrUnknownKey)

	digests, err := kr.Digests([]byte("sk-secret"))
	require.NoError(t, err)
	oldDigest, err := old.Digest([]byte("sk-secret"))
	require.NoError(t, err)
	require.Equal(t, oldDigest, digests[1])
	require.NotEqual(t, digests[0], digests[1])

	var none *secrets.Keyring
	_, err = none.Seal(row, []byte("x"))
	require.ErrorIs(t, err, secrets.ErrNoKey)
}

func TestKeyringNeverPrintsMaterial(t *testing.T) {
	t.Parallel()
	raw := randomKey(t)
	kr, err := secrets.New(raw)
	require.NoError(t, err)
	for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
		out := fmt.Sprintf(format, kr)
		require.NotContains(t, out, string(raw))
		require.NotContains(t, out, fmt.Sprintf("%x", raw[:8]))
		require.Contains(t, out, kr.CurrentID())
	}
	_, err = secrets.ParseKey("not base64 at all!")
	require.ErrorContains(t, err, "base64")
	require.NotContains(t, err.Error(), "not base64 at all")
}
