package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tokenorchestrator/tokenorchestrator/client"
)

const statsHelp = `Usage: token-orchestrator stats [flags]

Show the live counts of every pool that has keys (GET /stats): keys, free,
held under a lease, and live keys whose life ends within a minute unless
kept alive. The server counts from the counters the database keeps, so this
is cheap however large the pools. Needs the admin token when the server
asks for tokens.`

// statsFlags defines the flags of stats; it returns what makes the client.
func statsFlags(fs *flag.FlagSet, getenv func(string) string) (newClient func() (*client.Client, error), asJSON *bool, timeout *time.Duration) {
	newClient = clientFlags(fs, getenv)
	asJSON = fs.Bool("json", false, "print the counts as JSON, as the server does")
	timeout = fs.Duration("timeout", 30*time.Second, "give up after this long")
	return newClient, asJSON, timeout
}

func statsWords() words {
	fs := flag.NewFlagSet("stats", flag.ContinueOnError)
	statsFlags(fs, noEnv)
	return words{flags: fs}
}

func runStats(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := newFlagSet("token-orchestrator stats", statsHelp, stderr)
	newClient, asJSON, timeout := statsFlags(fs, getenv)
	positional, err := parseFlags(fs, args, stdout)
	if err != nil {
		return parseError(err)
	}
	if len(positional) > 0 {
		return usageError(fs, "unexpected arguments: %s", strings.Join(positional, " "))
	}
	c, err := newClient()
	if err != nil {
		return usageError(fs, "--server: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	stats, err := c.Stats(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		return exitFailed
	}
	if *asJSON {
		printJSON(stdout, stats)
		return exitOK
	}
	printStats(stdout, stats)
	return exitOK
}

// printStats shows the counts as a table, one pool a line and their sum.
func printStats(w io.Writer, s client.Stats) {
	if len(s.Pools) == 0 {
		fmt.Fprintln(w, "No pool has keys.")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "POOL\tKEYS\tSEATS\tFREE\tBLOCKED\tEXPIRING WITHIN 1M")
	// Past the server's cap, a count of keys about to expire is a lower bound.
	atLeast := ""
	if s.ExpiringWithinMinuteCapped {
		atLeast = "+"
	}
	row := func(name string, p client.PoolStats) {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d%s\n", name, p.Total, p.Seats, p.Free, p.Blocked, p.ExpiringWithinMinute, atLeast)
	}
	for _, p := range s.Pools {
		row(p.Pool, p)
	}
	row("total", s.Total)
	_ = tw.Flush()
}
