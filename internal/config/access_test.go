package config

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const (
	adminToken  = "admin-0123456789abcdef"
	clientToken = "client-0123456789abcdef"
)

func TestAccessDefaults(t *testing.T) {
	t.Parallel()
	var help bytes.Buffer
	cfg, err := Load(nil, env(nil), &help)
	require.NoError(t, err)
	require.True(t, cfg.Open(), "no token by default, on loopback")
	require.True(t, cfg.PublicHealth)
	require.False(t, cfg.PublicMetrics)
	require.False(t, cfg.AllowOpen)
	require.Equal(t, 10*time.Second, cfg.ReadHeaderTimeout)
	require.Equal(t, 30*time.Second, cfg.ReadTimeout)
	require.Equal(t, 2*time.Minute, cfg.IdleTimeout)
	require.Zero(t, cfg.WriteTimeout, "derived from the longest wait by the server")
}

func TestTokensFromEnvironmentFlagsAndFiles(t *testing.T) {
	t.Parallel()
	cfg, err := Load(nil, env(map[string]string{"ADMIN_TOKEN": adminToken, "CLIENT_TOKEN": clientToken}), &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, adminToken, cfg.AdminToken)
	require.Equal(t, clientToken, cfg.ClientToken)
	require.False(t, cfg.Open())

	cfg, err = Load([]string{"-admin-token", adminToken + "-flag"}, env(map[string]string{"ADMIN_TOKEN": adminToken}), &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, adminToken+"-flag", cfg.AdminToken, "a flag wins over the environment")

	dir := t.TempDir()
	adminFile, clientFile := filepath.Join(dir, "admin"), filepath.Join(dir, "client")
	require.NoError(t, os.WriteFile(adminFile, []byte(adminToken+"\n"), 0o600))
	require.NoError(t, os.WriteFile(clientFile, []byte(clientToken), 0o600))
	cfg, err = Load([]string{"-client-token-file", clientFile}, env(map[string]string{"ADMIN_TOKEN_FILE": adminFile}), &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, adminToken, cfg.AdminToken, "the file's trailing newline is not part of the token")
	require.Equal(t, clientToken, cfg.ClientToken)

	// -h lists the settings without showing a token given in the environment.
	var help bytes.Buffer
	_, err = Load([]string{"-h"}, env(map[string]string{"ADMIN_TOKEN": adminToken, "CLIENT_TOKEN": clientToken}), &help)
	require.Error(t, err)
	require.Contains(t, help.String(), "ADMIN_TOKEN")
	require.NotContains(t, help.String(), adminToken)
	require.NotContains(t, help.String(), clientToken)
}

func TestBadAccessSettingsAreRefusedWithoutShowingTheToken(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	require.NoError(t, os.WriteFile(empty, []byte("\n"), 0o600))
	for _, tc := range []struct {
		vars    map[string]string
		message string
	}{
		{map[string]string{"ADMIN_TOKEN": "short-secret"}, "ADMIN_TOKEN: must be at least 16 characters"},
		{map[string]string{"ADMIN_TOKEN": "with space in the middle"}, "ADMIN_TOKEN: must be printable ASCII"},
		{map[string]string{"ADMIN_TOKEN": adminToken, "CLIENT_TOKEN": "naïve-token-of-sorts"}, "CLIENT_TOKEN: must be printable ASCII"},
		{map[string]string{"CLIENT_TOKEN": clientToken}, "CLIENT_TOKEN: set ADMIN_TOKEN too"},
		{map[string]string{"ADMIN_TOKEN": adminToken, "CLIENT_TOKEN": adminToken}, "CLIENT_TOKEN: must differ from ADMIN_TOKEN"},
		{map[string]string{"ADMIN_TOKEN": adminToken, "ADMIN_TOKEN_FILE": empty}, "ADMIN_TOKEN and ADMIN_TOKEN_FILE: set one, not both"},
		{map[string]string{"ADMIN_TOKEN_FILE": empty}, "ADMIN_TOKEN_FILE: " + empty + " is empty"},
		{map[string]string{"ADMIN_TOKEN_FILE": filepath.Join(dir, "missing")}, "ADMIN_TOKEN_FILE: open"},
		{map[string]string{"PUBLIC_HEALTH": "maybe"}, "PUBLIC_HEALTH"},
		{map[string]string{"PUBLIC_METRICS": "2"}, "PUBLIC_METRICS"},
		{map[string]string{"ALLOW_OPEN": "yes please"}, "ALLOW_OPEN"},
		{map[string]string{"HTTP_READ_HEADER_TIMEOUT": "0s"}, "HTTP_READ_HEADER_TIMEOUT"},
		{map[string]string{"HTTP_READ_TIMEOUT": "soon"}, "HTTP_READ_TIMEOUT"},
		{map[string]string{"HTTP_IDLE_TIMEOUT": "-1m"}, "HTTP_IDLE_TIMEOUT"},
	} {
		_, err := Load(nil, env(tc.vars), &bytes.Buffer{})
		require.ErrorContains(t, err, tc.message, "%v", tc.vars)
		for name, value := range tc.vars {
			if name == "ADMIN_TOKEN" || name == "CLIENT_TOKEN" {
				require.NotContains(t, err.Error(), value, "the message shows the token")
			}
		}
	}
}

// Beyond loopback, a server with no token refuses to start, and says why,
// unless told to run open.
func TestListeningBeyondLoopbackNeedsATokenOrAllowOpen(t *testing.T) {
	t.Parallel()
	for _, addr := range []string{":8080", "0.0.0.0:8080", "[::]:8080", "192.168.1.20:8080", "example.com:8080"} {
		_, err := Load(nil, env(map[string]string{"ADDR": addr}), &bytes.Buffer{})
		require.ErrorContains(t, err, "listens beyond loopback, and no ADMIN_TOKEN is set", addr)
		require.ErrorContains(t, err, "ALLOW_OPEN=true", addr)

		cfg, err := Load(nil, env(map[string]string{"ADDR": addr, "ALLOW_OPEN": "true"}), &bytes.Buffer{})
		require.NoError(t, err, addr)
		require.True(t, cfg.Open())
		_, err = Load([]string{"-allow-open"}, env(map[string]string{"ADDR": addr}), &bytes.Buffer{})
		require.NoError(t, err, addr)

		cfg, err = Load(nil, env(map[string]string{"ADDR": addr, "ADMIN_TOKEN": adminToken}), &bytes.Buffer{})
		require.NoError(t, err, addr)
		require.False(t, cfg.Open())
	}
	for _, addr := range []string{"127.0.0.1:8080", "127.0.0.2:0", "[::1]:8080", "localhost:8080"} {
		_, err := Load(nil, env(map[string]string{"ADDR": addr}), &bytes.Buffer{})
		require.NoError(t, err, addr)
		_, err = Load(nil, env(map[string]string{"DEBUG_ADDR": addr}), &bytes.Buffer{})
		require.NoError(t, err, addr)
	}
}

// The profiler has no token: beyond loopback it needs ALLOW_OPEN, tokens
// or not.
func TestProfilerBeyondLoopbackNeedsAllowOpen(t *testing.T) {
	t.Parallel()
	_, err := Load(nil, env(map[string]string{"DEBUG_ADDR": ":6060", "ADMIN_TOKEN": adminToken}), &bytes.Buffer{})
	require.ErrorContains(t, err, "DEBUG_ADDR: :6060 listens beyond loopback")
	require.ErrorContains(t, err, "ALLOW_OPEN=true")
	cfg, err := Load(nil, env(map[string]string{"DEBUG_ADDR": ":6060", "ALLOW_OPEN": "true"}), &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, ":6060", cfg.DebugAddr)
}

func TestTimeoutsFromEnvironmentAndFlags(t *testing.T) {
	t.Parallel()
	cfg, err := Load([]string{"-http-idle-timeout", "45s"}, env(map[string]string{
		"HTTP_READ_HEADER_TIMEOUT": "2s", "HTTP_READ_TIMEOUT": "5s", "HTTP_IDLE_TIMEOUT": "1m",
	}), &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, 2*time.Second, cfg.ReadHeaderTimeout)
	require.Equal(t, 5*time.Second, cfg.ReadTimeout)
	require.Equal(t, 45*time.Second, cfg.IdleTimeout)
}
