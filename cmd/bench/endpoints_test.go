package main

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestThousandsAndSizes(t *testing.T) {
	t.Parallel()
	require.Equal(t, "0", thousands(0))
	require.Equal(t, "999", thousands(999))
	require.Equal(t, "1,000", thousands(1000))
	require.Equal(t, "1,000,000", thousands(1_000_000))
	require.Equal(t, "-12,345", thousands(-12345))

	one := endpointSize{pools: 1, perPool: 10_000}
	many := endpointSize{pools: 2_000, perPool: 50}
	require.Equal(t, "10,000 keys", one.String())
	require.Equal(t, "2,000 pools × 50 keys", many.String())
	require.Equal(t, 100_000, many.keys())
	require.Equal(t, "bench", one.poolName(0))
	require.Equal(t, "p01999", many.poolName(1999))

	run := endpointRun{size: many}
	require.Equal(t, "p00000", run.poolOf(49))
	require.Equal(t, "p00001", run.poolOf(50))
}

func TestPaidKeys(t *testing.T) {
	t.Parallel()
	// 1% of the keys, whatever the layout: at 50 keys a pool, the first
	// key of every other pool.
	paid := 0
	for i := range 100_000 {
		if paidKey(i) {
			paid++
			require.Zero(t, i%50)
			require.Zero(t, (i/50)%2)
		}
	}
	require.Equal(t, 1000, paid)
}

func TestMedian(t *testing.T) {
	t.Parallel()
	ms := time.Millisecond
	require.Equal(t, time.Duration(0), median(nil))
	require.Equal(t, 3*ms, median([]time.Duration{5 * ms, 1 * ms, 3 * ms}))
	in := []time.Duration{4 * ms, 1 * ms, 2 * ms, 3 * ms}
	require.Equal(t, 2500*time.Microsecond, median(in))
	require.Equal(t, []time.Duration{4 * ms, 1 * ms, 2 * ms, 3 * ms}, in, "the input keeps its order")
}

func TestEndpointRatio(t *testing.T) {
	t.Parallel()
	one := endpointSize{pools: 1, perPool: 1_000_000}
	many := endpointSize{pools: 2_000, perPool: 50}
	base := endpointFigure{median: 2 * time.Millisecond, buffers: 10}
	at := func(d time.Duration, buffers float64) endpointFigure {
		return endpointFigure{median: d, buffers: buffers}
	}
	ratio := func(big endpointFigure, row string, size endpointSize) string {
		return endpointRatio(base, big, true, true, row, size)
	}

	require.Equal(t, "1.5× · buf 1.2×", ratio(at(3*time.Millisecond, 12), "GET /keys/{id}", one))
	require.Equal(t, "3.0× · buf 3.0×", ratio(at(6*time.Millisecond, 30), "GET /keys/{id}", one), "3× is within")
	require.Equal(t, "**3.5× ✗** · buf 1.0×", ratio(at(7*time.Millisecond, 10), "GET /keys/{id}", one))
	require.Equal(t, "0.5× · buf **4.1× ✗**", ratio(at(time.Millisecond, 41), "GET /reports/leases?pool=", one))
	// /stats and GET /pools may grow with the pools, not with the keys.
	require.Equal(t, "5.0× · buf 45.0× (lists the pools)", ratio(at(10*time.Millisecond, 450), rowStats, many))
	require.Equal(t, "5.0× · buf 45.0× (lists the pools)", ratio(at(10*time.Millisecond, 450), rowPools, many))
	require.Equal(t, "**5.0× ✗** · buf 1.0×", ratio(at(10*time.Millisecond, 10), rowStats, one))
	require.Equal(t, "**5.0× ✗** · buf 1.0×", ratio(at(10*time.Millisecond, 10), "GET /activity?minutes=60 (all pools)", many))

	// Without buffers, the medians alone.
	require.Equal(t, "1.5×", ratio(at(3*time.Millisecond, -1), "GET /keys/{id}", one))
	require.Equal(t, "1.5×", endpointRatio(at(2*time.Millisecond, -1), at(3*time.Millisecond, -1), true, true, "GET /keys/{id}", one))

	require.Equal(t, "n/a", endpointRatio(base, at(time.Millisecond, 1), false, true, rowStats, one))
	require.Equal(t, "n/a", endpointRatio(base, at(time.Millisecond, 1), true, false, rowStats, one))
	require.Equal(t, "n/a", endpointRatio(endpointFigure{}, at(time.Millisecond, 1), true, true, rowStats, one))
}

func TestFigureCell(t *testing.T) {
	t.Parallel()
	require.Equal(t, "1.25 ms · 12 buf", figureCell(endpointFigure{median: 1250 * time.Microsecond, buffers: 12}, true))
	require.Equal(t, "1.25 ms · 9.5 buf", figureCell(endpointFigure{median: 1250 * time.Microsecond, buffers: 9.5}, true))
	require.Equal(t, "1.25 ms · 13 buf", figureCell(endpointFigure{median: 1250 * time.Microsecond, buffers: 12.6}, true))
	require.Equal(t, "1.25 ms", figureCell(endpointFigure{median: 1250 * time.Microsecond, buffers: -1}, true), "buffers not known")
	require.Equal(t, "n/a", figureCell(endpointFigure{}, false))
}

// results of two sizes, with the rows the dashboard reads.
func pollResults() endpointResults {
	r := endpointResults{sizes: []endpointSize{{1, 10_000}, {1, 1_000_000}}, calls: 20, burst: 3000, buffers: true}
	buffers := map[string]float64{rowStats: 10, rowKeysPage: 150, rowActivityPoll: 10, rowActivityHour: 12,
		rowDurationsHour: 700, rowCooldownsDay: 10, rowPools: 8}
	for row, b := range buffers {
		for _, state := range statsStates {
			r.add(row, 0, state, endpointFigure{median: time.Millisecond, buffers: b})
			big := b
			if row == rowKeysPage {
				big = 200
			}
			r.add(row, 1, state, endpointFigure{median: 4 * time.Millisecond, buffers: big})
		}
	}
	return r
}

func TestDashboardPollCost(t *testing.T) {
	t.Parallel()
	r := pollResults()
	c := dashboardPollCost(r, 0, neverAnalysed)
	require.True(t, c.known)
	require.InDelta(t, 170, c.poll, 1e-9)
	require.InDelta(t, 10+150+12+700+10+8, c.full, 1e-9)
	require.InDelta(t, (170*14+890)/15.0, c.mean, 1e-9)

	big := dashboardPollCost(r, 1, analysed)
	require.InDelta(t, 220, big.poll, 1e-9)

	delete(r.figures, endpointKey{rowPools, 1, analysed})
	require.False(t, dashboardPollCost(r, 1, analysed).known)
	r.figures[endpointKey{rowPools, 1, analysed}] = endpointFigure{buffers: -1}
	require.False(t, dashboardPollCost(r, 1, analysed).known, "buffers not known")
}

func TestPollRatio(t *testing.T) {
	t.Parallel()
	require.Equal(t, "1.00×", pollRatio(100, 100))
	require.Equal(t, "0.50×", pollRatio(100, 50))
	require.Equal(t, "1.10×", pollRatio(100, 110))
	require.Equal(t, "**1.29× ✗**", pollRatio(170, 220))
	require.Equal(t, "n/a", pollRatio(0, 5))
}

func TestEndpointTables(t *testing.T) {
	t.Parallel()
	r := pollResults()
	table := endpointTable(r)
	lines := strings.Split(strings.TrimSpace(table), "\n")
	require.Len(t, lines, 2+len(r.rows))
	require.Equal(t, "| endpoint | 10,000 keys, never analysed | 10,000 keys, analysed | 1,000,000 keys, never analysed | × 10,000 keys | 1,000,000 keys, analysed | × 10,000 keys |", lines[0])
	require.Equal(t, "|---|---:|---:|---:|---:|---:|---:|", lines[1])
	require.Contains(t, lines, "| GET /stats | 1.00 ms · 10 buf | 1.00 ms · 10 buf | 4.00 ms · 10 buf | **4.0× ✗** · buf 1.0× | 4.00 ms · 10 buf | **4.0× ✗** · buf 1.0× |")

	// A row measured at one size only has n/a at the others.
	r.add("GET /only-small", 0, neverAnalysed, endpointFigure{median: time.Millisecond, buffers: 1})
	require.Contains(t, endpointTable(r), "| GET /only-small | 1.00 ms · 1 buf | n/a | n/a | n/a | n/a | n/a |")

	poll := strings.Split(strings.TrimSpace(pollTable(r)), "\n")
	require.Len(t, poll, 5)
	require.True(t, strings.HasPrefix(poll[2], "| every poll (2 s): /stats, page of keys, 2 minutes of activity | 170 | 170 | 220 | **1.29× ✗** | 220 | **1.29× ✗** |"), poll[2])
	require.True(t, strings.HasPrefix(poll[3], "| every 15th poll instead:"), poll[3])
	require.True(t, strings.HasSuffix(poll[3], "| 890 | 890 | 940 | 1.06× | 940 | 1.06× |"), poll[3])

	section := endpointSection(r)
	require.Contains(t, section, "## Endpoints by data size and statistics")
	require.Contains(t, section, "called 20 times")
	require.Contains(t, section, "and 3000\nclaim-and-release cycles")
	require.NotContains(t, section, "%!")

	r.buffers = false
	r.note("no buffers per call: pg_stat_statements is not loaded")
	section = endpointSection(r)
	require.Contains(t, section, "No figures: the buffers per call were not read")
	require.Contains(t, section, "- no buffers per call: pg_stat_statements is not loaded")
}

func TestParseLeased(t *testing.T) {
	t.Parallel()
	k, err := parseLeased([]byte(`{"keyId": "0d6f9c1e-4d43-4bd2-a6a3-2c1f0f1a8a51", "leaseToken": "42", "pool": "bench"}`))
	require.NoError(t, err)
	require.Equal(t, leasedKey{KeyID: "0d6f9c1e-4d43-4bd2-a6a3-2c1f0f1a8a51", LeaseToken: "42"}, k)
	_, err = parseLeased([]byte(`{"keyId": "x"}`))
	require.ErrorContains(t, err, "no key or no lease token")
	_, err = parseLeased([]byte(`<html>`))
	require.Error(t, err)
}
