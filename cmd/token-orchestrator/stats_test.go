package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/client"
)

// Past the server's cap on keys about to expire, the table marks their
// counts as lower bounds, and only those.
func TestStatsTableMarksCappedExpiringCounts(t *testing.T) {
	t.Parallel()
	s := client.Stats{
		Pools: []client.PoolStats{{Pool: "soon", Total: 1500, Seats: 1500, Free: 1500, ExpiringWithinMinute: 1000}},
		Total: client.PoolStats{Total: 1500, Seats: 1500, Free: 1500, ExpiringWithinMinute: 1000},
	}
	var exact bytes.Buffer
	printStats(&exact, s)
	require.Equal(t, "POOL   KEYS  SEATS  FREE  BLOCKED  EXPIRING WITHIN 1M\n"+
		"soon   1500  1500   1500  0        1000\n"+
		"total  1500  1500   1500  0        1000\n", exact.String())

	s.ExpiringWithinMinuteCapped = true
	var capped bytes.Buffer
	printStats(&capped, s)
	require.Equal(t, "POOL   KEYS  SEATS  FREE  BLOCKED  EXPIRING WITHIN 1M\n"+
		"soon   1500  1500   1500  0        1000+\n"+
		"total  1500  1500   1500  0        1000+\n", capped.String())
}
