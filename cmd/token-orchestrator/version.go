package main

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/tokenorchestrator/tokenorchestrator/internal/buildinfo"
)

const versionHelp = `Usage: token-orchestrator version [flags]
       token-orchestrator --version

Print the version of this binary, the commit it was built from and the Go
release that built it. Release builds have them stamped at link time (make
build, the Dockerfile); other builds show what Go recorded, or "devel".`

func versionFlags(fs *flag.FlagSet) (asJSON *bool) {
	return fs.Bool("json", false, `print {"version", "revision", "goVersion"} as JSON`)
}

func versionWords() words {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	versionFlags(fs)
	return words{flags: fs}
}

func runVersion(args []string, stdout, stderr io.Writer, _ func(string) string) int {
	fs := newFlagSet("token-orchestrator version", versionHelp, stderr)
	asJSON := versionFlags(fs)
	positional, err := parseFlags(fs, args, stdout)
	if err != nil {
		return parseError(err)
	}
	if len(positional) > 0 {
		return usageError(fs, "unexpected arguments: %s", strings.Join(positional, " "))
	}
	if *asJSON {
		printJSON(stdout, map[string]string{
			"version": buildinfo.Version(), "revision": buildinfo.Revision(), "goVersion": buildinfo.GoVersion(),
		})
		return exitOK
	}
	fmt.Fprintln(stdout, versionLine())
	return exitOK
}
