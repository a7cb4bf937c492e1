// Command token-orchestrator serves a pool of API keys over HTTP: clients
// lease keys, keep them alive and give them back, and PostgreSQL enforces
// that a key is never held by two clients at once.
//
// Usage: token-orchestrator [command] [flags]. The default command is serve.
package main

import (
	"fmt"
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
	"serve":  {summary: "serve the HTTP API (the default)", run: serve},
	"report": {summary: "print a report of the key history (leases, activity, durations, utilisation)", run: report},
}

func main() {
	args := os.Args[1:]
	name := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if name == "help" {
		usage()
		os.Exit(0)
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "token-orchestrator: unknown command %q\n\n", name)
		usage()
		os.Exit(2)
	}
	os.Exit(cmd.run(args))
}

func usage() {
	fmt.Fprintln(os.Stderr, "Usage: token-orchestrator [command] [flags]\n\nCommands:")
	names := make([]string, 0, len(commands))
	for name := range commands {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(os.Stderr, "  %-10s %s\n", name, commands[name].summary)
	}
	fmt.Fprintln(os.Stderr, "\nRun 'token-orchestrator COMMAND -h' for a command's flags.")
}
