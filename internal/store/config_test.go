package store_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
)

// A configuration out of range is refused at once, with every fault named.
func TestInvalidConfigurationIsRefused(t *testing.T) {
	t.Parallel()
	require.PanicsWithError(t, "store: invalid configuration: "+
		"QueryTimeout must be positive (zero for the default), not -1s\n"+
		"LeaseTTL must not be negative, not -1m0s\n"+
		"MaxBatch must be positive (zero for the default), not -1",
		func() { store.New(nil, store.Config{QueryTimeout: -time.Second, LeaseTTL: -time.Minute, MaxBatch: -1}) })
}
