package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/tokenorchestrator/tokenorchestrator/client"
)

const healthcheckHelp = `Usage: token-orchestrator healthcheck [flags]

Check that the server on this machine is ready to serve (GET /readyz): its
database answers and its schema is up to date. Made for container health
checks, where images have no curl.`

func healthcheck(args []string) int {
	return runHealthcheck(args, os.Stdout, os.Stderr, os.Getenv)
}

func runHealthcheck(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := newFlagSet("token-orchestrator healthcheck", healthcheckHelp, stderr)
	server := fs.String("server", localServer(getenv("ADDR")), "the server's URL (default: from ADDR, as serve listens)")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	positional, err := parseFlags(fs, args, stdout)
	if err != nil {
		return parseError(err)
	}
	if len(positional) > 0 {
		return usageError(fs, "unexpected arguments")
	}
	c, err := client.New(*server)
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
