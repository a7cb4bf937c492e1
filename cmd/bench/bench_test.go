package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const queriesFixture = `-- name: KeyClaim :many
-- A comment that goes.
WITH c AS (
    SELECT k.id FROM keys AS k
    WHERE k.pool = sqlc.arg(pool)::text AND k.rnd >= sqlc.arg(start_position)::float8
    LIMIT sqlc.arg(max)::int
)
UPDATE keys SET lease_expires_at = now() + sqlc.arg(lease_ttl_seconds)::float8 * interval '1 second'
FROM c WHERE keys.id = c.id LIMIT sqlc.arg(max)::int
RETURNING keys.*;

-- name: KeyReleaseMany :many
UPDATE keys SET lease_token = NULL
WHERE id = ANY (sqlc.arg(ids)::uuid[]) AND lease_token = ANY (sqlc.arg(lease_tokens)::bigint[])
RETURNING *;

-- name: KeyDelete :one
DELETE FROM keys WHERE id = sqlc.arg(id) RETURNING *;
`

func writeQueries(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keys.sql")
	require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
	return path
}

func TestPgbenchScript(t *testing.T) {
	t.Parallel()
	script, err := pgbenchScript(writeQueries(t, queriesFixture), time.Hour)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(script), "\n")
	require.Len(t, lines, 3, script)
	require.Equal(t, `\set start random(0, 999999) / 1000000.0`, lines[0])
	require.Equal(t, "/* KeyClaim */ WITH c AS ( SELECT k.id FROM keys AS k WHERE k.pool = :pool::text AND k.rnd >= :start::float8 LIMIT 1::int ) "+
		"UPDATE keys SET lease_expires_at = now() + 3600::float8 * interval '1 second' FROM c WHERE keys.id = c.id LIMIT 1::int RETURNING keys.*; \\gset", lines[1])
	require.Equal(t, "/* KeyReleaseMany */ UPDATE keys SET lease_token = NULL WHERE id = ANY (ARRAY[:id::uuid]::uuid[]) AND lease_token = ANY (ARRAY[:lease_token::bigint]::bigint[]) RETURNING *;", lines[2])
}

// The service's own statements must keep turning into a script: a new
// parameter needs a decision in the benchmark, and this says so early.
func TestPgbenchScriptFromTheServiceSQL(t *testing.T) {
	t.Parallel()
	script, err := pgbenchScript("../../db/queries/keys.sql", time.Hour)
	require.NoError(t, err)
	require.NotContains(t, script, "sqlc.")
}

func TestPgbenchScriptNamesANewParameter(t *testing.T) {
	t.Parallel()
	withNew := strings.Replace(queriesFixture, "k.pool = sqlc.arg(pool)::text", "k.pool = sqlc.arg(pool)::text AND k.tier = sqlc.narg(tier)", 1)
	_, err := pgbenchScript(writeQueries(t, withNew), time.Hour)
	require.ErrorContains(t, err, "KeyClaim: no value for sqlc.narg(tier)")

	_, err = pgbenchScript(writeQueries(t, strings.Replace(queriesFixture, "KeyReleaseMany", "KeyFree", 1)), time.Hour)
	require.ErrorContains(t, err, "query KeyReleaseMany not found")
}

func TestPositional(t *testing.T) {
	t.Parallel()
	sql, args := positional("SELECT sqlc.arg(a), sqlc.arg( b ), sqlc.arg(a), sqlc.narg(c)")
	require.Equal(t, "SELECT $1, $2, $1, $3", sql)
	require.Equal(t, []string{"a", "b", "c"}, args)

	values, err := argValues("Q", args, map[string]any{"a": 1, "b": "x", "c": nil})
	require.NoError(t, err)
	require.Equal(t, []any{1, "x", nil}, values)
	_, err = argValues("Q", args, map[string]any{"a": 1, "b": "x"})
	require.ErrorContains(t, err, "Q: no value for sqlc.arg(c)")
}

const pgbenchFixture = `pgbench (15.20 (Debian 15.20-0+deb12u1))
progress: 2.0 s, 710.9 tps, lat 5.212 ms stddev 3.704, 0 failed
progress: 4.0 s, 0.0 tps, lat NaN ms stddev NaN, 0 failed
progress: 6.0 s, 773.5 tps, lat 5.163 ms stddev -nan, 0 failed
transaction type: cycle.sql
scaling factor: 1
query mode: prepared
number of clients: 4
number of threads: 2
maximum number of tries: 1
duration: 6 s
number of transactions actually processed: 2583
number of failed transactions: 0 (0.000%)
latency average = 6.090 ms
latency stddev = 3.969 ms
initial connection time = 69.650 ms
tps = 654.191524 (without initial connection time)
`

func TestParsePgbench(t *testing.T) {
	t.Parallel()
	out, err := parsePgbench(pgbenchFixture)
	require.NoError(t, err)
	require.InDelta(t, 654.191524, out.tps, 1e-9)
	require.Equal(t, int64(2583), out.processed)
	require.Equal(t, []progressLine{
		{at: 2 * time.Second, tps: 710.9, latency: 5212 * time.Microsecond, stddevMs: 3.704},
		{at: 4 * time.Second},
		{at: 6 * time.Second, tps: 773.5, latency: 5163 * time.Microsecond},
	}, out.progress)

	_, err = parsePgbench("pgbench: error: connection to server failed\n")
	require.ErrorContains(t, err, "pgbench printed no rate")
}

func TestProgressWindows(t *testing.T) {
	t.Parallel()
	s := time.Second
	got := progressWindows([]progressLine{
		{at: 2 * s, tps: 10},
		{at: 4*s + 30*time.Millisecond, tps: 20},  // a report a little late
		{at: 4*s + 900*time.Millisecond, tps: 99}, // a stray one at the end of the same window
		{at: 8 * s, tps: 40},                      // 6 s missing
		{at: 10 * s, tps: 50},                     // past the run's windows
	}, 2*s, 4)
	require.Equal(t, []heldWindow{{start: 0, rate: 10}, {start: 2 * s, rate: 20}, {start: 6 * s, rate: 40}}, got)
}

func TestHeldPhasesAndTargets(t *testing.T) {
	t.Parallel()
	s := heldSchedule{leadIn: 20 * time.Second, hold: 30 * time.Second, tail: 20 * time.Second, window: 10 * time.Second}
	require.Equal(t, 70*time.Second, s.total())
	rates := []float64{900, 1100, 800, 700, 600, 950, 1000}
	r := heldRun{}
	for i, rate := range rates {
		r.windows = append(r.windows, heldWindow{start: time.Duration(i) * s.window, rate: rate, claimP99: time.Duration(i+1) * time.Millisecond})
	}
	r.finish(s)
	require.InDelta(t, 1000, r.baseline, 1e-9)
	var phases []string
	for _, w := range r.windows {
		phases = append(phases, w.phase.String())
	}
	require.Equal(t, []string{"before", "before", "HELD", "HELD", "HELD", "after", "after"}, phases)
	require.InDelta(t, 0.6, r.windows[4].ratio, 1e-9)

	targets := heldTargets(r, true)
	require.Len(t, targets, 3)
	require.False(t, targets[0].met)
	require.Equal(t, "lowest 60% (window at 40s)", targets[0].actual)
	require.True(t, targets[1].met)
	require.Equal(t, "highest 7.00 ms", targets[1].actual)
	require.True(t, targets[2].met)
	require.Equal(t, "95%", targets[2].actual)

	r.windows[6].claimP99 = 60 * time.Millisecond
	require.False(t, heldTargets(r, true)[1].met)
	require.Len(t, heldTargets(r, false), 2, "no claim percentile for the floor")

	// A window straddling the start of the hold counts as held, never as
	// a window before it.
	odd := heldSchedule{leadIn: 15 * time.Second, hold: 10 * time.Second, window: 10 * time.Second}
	require.Equal(t, beforeHold, odd.phaseOf(0))
	require.Equal(t, underHold, odd.phaseOf(10*time.Second))
	require.Equal(t, underHold, odd.phaseOf(20*time.Second))
	require.Equal(t, afterHold, odd.phaseOf(30*time.Second))

	empty := heldTargets(heldRun{}, true)
	require.False(t, empty[0].met)
	require.False(t, empty[1].met)
	require.False(t, empty[2].met)
}

// pg_waldump --stats of PostgreSQL 15.
const walStatsFixture = `WAL statistics between 0/1BC6C28 and 0/1E21138:
Type                                           N      (%)          Record size      (%)             FPI size      (%)        Combined size      (%)
----                                           -      ---          -----------      ---             --------      ---        -------------      ---
XLOG                                           0 (  0.00)                    0 (  0.00)                    0 (  0.00)                    0 (  0.00)
Transaction                                 5166 ( 15.16)               175644 (  7.41)                    0 (  0.00)               175644 (  7.41)
Heap2                                       4429 ( 13.00)               249326 ( 10.52)                 8192 (100.00)               257518 ( 10.52)
Heap                                        8173 ( 23.99)               654082 ( 27.61)                    0 (  0.00)               654082 ( 27.61)
Btree                                      16226 ( 47.62)              1282210 ( 54.12)                    0 (  0.00)              1282210 ( 54.12)
                                        --------                      --------                      --------                      --------
Total                                      33994                       2361262 [99.65%]                 8192 [0.35%]               2369454 [100%]
`

func TestParseWalStats(t *testing.T) {
	t.Parallel()
	require.Equal(t, []rmgrStat{
		{name: "Transaction", records: 5166, recordBytes: 175644},
		{name: "Heap2", records: 4429, recordBytes: 249326, fpiBytes: 8192},
		{name: "Heap", records: 8173, recordBytes: 654082},
		{name: "Btree", records: 16226, recordBytes: 1282210},
	}, parseWalStats(walStatsFixture))
}

func TestTableDeltas(t *testing.T) {
	t.Parallel()
	before := map[string]tableDelta{"keys": {name: "keys", updated: 10, hot: 2, inserted: 100}, "idle": {name: "idle", inserted: 5}}
	after := map[string]tableDelta{"keys": {name: "keys", updated: 30, hot: 3, inserted: 100}, "idle": {name: "idle", inserted: 5}, "key_events": {name: "key_events", inserted: 20}}
	require.Equal(t, []tableDelta{{name: "key_events", inserted: 20}, {name: "keys", updated: 20, hot: 1}}, tableDeltas(before, after))
}

func TestOptionsValidate(t *testing.T) {
	t.Parallel()
	ok := options{costCycles: 1, endpointCalls: 20, endpointBurst: 1, held: heldSchedule{leadIn: 30 * time.Second, hold: 3 * time.Minute, tail: 30 * time.Second, window: 10 * time.Second}}
	require.NoError(t, ok.validate())
	bad := ok
	bad.held.hold = 15 * time.Second
	require.ErrorContains(t, bad.validate(), "-hold 15s: a positive multiple of -window 10s")
	bad = ok
	bad.held.window = 1500 * time.Millisecond
	require.ErrorContains(t, bad.validate(), "whole seconds")
	bad = ok
	bad.endpointCalls = 0
	require.ErrorContains(t, bad.validate(), "-endpoint-calls 0: at least 1")
	bad = ok
	bad.profile, bad.profileClients, bad.quick = "cpu.pprof", 32, true
	require.ErrorContains(t, bad.validate(), "-profile-clients 32: the small pool runs with [8] clients")
	bad.quick = false
	require.NoError(t, bad.validate())
}

func TestURLs(t *testing.T) {
	t.Parallel()
	require.Equal(t, "postgres://u:secret@db.example:5433/other?sslmode=require",
		withDatabase("postgres://u:secret@db.example:5433/postgres?sslmode=require", "other"))
	require.Equal(t, "postgres://u@h:5432/other?sslmode=disable", withDatabase("host=h port=5432 user=u dbname=postgres sslmode=disable", "other"))
	require.Equal(t, "db.example:5433/postgres", serverAddr("postgres://u:secret@db.example:5433/postgres"))
}

func TestPerCycle(t *testing.T) {
	t.Parallel()
	require.Equal(t, "2.00", perCycle(1000, 500, 2))
	require.Equal(t, "0.002", perCycle(1, 500, 2))
	require.Equal(t, "0.00", perCycle(0, 500, 2))
	require.Equal(t, "887", perCycle(443500, 500, 0))
	require.Equal(t, "n/a", perCycle(1, 0, 2))
}

func TestStatementWindows(t *testing.T) {
	s := &statementSampler{readings: []map[string]statementCounters{
		{"KeyClaim": {calls: 10, buffers: 100, execMS: 1}},
		{"KeyClaim": {calls: 20, buffers: 400, execMS: 2}, "KeyReleaseMany": {calls: 10, buffers: 50, execMS: 1}},
		{"KeyClaim": {calls: 20, buffers: 400, execMS: 2}, "KeyReleaseMany": {calls: 30, buffers: 150, execMS: 3}},
	}}
	names, windows := s.windows()
	require.Equal(t, []string{"KeyClaim", "KeyReleaseMany"}, names, "most buffers over the run first")
	require.Len(t, windows, 2)
	require.Equal(t, statementWindow{calls: 10, buffersPerCall: 30, msPerCall: 0.1}, windows[0]["KeyClaim"])
	require.Equal(t, statementWindow{calls: 10, buffersPerCall: 5, msPerCall: 0.1}, windows[0]["KeyReleaseMany"])
	_, ran := windows[1]["KeyClaim"]
	require.False(t, ran, "no calls in the window: no figure")
	require.Equal(t, statementWindow{calls: 20, buffersPerCall: 5, msPerCall: 0.1}, windows[1]["KeyReleaseMany"])
}

func TestStatementsPerCycle(t *testing.T) {
	before := map[string]statementCounters{"KeyClaim": {calls: 5, buffers: 50, execMS: 1}}
	after := map[string]statementCounters{
		"KeyClaim":       {calls: 15, buffers: 350, reads: 10, execMS: 3},
		"KeyReleaseMany": {calls: 20, buffers: 400, execMS: 4},
		"Idle":           {calls: 0, buffers: 0},
	}
	got := statementsPerCycle(before, after, 20)
	require.Equal(t, []cycleStatement{
		{name: "KeyReleaseMany", callsPerCycle: 1, execMicrosPerCycle: 200, buffersPerCycle: 20, buffersPerCall: 20},
		{name: "KeyClaim", callsPerCycle: 0.5, execMicrosPerCycle: 100, buffersPerCycle: 15, buffersPerCall: 30, readsPerCycle: 0.5},
	}, got, "most time first, statements not called left out")
	require.Nil(t, statementsPerCycle(before, after, 0))
}
