// Package buildinfo tells which build of the program is running: its
// version and the source revision it was built from. The metrics and the
// version command both read it here, so that they always agree.
package buildinfo

import (
	"runtime"
	"runtime/debug"
	"sync"
)

// Set at link time by release builds, e.g.
//
//	go build -ldflags "-X github.com/tokenorchestrator/tokenorchestrator/internal/buildinfo.version=v1.2.3 -X github.com/tokenorchestrator/tokenorchestrator/internal/buildinfo.revision=abc123"
//
// Empty: read from the module and VCS information that the Go toolchain
// embeds (runtime/debug.ReadBuildInfo).
var (
	version  string
	revision string
)

// unknown stands for what neither the linker nor the toolchain recorded,
// e.g. the revision of a binary built outside a Git checkout.
const unknown = "unknown"

var embedded = sync.OnceValues(func() (string, string) {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return unknown, unknown
	}
	v := info.Main.Version
	if v == "" {
		// Built from a work tree with `go build`: the toolchain records
		// "(devel)" or nothing.
		v = "(devel)"
	}
	rev, modified := "", false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if rev == "" {
		rev = unknown
	} else if modified {
		rev += "-dirty"
	}
	return v, rev
})

// Version is the program's version: the one stamped at link time, else the
// main module's version as the toolchain recorded it ("(devel)" for a
// build from a work tree).
func Version() string {
	if version != "" {
		return version
	}
	v, _ := embedded()
	return v
}

// Revision is the source revision: the one stamped at link time, else the
// VCS revision the toolchain recorded ("-dirty" when the work tree had
// changes), else "unknown".
func Revision() string {
	if revision != "" {
		return revision
	}
	_, r := embedded()
	return r
}

// GoVersion is the version of Go the program was built with.
func GoVersion() string { return runtime.Version() }
