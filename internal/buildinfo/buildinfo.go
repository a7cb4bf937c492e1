// Package buildinfo tells which build of Token Orchestrator is running: its
// version, the commit it was built from and the Go release that built it.
//
// Release builds stamp the version and revision at link time (the Makefile's
// build target and the Dockerfile do):
//
//	go build -ldflags "-X github.com/tokenorchestrator/tokenorchestrator/internal/buildinfo.version=v1.2.0
//	  -X github.com/tokenorchestrator/tokenorchestrator/internal/buildinfo.revision=0123abc" ./cmd/token-orchestrator
//
// An unstamped build (go install, go run, go build in a clone) falls back to
// what the Go toolchain records in the binary: the module's version and the
// version control revision, marked "-dirty" when the tree had changes.
package buildinfo

import (
	"runtime"
	"runtime/debug"
	"sync"
)

// Set with -ldflags -X; empty in an unstamped build. They are variables, not
// constants, because the linker can only set variables.
var (
	version  string
	revision string
)

// Unknown is the version or revision of a build that records neither.
const Unknown = "unknown"

// devel is the version of a build from a source tree rather than a
// released module; the Go toolchain says "(devel)".
const devel = "devel"

// Version is the version of the build, e.g. "v1.2.0", or "devel" when it was
// built from a source tree that was not stamped.
func Version() string { return load().version }

// Revision is the commit the build was made from, with "-dirty" when the tree
// had uncommitted changes, or "unknown".
func Revision() string { return load().revision }

// GoVersion is the Go release that built the binary, e.g. "go1.26.8".
func GoVersion() string { return runtime.Version() }

type info struct{ version, revision string }

// load reads the build information once: debug.ReadBuildInfo parses a
// string embedded in the binary on every call.
var load = sync.OnceValue(func() info {
	bi, _ := debug.ReadBuildInfo()
	return resolve(version, revision, bi)
})

// resolve prefers what was stamped at link time and falls back to the build
// information the toolchain recorded (bi may be nil).
func resolve(stampedVersion, stampedRevision string, bi *debug.BuildInfo) info {
	i := info{version: stampedVersion, revision: stampedRevision}
	if i.version == "" {
		i.version = devel
		if bi != nil && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			i.version = bi.Main.Version
		}
	}
	if i.revision == "" {
		i.revision = Unknown
		if bi != nil {
			var modified bool
			for _, s := range bi.Settings {
				switch s.Key {
				case "vcs.revision":
					i.revision = s.Value
				case "vcs.modified":
					modified = s.Value == "true"
				}
			}
			if modified && i.revision != Unknown {
				i.revision += "-dirty"
			}
		}
	}
	return i
}
