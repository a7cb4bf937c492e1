// Command token-orchestrator serves a pool of API keys over HTTP: clients
// claim keys, keep them alive and release them, and PostgreSQL enforces
// that a key is never held by two clients at once.
//
// Usage: token-orchestrator [command] [flags]. The default command is serve.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/tokenorchestrator/tokenorchestrator/internal/buildinfo"
)

// command is one command of the binary, in a file of its own.
type command struct {
	summary string
	// run gets the arguments after the command's name and returns the
	// process's exit code.
	run func(args []string, stdout, stderr io.Writer, getenv func(string) string) int
	// words, when set, tells shell completion what may follow the command's
	// name.
	words func() words
}

// words is what may follow a command's name: its flags, and the
// subcommands (or names, such as those of the reports) that may come next.
type words struct {
	flags       *flag.FlagSet
	subcommands []subcommand
}

// subcommand is a word that may follow a command's name.
type subcommand struct {
	name, summary string
	// flags, when set, are the flags after this subcommand; else those of
	// the command.
	flags *flag.FlagSet
}

// commands lists every command, one line each.
var commands map[string]command

func init() {
	// Filled here rather than where declared: help and completion read the
	// table they are part of, which Go refuses in a variable's initializer.
	commands = map[string]command{
		"serve":       {summary: "serve the HTTP API (the default)", run: serve, words: serveWords},
		"migrate":     {summary: "apply, list or roll back database migrations", run: runMigrate, words: migrateWords},
		"keys":        {summary: "create, import, lease, list, inspect, keep alive, release and delete keys on a server", run: runKeys, words: keysWords},
		"pools":       {summary: "set, show, list and delete pools' policies (key life, leases, lease tokens, waits) on a server", run: runPools, words: poolsWords},
		"stats":       {summary: "show the live counts of every pool on a server", run: runStats, words: statsWords},
		"report":      {summary: "print a report of the key history (leases, activity, durations, utilisation)", run: report, words: reportWords},
		"exec":        {summary: "run a command with a key of a pool: its secret in the command's environment, released when it exits", run: runExec, words: execWords},
		"proxy":       {summary: "serve a reverse proxy that lends each request to an upstream API a key of a pool", run: runProxy, words: proxyWords},
		"secrets":     {summary: "re-encrypt keys' secrets under the current encryption key (secrets rotate)", run: runSecrets, words: secretsWords},
		"healthcheck": {summary: "exit 0 if the local server is ready, 1 if not (for container health checks)", run: runHealthcheck, words: healthcheckWords},
		"version":     {summary: "print the version, commit and Go release of this binary", run: runVersion, words: versionWords},
		"help":        {summary: "print the help of a command, or this overview", run: runHelp},
		"completion":  {summary: "print a shell completion script (bash, zsh or fish)", run: runCompletion, words: completionWords},
	}
}

func main() { os.Exit(runMain(os.Args[1:], os.Stdout, os.Stderr, os.Getenv)) }

// runMain runs the command line and returns the exit code.
func runMain(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	name := "serve"
	if len(args) > 0 {
		switch args[0] {
		case "-h", "-help", "--help":
			usage(stdout)
			return exitOK
		case "-version", "--version":
			return runVersion(args[1:], stdout, stderr, getenv)
		}
		if !strings.HasPrefix(args[0], "-") {
			name, args = args[0], args[1:]
		}
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "token-orchestrator: unknown command %q\n%s\n", name, didYouMean(name, commandNames()))
		usage(stderr)
		return exitUsage
	}
	return cmd.run(args, stdout, stderr, getenv)
}

// commandNames are the names of the commands, sorted.
func commandNames() []string {
	names := make([]string, 0, len(commands))
	for name := range commands {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// usage is the overview: which binary this is, and its commands.
func usage(w io.Writer) {
	fmt.Fprintf(w, "%s\n\nUsage: token-orchestrator [command] [flags]\n\nCommands:\n", versionLine())
	for _, name := range commandNames() {
		fmt.Fprintf(w, "  %-12s %s\n", name, commands[name].summary)
	}
	fmt.Fprintln(w, "\nWithout a command, serve. Run 'token-orchestrator help COMMAND' (or\n"+
		"'token-orchestrator COMMAND -h') for a command's flags.\n\n"+exitCodesHelp)
}

// versionLine names this build.
func versionLine() string {
	return fmt.Sprintf("token-orchestrator %s (revision %s, %s)", buildinfo.Version(), buildinfo.Revision(), buildinfo.GoVersion())
}
