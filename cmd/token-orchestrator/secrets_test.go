package main

import (
	"crypto/rand"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/client"
	"github.com/tokenorchestrator/tokenorchestrator/internal/config"
	"github.com/tokenorchestrator/tokenorchestrator/internal/secrets"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/servertest"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

func newEncodedKey(t *testing.T) string {
	raw := make([]byte, secrets.KeySize)
	_, err := rand.Read(raw)
	require.NoError(t, err)
	return base64.StdEncoding.EncodeToString(raw)
}

func serverWithKeys(t *testing.T, dbURL string, env map[string]string) string {
	t.Helper()
	kr, err := config.LoadSecrets(func(name string) string { return env[name] })
	require.NoError(t, err)
	return servertest.Start(t, servertest.Options{DatabaseURL: dbURL, Configure: func(cfg *config.Config) { cfg.Secrets = kr }}).URL
}

// Import secrets from a file and from standard input, rotate the
// encryption key, and claim them with the new key alone.
func TestKeysImportAndSecretsRotate(t *testing.T) {
	dbURL := testdb.New(t)
	oldKey, newKey := newEncodedKey(t), newEncodedKey(t)
	oldServer := serverWithKeys(t, dbURL, map[string]string{"SECRET_KEY": oldKey})
	env := map[string]string{"TOKEN_ORCHESTRATOR_SERVER": oldServer}

	file := filepath.Join(t.TempDir(), "secrets.txt")
	require.NoError(t, os.WriteFile(file, []byte("sk-one\n\n  sk-two  \nsk-three\n"), 0o600))
	imported := run(t, runKeys, env, "import", "--pool", "api", "--label", "tier=paid", "--batch", "2", file)
	require.Equal(t, exitOK, imported.code, imported.stderr)
	require.Contains(t, imported.stdout, "Imported 3 keys into pool api.")
	require.NotContains(t, imported.stdout+imported.stderr, "sk-one")

	stdin = strings.NewReader("sk-four\n")
	t.Cleanup(func() { stdin = os.Stdin })
	fromStdin := run(t, runKeys, env, "import", "--pool", "api", "-")
	require.Equal(t, exitOK, fromStdin.code, fromStdin.stderr)
	stdin = strings.NewReader("sk-one\n")
	duplicate := run(t, runKeys, env, "import", "--pool", "api")
	require.Equal(t, exitFailed, duplicate.code)
	require.Contains(t, duplicate.stderr, "duplicate_secret")
	require.Equal(t, exitUsage, run(t, runKeys, env, "import").code, "--pool is required")

	rotateEnv := map[string]string{"DATABASE_URL": dbURL, "SECRET_KEY": newKey, "SECRET_KEYS_OLD": oldKey}
	rotated := run(t, runSecrets, rotateEnv, "rotate", "--batch", "3")
	require.Equal(t, exitOK, rotated.code, rotated.stderr)
	require.Contains(t, rotated.stdout, "Done: 4 rows re-encrypted")
	require.NotContains(t, rotated.stdout+rotated.stderr, newKey)
	again := run(t, runSecrets, rotateEnv, "rotate")
	require.Equal(t, exitOK, again.code, again.stderr)
	require.Contains(t, again.stdout, "Done: 0 rows re-encrypted", "resumable: nothing left")
	bad := run(t, runSecrets, map[string]string{"DATABASE_URL": dbURL, "SECRET_KEY": "c2hvcnQ="}, "rotate")
	require.Equal(t, exitUsage, bad.code)
	require.Contains(t, bad.stderr, "SECRET_KEY: the key must decode to 32 bytes")
	require.NotContains(t, bad.stderr, "c2hvcnQ=")

	c, err := client.New(serverWithKeys(t, dbURL, map[string]string{"SECRET_KEY": newKey}))
	require.NoError(t, err)
	seen := map[string]bool{}
	for range 4 {
		k, err := c.ClaimKey(t.Context(), "api", 0)
		require.NoError(t, err)
		seen[k.Secret] = true
	}
	require.Equal(t, map[string]bool{"sk-one": true, "sk-two": true, "sk-three": true, "sk-four": true}, seen)

	// keys get --label claims only a key that carries the label: of a
	// labelled and an unlabelled free key, the labelled one, then none.
	labelEnv := map[string]string{"TOKEN_ORCHESTRATOR_SERVER": serverWithKeys(t, dbURL, map[string]string{"SECRET_KEY": newKey})}
	stdin = strings.NewReader("sk-lab-free\n")
	require.Equal(t, exitOK, run(t, runKeys, labelEnv, "import", "--pool", "lab", "--label", "tier=free").code)
	stdin = strings.NewReader("sk-lab-none\n")
	require.Equal(t, exitOK, run(t, runKeys, labelEnv, "import", "--pool", "lab").code)
	got := run(t, runKeys, labelEnv, "get", "--pool", "lab", "--label", "tier=free", "--json")
	require.Equal(t, exitOK, got.code, got.stderr)
	require.Contains(t, got.stdout, `"tier": "free"`)
	none := run(t, runKeys, labelEnv, "get", "--pool", "lab", "--label", "tier=free")
	require.Equal(t, exitNoKey, none.code, "the unlabelled key is free but does not match: %s", none.stderr)
	require.Equal(t, exitUsage, run(t, runKeys, labelEnv, "get", "--pool", "lab", "--label", "tier").code)
}
