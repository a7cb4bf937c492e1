package main

import (
	"fmt"
	"io"
	"strings"
)

const helpHelp = `Usage: token-orchestrator help [COMMAND [SUBCOMMAND]]

Print the overview of the commands, or the help of one command (as
'token-orchestrator COMMAND -h' does), e.g. 'token-orchestrator help keys get'.

` + exitCodesHelp

func runHelp(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) == 0 {
		usage(stdout)
		return exitOK
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprintln(stdout, helpHelp)
		return exitOK
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "token-orchestrator help: unknown command %q\n%s\nCommands: %s\n",
			args[0], didYouMean(args[0], commandNames()), strings.Join(commandNames(), ", "))
		return exitUsage
	}
	// Every command prints its help, or that of its subcommand, on -h.
	return cmd.run(append(args[1:len(args):len(args)], "--help"), stdout, stderr, getenv)
}
