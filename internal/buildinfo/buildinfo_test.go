package buildinfo

import (
	"runtime"
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestResolve(t *testing.T) {
	t.Parallel()
	vcs := func(version string, settings ...string) *debug.BuildInfo {
		bi := &debug.BuildInfo{Main: debug.Module{Path: "github.com/tokenorchestrator/tokenorchestrator", Version: version}}
		for i := 0; i < len(settings); i += 2 {
			bi.Settings = append(bi.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
		}
		return bi
	}
	for _, tc := range []struct {
		name                       string
		stampedVersion, stampedRev string
		bi                         *debug.BuildInfo
		want                       info
	}{
		{"stamped wins over the toolchain's", "v1.2.0", "abc123", vcs("v0.9.0", "vcs.revision", "fff", "vcs.modified", "true"), info{"v1.2.0", "abc123"}},
		{"go install of a released module", "", "", vcs("v1.3.0"), info{"v1.3.0", Unknown}},
		{"go build in a clean clone", "", "", vcs("(devel)", "vcs.revision", "0123abcd", "vcs.modified", "false"), info{devel, "0123abcd"}},
		{"go build in a changed clone", "", "", vcs("(devel)", "vcs.revision", "0123abcd", "vcs.modified", "true"), info{devel, "0123abcd-dirty"}},
		{"no build information", "", "", nil, info{devel, Unknown}},
		{"only the version stamped", "v2.0.0", "", vcs("(devel)", "vcs.revision", "0123abcd"), info{"v2.0.0", "0123abcd"}},
	} {
		require.Equal(t, tc.want, resolve(tc.stampedVersion, tc.stampedRev, tc.bi), tc.name)
	}
}

// A test binary is not stamped: the accessors still answer something
// readable.
func TestAccessors(t *testing.T) {
	t.Parallel()
	require.NotEmpty(t, Version())
	require.NotEmpty(t, Revision())
	require.Equal(t, runtime.Version(), GoVersion())
}
