package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// Exit codes of every command.
const (
	exitOK = 0
	// exitFailed: the server or the database refused, or could not be
	// reached.
	exitFailed = 1
	// exitUsage: the command line is wrong.
	exitUsage = 2
	// exitNoKey: "keys get" found no free key in the pool (within --wait),
	// which a script may want to tell from a failure.
	exitNoKey = 3
)

const exitCodesHelp = `Exit codes:
  0  done
  1  the server or database answered with an error, or could not be reached
  2  usage error (unknown command, missing argument, bad flag, bad input line)
  3  no free key in the pool (keys get); a pool without keys is 1`

// newFlagSet returns a flag set that reports errors instead of exiting and
// prints its usage, help text first, to stderr.
func newFlagSet(name, help string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), strings.TrimSpace(help))
		if hasFlags(fs) {
			fmt.Fprintln(fs.Output(), "\nFlags (before or after other arguments):")
			printFlags(fs)
		}
		fmt.Fprintln(fs.Output(), "\n"+exitCodesHelp)
	}
	return fs
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// printFlags lists the flags as --name, the form people type (the flag
// package takes one dash or two).
func printFlags(fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		typeName, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if typeName != "" {
			line += " " + typeName
		}
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "0s" {
			usage += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(fs.Output(), "%s\n      %s\n", line, usage)
	})
}

// parseFlags parses flags given anywhere among the arguments, e.g. both
// "info ID --json" and "info --json ID", and returns the other arguments.
// The help a user asked for goes to stdout; the result is then
// (nil, flag.ErrHelp).
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) ([]string, error) {
	// The flag package prints the usage itself, always to the same output;
	// print it here instead, once, where it belongs.
	usage := fs.Usage
	fs.Usage = func() {}
	defer func() { fs.Usage = usage }()
	var positional []string
	for {
		if err := parseOnce(fs, args, stdout, usage); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return positional, nil
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// parseCommandLine parses the flags that come before the first argument
// that is not one (or before "--"), and returns the arguments from there
// on: a command line to run, whose flags are its own, not ours. Help and
// errors are reported as parseFlags reports them.
func parseCommandLine(fs *flag.FlagSet, args []string, stdout io.Writer) ([]string, error) {
	usage := fs.Usage
	fs.Usage = func() {}
	defer func() { fs.Usage = usage }()
	if err := parseOnce(fs, args, stdout, usage); err != nil {
		return nil, err
	}
	return fs.Args(), nil
}

// parseOnce parses flags up to the first other argument, printing usage,
// the command's help, where help is asked for or a flag is wrong.
func parseOnce(fs *flag.FlagSet, args []string, stdout io.Writer, usage func()) error {
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(stdout)
		usage()
		return err
	}
	if err != nil {
		// The flag package has printed the error.
		if name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: "); ok {
			var names []string
			fs.VisitAll(func(f *flag.Flag) { names = append(names, "--"+f.Name) })
			fmt.Fprint(fs.Output(), didYouMean("--"+strings.TrimLeft(name, "-"), names))
		}
		fmt.Fprintln(fs.Output())
		usage()
		return err
	}
	return nil
}

// usageError reports a wrong command line with the command's usage and
// returns exitUsage.
func usageError(fs *flag.FlagSet, format string, args ...any) int {
	fmt.Fprintf(fs.Output(), "%s: %s\n\n", fs.Name(), fmt.Sprintf(format, args...))
	fs.Usage()
	return exitUsage
}

// badValue reports a wrong value on the command line, without the usage
// that would bury the message, and returns exitUsage.
func badValue(fs *flag.FlagSet, format string, args ...any) int {
	fmt.Fprintf(fs.Output(), "%s: %s\n", fs.Name(), fmt.Sprintf(format, args...))
	return exitUsage
}

// parseError turns the result of parseFlags into an exit code: help asked
// for is success, a bad flag (already reported by the flag package) is a
// usage error.
func parseError(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	return exitUsage
}
