package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// pgbenchScript builds the reference workload from the service's own SQL:
// the KeyClaim and KeyReleaseMany statements of db/queries/keys.sql, one
// claim and one release per transaction, as prepared statements. Only the
// sqlc parameters become pgbench variables.
func pgbenchScript(queriesFile string, leaseTTL time.Duration) (string, error) {
	raw, err := os.ReadFile(queriesFile)
	if err != nil {
		return "", err
	}
	claim, err := statement(string(raw), "KeyClaim")
	if err != nil {
		return "", err
	}
	release, err := statement(string(raw), "KeyReleaseMany")
	if err != nil {
		return "", err
	}
	claim = strings.NewReplacer(
		"sqlc.arg(pool)", ":pool",
		"sqlc.arg(start_position)", ":start",
		"sqlc.arg(max)", "1",
		"sqlc.arg(lease_ttl_seconds)", strconv.FormatFloat(leaseTTL.Seconds(), 'f', -1, 64),
	).Replace(claim)
	release = strings.NewReplacer(
		"sqlc.arg(ids)::uuid[]", "ARRAY[:id::uuid]",
		"sqlc.arg(lease_tokens)::bigint[]", "ARRAY[:lease_token::bigint]",
	).Replace(release)
	if strings.Contains(claim+release, "sqlc.") {
		return "", fmt.Errorf("%s: a parameter was left unreplaced", queriesFile)
	}
	return "\\set startn random(0, 999999)\n\\set start :startn / 1000000.0\n" +
		oneLine(claim) + " \\gset\n" + oneLine(release) + "\n", nil
}

// statement returns the SQL of the named query, comments dropped.
func statement(file, name string) (string, error) {
	start := strings.Index(file, "-- name: "+name+" ")
	if start < 0 {
		return "", fmt.Errorf("query %s not found", name)
	}
	body := file[start:]
	if next := strings.Index(body[1:], "-- name: "); next >= 0 {
		body = body[:next+1]
	}
	var lines []string
	for _, line := range strings.Split(body, "\n") {
		if i := strings.Index(line, "--"); i >= 0 {
			line = line[:i]
		}
		if strings.TrimSpace(line) != "" {
			lines = append(lines, line)
		}
	}
	return strings.TrimSuffix(strings.TrimSpace(strings.Join(lines, "\n")), ";"), nil
}

func oneLine(sql string) string {
	return strings.Join(strings.Fields(sql), " ") + ";"
}

var tpsPattern = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)

// runPgbench runs the script with the given clients and returns its
// transactions (cycles) per second.
func runPgbench(ctx context.Context, pgbench, dbURL, script, pool string, clients int, duration time.Duration) (float64, error) {
	dir, err := os.MkdirTemp("", "bench-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "cycle.sql")
	if err := os.WriteFile(file, []byte(script), 0o644); err != nil {
		return 0, err
	}
	cmd := exec.CommandContext(ctx, pgbench, "-n", "-M", "prepared", "-c", strconv.Itoa(clients),
		"-j", "2", "-T", strconv.Itoa(int(duration.Seconds())), "-D", "pool="+pool, "-f", file, dbURL)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("pgbench: %w\n%s", err, out.String())
	}
	m := tpsPattern.FindStringSubmatch(out.String())
	if m == nil {
		return 0, fmt.Errorf("pgbench printed no rate:\n%s", out.String())
	}
	return strconv.ParseFloat(m[1], 64)
}

func findPgbench() (string, error) {
	if path, err := exec.LookPath("pgbench"); err == nil {
		return path, nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pgbench")
	if len(matches) > 0 {
		return matches[len(matches)-1], nil
	}
	return "", fmt.Errorf("pgbench not found (install postgresql-contrib or the PostgreSQL client tools)")
}
