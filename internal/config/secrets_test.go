package config

import (
	"crypto/rand"
	"encoding/base64"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/secrets"
)

func encodedKey(t *testing.T) string {
	raw := make([]byte, secrets.KeySize)
	_, err := rand.Read(raw)
	require.NoError(t, err)
	return base64.StdEncoding.EncodeToString(raw)
}

func TestSecretKeys(t *testing.T) {
	t.Parallel()
	cfg, err := Load(nil, env(nil), io.Discard)
	require.NoError(t, err)
	require.False(t, cfg.Secrets.Enabled(), "no key: secrets are refused")

	current, old1, old2 := encodedKey(t), encodedKey(t), encodedKey(t)
	cfg, err = Load(nil, env(map[string]string{"SECRET_KEY": current, "SECRET_KEYS_OLD": old1 + ", " + old2}), io.Discard)
	require.NoError(t, err)
	require.Len(t, cfg.Secrets.IDs(), 3)

	dir := t.TempDir()
	keyFile, oldFile := filepath.Join(dir, "key"), filepath.Join(dir, "old")
	require.NoError(t, os.WriteFile(keyFile, []byte(current+"\n"), 0o600))
	require.NoError(t, os.WriteFile(oldFile, []byte("# retired in May\n"+old1+"\n\n"+old2+"\n"), 0o600))
	fromFiles, err := Load(nil, env(map[string]string{"SECRET_KEY_FILE": keyFile, "SECRET_KEYS_OLD_FILE": oldFile}), io.Discard)
	require.NoError(t, err)
	require.Equal(t, cfg.Secrets.IDs(), fromFiles.Secrets.IDs(), "ids are derived from the keys")

	// Errors name the setting (and the line), never the value.
	short := base64.StdEncoding.EncodeToString([]byte("too short"))
	for _, tc := range []struct {
		vars map[string]string
		want string
	}{
		{map[string]string{"SECRET_KEY": short}, "SECRET_KEY: the key must decode to 32 bytes, got 9"},
		{map[string]string{"SECRET_KEY": "not!base64"}, "SECRET_KEY: the key is not standard base64"},
		{map[string]string{"SECRET_KEY": current, "SECRET_KEY_FILE": keyFile}, "SECRET_KEY and SECRET_KEY_FILE are both set"},
		{map[string]string{"SECRET_KEY_FILE": filepath.Join(dir, "missing")}, "SECRET_KEY_FILE: cannot read the file"},
		{map[string]string{"SECRET_KEY": current, "SECRET_KEYS_OLD": old1 + "," + short}, "SECRET_KEYS_OLD: entry 2 must decode to 32 bytes"},
		{map[string]string{"SECRET_KEYS_OLD": old1}, "SECRET_KEYS_OLD is set but SECRET_KEY"},
	} {
		_, err := Load(nil, env(tc.vars), io.Discard)
		require.ErrorContains(t, err, tc.want)
		for _, v := range tc.vars {
			if v != keyFile && v != filepath.Join(dir, "missing") {
				require.NotContains(t, err.Error(), v)
			}
		}
	}
}
