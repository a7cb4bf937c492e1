package config

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Access is who may call the API, and how long the HTTP server waits for
// slow clients.
type Access struct {
	// AdminToken, when set, is the bearer token that may call every route:
	// create and delete keys, stats, reports, metrics, and everything a
	// client may.
	AdminToken string
	// ClientToken, when set, is the bearer token that may lease, inspect,
	// keep alive and release keys. It needs an AdminToken beside it.
	ClientToken string
	// PublicHealth serves /healthz and /readyz without a token, for load
	// balancers and container health checks.
	PublicHealth bool
	// PublicMetrics serves /metrics without a token.
	PublicMetrics bool
	// AllowOpen lets the server listen beyond loopback with no token set.
	AllowOpen bool

	// ReadHeaderTimeout bounds the time a client may take to send the
	// request line and headers, however slowly it trickles them.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds the time a client may take to send a whole request,
	// body included.
	ReadTimeout time.Duration
	// WriteTimeout bounds the time from the end of the request headers to
	// the end of the answer. Zero: long enough for the longest wait for a
	// key (GET /keys?wait=60s) and its database calls.
	WriteTimeout time.Duration
	// IdleTimeout closes a kept-alive connection that sends no new request.
	IdleTimeout time.Duration
}

// minTokenLength keeps guessable tokens out: 16 characters is 64 bits of
// hex, a floor rather than a recommendation (openssl rand -hex 32).
const minTokenLength = 16

// accessFlags holds the raw values of the access and timeout settings until
// apply checks them, so that Load reports every invalid setting at once.
type accessFlags struct {
	adminToken, adminTokenFile   string
	clientToken, clientTokenFile string
	publicHealth, publicMetrics  string
	allowOpen                    string
	readHeader, read, idle       string
}

func (f *accessFlags) register(fs *flag.FlagSet, env func(name, fallback string) string) {
	// The token flags default to nothing, not to the environment: -h prints
	// defaults, and must not print a token.
	fs.StringVar(&f.adminToken, "admin-token", "", "bearer token for every route; prefer the env or a file: flags are visible to other users of the machine (env ADMIN_TOKEN)")
	fs.StringVar(&f.adminTokenFile, "admin-token-file", env("ADMIN_TOKEN_FILE", ""), "file holding the admin token (env ADMIN_TOKEN_FILE)")
	fs.StringVar(&f.clientToken, "client-token", "", "bearer token for claiming, inspecting, keeping alive and releasing keys (env CLIENT_TOKEN)")
	fs.StringVar(&f.clientTokenFile, "client-token-file", env("CLIENT_TOKEN_FILE", ""), "file holding the client token (env CLIENT_TOKEN_FILE)")
	f.publicHealth, f.publicMetrics, f.allowOpen = env("PUBLIC_HEALTH", "true"), env("PUBLIC_METRICS", "false"), env("ALLOW_OPEN", "false")
	fs.Var((*boolFlag)(&f.publicHealth), "public-health", "serve /healthz and /readyz without a token (env PUBLIC_HEALTH)")
	fs.Var((*boolFlag)(&f.publicMetrics), "public-metrics", "serve /metrics without a token (env PUBLIC_METRICS)")
	fs.Var((*boolFlag)(&f.allowOpen), "allow-open", "serve beyond loopback with no token set (env ALLOW_OPEN)")
	fs.StringVar(&f.readHeader, "http-read-header-timeout", env("HTTP_READ_HEADER_TIMEOUT", "10s"), "time a client gets to send its request headers (env HTTP_READ_HEADER_TIMEOUT)")
	fs.StringVar(&f.read, "http-read-timeout", env("HTTP_READ_TIMEOUT", "30s"), "time a client gets to send a whole request (env HTTP_READ_TIMEOUT)")
	fs.StringVar(&f.idle, "http-idle-timeout", env("HTTP_IDLE_TIMEOUT", "2m"), "an idle kept-alive connection is closed after this (env HTTP_IDLE_TIMEOUT)")
}

// apply checks the values and sets them on cfg.
func (f *accessFlags) apply(cfg *Config, env func(name, fallback string) string) []error {
	var errs []error
	token := func(name, fromFlag, file string) string {
		value := fromFlag
		if value == "" {
			value = env(name, "")
		}
		if file != "" {
			if value != "" {
				errs = append(errs, fmt.Errorf("%s and %s_FILE: set one, not both", name, name))
				return ""
			}
			raw, err := os.ReadFile(file)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s_FILE: %w", name, err))
				return ""
			}
			if value = strings.TrimSpace(string(raw)); value == "" {
				errs = append(errs, fmt.Errorf("%s_FILE: %s is empty", name, file))
				return ""
			}
		}
		// The messages never repeat the token.
		switch {
		case value == "":
		case len(value) < minTokenLength:
			errs = append(errs, fmt.Errorf("%s: must be at least %d characters (e.g. from openssl rand -hex 32)", name, minTokenLength))
		case strings.IndexFunc(value, func(r rune) bool { return r <= ' ' || r > '~' }) >= 0:
			errs = append(errs, fmt.Errorf("%s: must be printable ASCII without spaces, as it travels in an Authorization header", name))
		}
		return value
	}
	cfg.AdminToken = token("ADMIN_TOKEN", f.adminToken, f.adminTokenFile)
	cfg.ClientToken = token("CLIENT_TOKEN", f.clientToken, f.clientTokenFile)
	switch {
	case cfg.ClientToken != "" && cfg.AdminToken == "":
		errs = append(errs, errors.New("CLIENT_TOKEN: set ADMIN_TOKEN too; without it no token could create or delete keys"))
	case cfg.ClientToken != "" && cfg.ClientToken == cfg.AdminToken:
		errs = append(errs, errors.New("CLIENT_TOKEN: must differ from ADMIN_TOKEN, or every client would be an administrator"))
	}

	boolean := func(name, value string) bool {
		b, err := strconv.ParseBool(value)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %q is not true or false", name, value))
		}
		return b
	}
	cfg.PublicHealth = boolean("PUBLIC_HEALTH", f.publicHealth)
	cfg.PublicMetrics = boolean("PUBLIC_METRICS", f.publicMetrics)
	cfg.AllowOpen = boolean("ALLOW_OPEN", f.allowOpen)

	duration := func(name, value string) time.Duration {
		d, err := time.ParseDuration(value)
		if err != nil || d < time.Millisecond {
			errs = append(errs, fmt.Errorf("%s: %q is not a duration of at least 1ms (use e.g. 10s, 2m)", name, value))
		}
		return d
	}
	cfg.ReadHeaderTimeout = duration("HTTP_READ_HEADER_TIMEOUT", f.readHeader)
	cfg.ReadTimeout = duration("HTTP_READ_TIMEOUT", f.read)
	cfg.IdleTimeout = duration("HTTP_IDLE_TIMEOUT", f.idle)

	if cfg.AdminToken == "" && !cfg.AllowOpen {
		if host, _, err := net.SplitHostPort(cfg.Addr); err == nil && !isLoopback(host) {
			errs = append(errs, fmt.Errorf("ADDR: %s listens beyond loopback, and no ADMIN_TOKEN is set: anyone who reaches it "+
				"could take, release and delete every key. Set ADMIN_TOKEN and CLIENT_TOKEN, listen on 127.0.0.1, "+
				"or set ALLOW_OPEN=true to serve without tokens anyway", cfg.Addr))
		}
	}
	// The profiler asks for no token, and its command line shows any token
	// given as a flag.
	if cfg.DebugAddr != "" && !cfg.AllowOpen {
		if host, _, err := net.SplitHostPort(cfg.DebugAddr); err == nil && !isLoopback(host) {
			errs = append(errs, fmt.Errorf("DEBUG_ADDR: %s listens beyond loopback, and the profiler asks for no token: "+
				"anyone who reaches it could read the process's memory profile and command line. Listen on 127.0.0.1, "+
				"or set ALLOW_OPEN=true to serve it anyway", cfg.DebugAddr))
		}
	}
	return errs
}

// isLoopback tells whether host, as in ADDR, only accepts connections from
// this machine. An empty host listens on every interface; a name other than
// localhost may resolve to anything, so it counts as beyond loopback.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// boolFlag is a true-or-false flag that may be given without a value
// (-allow-open), checked later with the other settings.
type boolFlag string

func (b *boolFlag) String() string     { return string(*b) }
func (b *boolFlag) Set(v string) error { *b = boolFlag(v); return nil }
func (b *boolFlag) IsBoolFlag() bool   { return true }

// Open reports whether the API asks for no token at all.
func (a Access) Open() bool { return a.AdminToken == "" }
