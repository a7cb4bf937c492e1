package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/pgembed"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

func runReportCmd(t *testing.T, databaseURL string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	getenv := func(name string) string {
		if name == "DATABASE_URL" {
			return databaseURL
		}
		return ""
	}
	code = runReport(context.Background(), args, getenv, &out, &errOut)
	return code, out.String(), errOut.String()
}

// The report subcommand prints the same figures as the API, read from the
// database, as a table, CSV or JSON.
func TestReportCommand(t *testing.T) {
	t.Parallel()
	dbURL := testdb.New(t)
	conn, err := pgx.Connect(context.Background(), dbURL)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	base := testdb.HourAgo(4)
	testdb.InsertHistory(t, conn, "a", base, 0, testdb.KnownHistory)
	hour := func(n int) string { return base.Add(time.Duration(n) * time.Hour).Format("2006-01-02T15:04:05.000Z") }

	code, out, errOut := runReportCmd(t, dbURL, "lease-activity", "-from", "5h", "-pool", "a")
	require.Zero(t, code, errOut)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 4, out)
	require.Equal(t, []string{"pool", "hour", "assigned", "released", "lease_expired", "ended_by_deletion", "keep_alives"}, strings.Fields(lines[0]))
	require.Equal(t, []string{"a", hour(0), "3", "2", "1", "0", "3"}, strings.Fields(lines[1]))
	require.Equal(t, []string{"a", hour(1), "2", "0", "0", "1", "0"}, strings.Fields(lines[2]))
	require.Equal(t, []string{"a", hour(2), "0", "0", "0", "1", "0"}, strings.Fields(lines[3]))

	// Flags may come first; CSV keeps full precision and leaves NULL empty.
	code, out, errOut = runReportCmd(t, dbURL, "-format", "csv", "-from", "5h", "utilisation")
	require.Zero(t, code, errOut)
	require.Equal(t, "pool,hour,key_seconds,seat_seconds,blocked_seconds,utilisation\n"+
		"a,"+hour(0)+",10800,10800,4200,0.3888888888888889\n"+
		"a,"+hour(1)+",9600,9600,1200,0.125\n"+
		"a,"+hour(2)+",2400,2400,600,0.25\n", out)

	code, out, errOut = runReportCmd(t, dbURL, "lease-durations", "-format", "text", "-from", "5h")
	require.Equal(t, 2, code, "text is not a format")
	require.Contains(t, errOut, "-format must be table, csv or json")
	require.Empty(t, out)

	code, out, errOut = runReportCmd(t, dbURL, "leases", "-format", "json", "-from", "5h", "-limit", "2")
	require.Zero(t, code, errOut)
	var doc struct {
		Report    string
		Limit     int
		Truncated bool
		Rows      []map[string]any
	}
	require.NoError(t, json.Unmarshal([]byte(out), &doc))
	require.Equal(t, "leases", doc.Report)
	require.True(t, doc.Truncated)
	require.Len(t, doc.Rows, 2)
	require.Equal(t, map[string]any{
		"pool": "a", "keyId": testdb.KeyID("a", 1).String(), "leaseToken": 1.0,
		"startedAt": base.Add(10 * time.Minute).Format("2006-01-02T15:04:05.000Z"),
		"endedAt":   base.Add(30 * time.Minute).Format("2006-01-02T15:04:05.000Z"),
		"endedBy":   "released", "keepAlives": 1.0, "durationSeconds": 1200.0,
	}, doc.Rows[0])

	code, out, _ = runReportCmd(t, dbURL, "key-activity", "-from", "5h", "-pool", "nobody")
	require.Zero(t, code)
	require.Contains(t, out, "(no rows)")
}

// Bad parameters are refused before the database is asked: the URL here
// leads nowhere, so a query would fail with exit code 1, not 2.
func TestReportCommandRefusesBadParameters(t *testing.T) {
	t.Parallel()
	const nowhere = "postgres://postgres@127.0.0.1:1/none?sslmode=disable&connect_timeout=1"
	for _, tc := range []struct {
		args    []string
		message string
	}{
		{[]string{}, "Usage: token-orchestrator report NAME"},
		{[]string{"nope"}, `unknown report "nope"`},
		{[]string{"leases", "-from", "yesterday"}, "-from: \"yesterday\" is neither an RFC 3339 time"},
		{[]string{"leases", "-from", "2026-11-02T00:00:00Z", "-to", "2026-11-01T00:00:00Z"}, "must be before to"},
		{[]string{"utilisation", "-from", "800h"}, "a report covers at most 744h0m0s (31 days)"},
		{[]string{"leases", "-limit", "0"}, "limit must be between 1 and 10000"},
		{[]string{"leases", "extra"}, "unexpected arguments: extra"},
	} {
		code, out, errOut := runReportCmd(t, nowhere, tc.args...)
		require.Equal(t, 2, code, "%v: %s", tc.args, errOut)
		require.Contains(t, errOut, tc.message, tc.args)
		require.Empty(t, out)
	}
	code, _, errOut := runReportCmd(t, nowhere, "leases")
	require.Equal(t, 1, code, errOut)
	require.Contains(t, errOut, "is the database running?")
}

// With REPORT_DATABASE_URL the command reads the standby; one that cannot
// be read fails the command with what to check, or, with REPORT_FALLBACK,
// the primary is read instead. (Reads on a real standby: test/faults.)
func TestReportCommandOnAStandby(t *testing.T) {
	t.Parallel()
	dbURL := testdb.New(t)
	port, err := pgembed.FreePort()
	require.NoError(t, err)
	gone := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	run := func(env map[string]string) (int, string, string) {
		var out, errOut bytes.Buffer
		env["DATABASE_URL"] = dbURL
		code := runReport(context.Background(), []string{"key-activity", "-format", "csv"}, func(name string) string { return env[name] }, &out, &errOut)
		return code, out.String(), errOut.String()
	}
	code, _, errOut := run(map[string]string{"REPORT_DATABASE_URL": gone})
	require.Equal(t, 1, code, errOut)
	require.Contains(t, errOut, "REPORT_FALLBACK")

	code, out, errOut := run(map[string]string{"REPORT_DATABASE_URL": gone, "REPORT_FALLBACK": "true"})
	require.Zero(t, code, errOut)
	require.Contains(t, errOut, "read from the primary")
	require.True(t, strings.HasPrefix(out, "pool,hour,created,deleted,expired\n"), out)

	code, _, errOut = run(map[string]string{"REPORT_MAX_LAG": "soon"})
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "REPORT_MAX_LAG")
}
