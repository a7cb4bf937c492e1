// Command token-orchestrator serves a pool of API keys over HTTP: clients
// lease keys, keep them alive and give them back, and PostgreSQL enforces
// that a key is never held by two clients at once.
//
// Usage: token-orchestrator [command] [flags]. The default command is serve.
package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// command is one subcommand of the binary. run gets the arguments after
// the command's name and returns the process's exit code.
type command struct {
	summary string
	run     func(args []string) int
}

// commands lists every subcommand; each lives in a file of its own.
var commands = map[string]command{
	"serve":       {summary: "serve the HTTP API (the default)", run: serve},
	"migrate":     {summary: "apply, list or roll back database migrations", run: migrateCommand},
	"keys":        {summary: "create, lease, inspect, keep alive, release and delete keys on a server", run: keys},
	"report":      {summary: "print a report of the key history (leases, activity, durations, utilisation)", run: report},
	"secrets":     {summary: "re-encrypt keys' secrets under the current encryption key (secrets rotate)", run: secretsCommand},
	"healthcheck": {summary: "exit 0 if the local server is ready, 1 if not (for container health checks)", run: healthcheck},
}

func main() {
	args := os.Args[1:]
	name := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if name == "help" {
		usage(os.Stdout)
		os.Exit(exitOK)
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "token-orchestrator: unknown command %q\n\n", name)
		usage(os.Stderr)
		os.Exit(exitUsage)
	}
	os.Exit(cmd.run(args))
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: token-orchestrator [command] [flags]\n\nCommands:")
	names := make([]string, 0, len(commands))
	for name := range commands {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(w, "  %-12s %s\n", name, commands[name].summary)
	}
	fmt.Fprintln(w, "\nRun 'token-orchestrator COMMAND -h' for a command's flags.\n\n"+exitCodesHelp)
}
