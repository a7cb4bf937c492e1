package main

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The service's statements, by the names they have in db/queries/keys.sql.
// The harness depends on nothing else in that file but these names and
// their sqlc parameters.
const (
	claimName   = "KeyClaim"
	releaseName = "KeyReleaseMany"
)

// serviceStatements reads the claim and release statements from the
// service's SQL file.
func serviceStatements(queriesFile string) (claim, release string, err error) {
	raw, err := os.ReadFile(queriesFile)
	if err != nil {
		return "", "", err
	}
	if claim, err = statement(string(raw), claimName); err != nil {
		return "", "", fmt.Errorf("%s: %w", queriesFile, err)
	}
	if release, err = statement(string(raw), releaseName); err != nil {
		return "", "", fmt.Errorf("%s: %w", queriesFile, err)
	}
	return claim, release, nil
}

// pgbenchScript builds the reference workload from the service's own SQL:
// KeyClaim for one key and KeyReleaseMany of that key, each its own
// transaction as the service runs them, as prepared statements. Only the
// sqlc parameters change: each becomes a pgbench variable or a constant,
// as the maps below say.
func pgbenchScript(queriesFile string, leaseTTL time.Duration) (string, error) {
	claim, release, err := serviceStatements(queriesFile)
	if err != nil {
		return "", err
	}
	claim, err = bindArgs(claimName, claim, map[string]string{
		"pool":              ":pool",
		"start_position":    ":start",
		"max":               "1",
		"lease_ttl_seconds": strconv.FormatFloat(leaseTTL.Seconds(), 'f', -1, 64),
	})
	if err != nil {
		return "", err
	}
	// \gset below sets :id and :lease_token from the claimed row.
	release, err = bindArgs(releaseName, release, map[string]string{
		"ids":          "ARRAY[:id::uuid]",
		"lease_tokens": "ARRAY[:lease_token::bigint]",
		// No cooldown: the cycle gives the key straight back.
		"cooldown_seconds": "ARRAY[0]",
	})
	if err != nil {
		return "", err
	}
	return "\\set start random(0, 999999) / 1000000.0\n" +
		tagged(claimName, claim) + " \\gset\n" + tagged(releaseName, release) + "\n", nil
}

var sqlcArg = regexp.MustCompile(`sqlc\.n?arg\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)`)

// bindArgs replaces every sqlc.arg(name) of a statement with the text given
// for that name. A parameter with no text given fails, naming it: a
// statement that gained a parameter needs a decision here, not a guess.
func bindArgs(name, sql string, values map[string]string) (string, error) {
	var missing []string
	out := sqlcArg.ReplaceAllStringFunc(sql, func(m string) string {
		arg := sqlcArg.FindStringSubmatch(m)[1]
		v, ok := values[arg]
		if !ok {
			missing = append(missing, m)
			return m
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("%s: no value for %s in the benchmark (cmd/bench)", name, strings.Join(missing, ", "))
	}
	if strings.Contains(out, "sqlc.") {
		return "", fmt.Errorf("%s: a sqlc parameter of a form the benchmark does not know was left in: %s", name, out)
	}
	return out, nil
}

// positional turns the sqlc parameters of a statement into $1, $2, …, in
// order of first use, for running it from Go; args names them in that
// order.
func positional(sql string) (out string, args []string) {
	index := map[string]int{}
	out = sqlcArg.ReplaceAllStringFunc(sql, func(m string) string {
		arg := sqlcArg.FindStringSubmatch(m)[1]
		if _, ok := index[arg]; !ok {
			args = append(args, arg)
			index[arg] = len(args)
		}
		return "$" + strconv.Itoa(index[arg])
	})
	return out, args
}

// tagged puts the statement on one line behind a comment naming it:
// pg_stat_statements keeps the comment, which tells the statements apart
// in the cost table.
func tagged(name, sql string) string { return "/* " + name + " */ " + oneLine(sql) }

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
	return strings.TrimSuffix(strings.Join(strings.Fields(sql), " "), ";") + ";"
}

// pgbenchRun is one run of pgbench with a custom script, as prepared
// statements.
type pgbenchRun struct {
	url     string
	script  string
	clients int
	// duration (-T), or else transactions per client (-t).
	duration     time.Duration
	transactions int
	// progress, when positive, has pgbench report its rate every so often
	// (-P, whole seconds).
	progress time.Duration
	// defines are -D name=value.
	defines []string
	// service runs the sessions with the settings the service's own
	// sessions have (server.connect): the service's SQL is measured as the
	// service runs it. The floor runs with the server's defaults.
	service bool
}

// serviceSessionOptions are the session settings the server gives its
// connections.
const serviceSessionOptions = "-c jit=off -c plan_cache_mode=force_generic_plan"

type pgbenchOutput struct {
	tps       float64
	processed int64
	// cpu is pgbench's own CPU time.
	cpu      float64
	progress []progressLine
}

// progressLine is one -P report: the rate and the transactions' mean
// latency over the interval that ended at the given offset from the start.
type progressLine struct {
	at       time.Duration
	tps      float64
	latency  time.Duration
	stddevMs float64
}

func runPgbench(ctx context.Context, pgbench string, run pgbenchRun) (pgbenchOutput, error) {
	dir, err := os.MkdirTemp("", "bench-")
	if err != nil {
		return pgbenchOutput{}, err
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "cycle.sql")
	if err := os.WriteFile(file, []byte(run.script), 0o644); err != nil {
		return pgbenchOutput{}, err
	}
	args := []string{"-n", "-M", "prepared", "-c", strconv.Itoa(run.clients), "-j", strconv.Itoa(min(2, run.clients))}
	if run.duration > 0 {
		args = append(args, "-T", strconv.Itoa(max(1, int(run.duration.Round(time.Second).Seconds()))))
	} else {
		args = append(args, "-t", strconv.Itoa(run.transactions))
	}
	if run.progress > 0 {
		args = append(args, "-P", strconv.Itoa(max(1, int(run.progress.Seconds()))))
	}
	for _, d := range run.defines {
		args = append(args, "-D", d)
	}
	args = append(args, "-f", file, run.url)
	cmd := exec.CommandContext(ctx, pgbench, args...)
	if run.service {
		cmd.Env = append(os.Environ(), "PGOPTIONS="+serviceSessionOptions)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return pgbenchOutput{}, fmt.Errorf("pgbench: %w\n%s", err, out.String())
	}
	parsed, err := parsePgbench(out.String())
	parsed.cpu = (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	return parsed, err
}

var (
	tpsPattern       = regexp.MustCompile(`(?m)^tps = ([0-9.]+) \(without initial connection time\)`)
	processedPattern = regexp.MustCompile(`(?m)^number of transactions actually processed: ([0-9]+)`)
	progressPattern  = regexp.MustCompile(`(?m)^progress: ([0-9.]+) s, ([0-9.]+) tps, lat (\S+) ms stddev ([^,\s]+)`)
)

// parsePgbench reads the rate, the number of transactions and the progress
// reports from pgbench's output.
func parsePgbench(out string) (pgbenchOutput, error) {
	var res pgbenchOutput
	m := tpsPattern.FindStringSubmatch(out)
	if m == nil {
		return res, fmt.Errorf("pgbench printed no rate:\n%s", out)
	}
	res.tps, _ = strconv.ParseFloat(m[1], 64)
	if m := processedPattern.FindStringSubmatch(out); m != nil {
		res.processed, _ = strconv.ParseInt(m[1], 10, 64)
	}
	for _, m := range progressPattern.FindAllStringSubmatch(out, -1) {
		at, _ := strconv.ParseFloat(m[1], 64)
		tps, _ := strconv.ParseFloat(m[2], 64)
		res.progress = append(res.progress, progressLine{
			at:       time.Duration(at * float64(time.Second)),
			tps:      tps,
			latency:  time.Duration(number(m[3]) * float64(time.Millisecond)),
			stddevMs: number(m[4]),
		})
	}
	return res, nil
}

// number parses a figure pgbench printed; an interval without transactions
// prints NaN (or -nan), which counts as 0.
func number(s string) float64 {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

// findPgTool finds one of PostgreSQL's programs, preferring those of the
// server's major version (pg_waldump reads only its own version's WAL):
// where Debian installs them, on the PATH, or any version installed.
func findPgTool(name, major string) (string, error) {
	if path := filepath.Join("/usr/lib/postgresql", major, "bin", name); major != "" && isExecutable(path) {
		return path, nil
	}
	if path, err := exec.LookPath(name); err == nil {
		return path, nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name)
	if len(matches) > 0 {
		return matches[len(matches)-1], nil
	}
	return "", fmt.Errorf("%s not found (install postgresql-contrib or the PostgreSQL client tools)", name)
}

func isExecutable(path string) bool {
	info, err := os.Stat(path)
	return err == nil && !info.IsDir() && info.Mode()&0o111 != 0
}
