package buildinfo

import (
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestStampedValuesWin(t *testing.T) {
	// Not parallel: it sets the package's link-time variables.
	require.NotEmpty(t, Version())
	require.NotEmpty(t, Revision())
	require.Equal(t, runtime.Version(), GoVersion())

	oldV, oldR := version, revision
	t.Cleanup(func() { version, revision = oldV, oldR })
	version, revision = "v9.8.7", "0123abc"
	require.Equal(t, "v9.8.7", Version())
	require.Equal(t, "0123abc", Revision())
}
