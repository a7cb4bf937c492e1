package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/tokenorchestrator/tokenorchestrator/client"
)

const healthcheckHelp = `Usage: token-orchestrator healthcheck [flags]

Check that the server on this machine is ready to serve (GET /readyz): its
database answers and its schema is up to date. Made for container health
checks, where images have no curl.

When the server asks for a token on /readyz (PUBLIC_HEALTH=false), the
token is taken from --token, TOKEN_ORCHESTRATOR_TOKEN, or the server's own
settings in the same environment: CLIENT_TOKEN(_FILE), then
ADMIN_TOKEN(_FILE).`

func healthcheckFlags(fs *flag.FlagSet, getenv func(string) string) (server *string, timeout *time.Duration, token *string) {
	server = fs.String("server", localServer(getenv("ADDR")), "the server's URL (default: from ADDR, as serve listens)")
	timeout = fs.Duration("timeout", 3*time.Second, "give up after this long")
	token = fs.String("token", "", "bearer token (default: from TOKEN_ORCHESTRATOR_TOKEN or the server's CLIENT_TOKEN or ADMIN_TOKEN)")
	return server, timeout, token
}

func healthcheckWords() words {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	healthcheckFlags(fs, noEnv)
	return words{flags: fs}
}

func runHealthcheck(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := newFlagSet("token-orchestrator healthcheck", healthcheckHelp, stderr)
	server, timeout, token := healthcheckFlags(fs, getenv)
	positional, err := parseFlags(fs, args, stdout)
	if err != nil {
		return parseError(err)
	}
	if len(positional) > 0 {
		return usageError(fs, "unexpected arguments")
	}
	if *token == "" {
		*token = serverToken(getenv)
	}
	var opts []client.Option
	if *token != "" {
		opts = append(opts, client.WithToken(*token))
	}
	c, err := client.New(*server, opts...)
	if err != nil {
		return usageError(fs, "--server: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := c.Ready(ctx); err != nil {
		fmt.Fprintf(stderr, "token-orchestrator healthcheck: not ready: %v\n", err)
		return exitFailed
	}
	fmt.Fprintln(stdout, "ready")
	return exitOK
}

// serverToken is a token the server running in this environment accepts.
func serverToken(getenv func(string) string) string {
	for _, name := range []string{"TOKEN_ORCHESTRATOR_TOKEN", "CLIENT_TOKEN", "ADMIN_TOKEN"} {
		if token := strings.TrimSpace(getenv(name)); token != "" {
			return token
		}
		if file := getenv(name + "_FILE"); file != "" && name != "TOKEN_ORCHESTRATOR_TOKEN" {
			if raw, err := os.ReadFile(file); err == nil && strings.TrimSpace(string(raw)) != "" {
				return strings.TrimSpace(string(raw))
			}
		}
	}
	return ""
}

// localServer is the URL at which the server listening on addr (ADDR, e.g.
// ":8080") is reached from the same machine.
func localServer(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return defaultServer
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}
