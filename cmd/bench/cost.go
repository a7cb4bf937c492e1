package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// costRun is what one workload costs the database per cycle, measured over
// a fixed number of cycles by one client.
type costRun struct {
	name string
	// cycles counts keys claimed and released: a batched statement
	// counts once per key.
	cycles int64
	// walBytes is the WAL written over the cycles, from the insert
	// position before and after.
	walBytes   int64
	statements []statementCost
	rmgrs      []rmgrStat
	tables     []tableDelta
	notes      []string
}

// statementCost is one statement's line of pg_stat_statements, per call.
type statementCost struct {
	name                       string
	calls, rows                int64
	hit, read, dirtied         float64
	walRecords, walBytes, mean float64
}

// rmgrStat is one resource manager's line of pg_waldump --stats.
type rmgrStat struct {
	name                           string
	records, recordBytes, fpiBytes int64
}

// tableDelta is how a table's row counters moved over the cycles.
type tableDelta struct {
	name                   string
	updated, hot, inserted int64
}

// costBatch is the number of keys the batched variant claims and releases
// per statement.
const costBatch = 16

// cost measures the floor, the service's statements one key at a time, and
// the service's statements costBatch keys at a time.
func (h *harness) cost(ctx context.Context, poolSize, cycles int) ([]costRun, error) {
	var runs []costRun
	floorURL, err := h.freshFloor(ctx, poolSize)
	if err != nil {
		return nil, err
	}
	floor := func(ctx context.Context, n int) (int64, error) {
		out, err := runPgbench(ctx, h.pgbench, pgbenchRun{url: floorURL, script: floorScript, clients: 1, transactions: n})
		return out.processed, err
	}
	r, err := h.measureCost(ctx, "bare floor", floorURL, floorDB, cycles, floor)
	if err != nil {
		return runs, fmt.Errorf("floor: %w", err)
	}
	runs = append(runs, r)

	serviceURL, err := h.costDB(ctx, poolSize)
	if err != nil {
		return runs, err
	}
	singleOn := func(url string, took *time.Duration) func(context.Context, int) (int64, error) {
		return func(ctx context.Context, n int) (int64, error) {
			start := time.Now()
			out, err := runPgbench(ctx, h.pgbench, pgbenchRun{url: url, script: h.script, clients: 1, transactions: n, defines: []string{"pool=bench"}, service: true})
			// The last run, the measured one, is the one kept.
			*took = time.Since(start)
			return out.processed, err
		}
	}
	var plainTook, sealedTook time.Duration
	if r, err = h.measureCost(ctx, "service SQL, 1 key per statement", serviceURL, benchDB, cycles, singleOn(serviceURL, &plainTook)); err != nil {
		return runs, fmt.Errorf("service SQL: %w", err)
	}
	runs = append(runs, r)
	plain := r

	// The same cycle on keys that carry a sealed secret: what the claim
	// reads more (the ciphertext comes with the keys row it reads anyway).
	// Decrypting it is the server's work, in Go, and not in these figures.
	if serviceURL, err = h.costDB(ctx, poolSize); err != nil {
		return runs, err
	}
	if err := sealKeys(ctx, serviceURL); err != nil {
		return runs, err
	}
	if r, err = h.measureCost(ctx, "service SQL, 1 key per statement, keys with secrets", serviceURL, benchDB, cycles, singleOn(serviceURL, &sealedTook)); err != nil {
		return runs, fmt.Errorf("service SQL, secrets: %w", err)
	}
	r.notes = append(r.notes, secretsRatio(plain, r, plainTook, sealedTook))
	runs = append(runs, r)

	if serviceURL, err = h.costDB(ctx, poolSize); err != nil {
		return runs, err
	}
	batched, err := batchedCycles(h.o.queries, serviceURL, costBatch)
	if err != nil {
		return runs, err
	}
	if r, err = h.measureCost(ctx, fmt.Sprintf("service SQL, %d keys per statement", costBatch), serviceURL, benchDB, cycles, batched); err != nil {
		return runs, fmt.Errorf("service SQL, batched: %w", err)
	}
	r.notes = append(r.notes, "driven from Go over one connection with prepared statements: a pgbench variable cannot carry the rows of a claim")
	runs = append(runs, r)
	return runs, nil
}

// sealKeys gives every key of the database a secret as the service stores
// one: an 82-byte ciphertext (nonce, 54 bytes, tag), a key id and a
// 32-byte digest.
func sealKeys(ctx context.Context, url string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `UPDATE keys SET secret_key_id = '0123456789abcdef',
		secret_ciphertext = substr(sha512(id::text::bytea) || sha256(id::text::bytea), 1, 82),
		secret_digest = sha256(id::text::bytea)`); err != nil {
		return fmt.Errorf("seal keys: %w", err)
	}
	return vacuum(ctx, url)
}

// secretsRatio compares the cycle on keys with secrets to the one without:
// time per cycle, the claim's mean time, and WAL per cycle.
func secretsRatio(plain, sealed costRun, plainTook, sealedTook time.Duration) string {
	perCycle := func(d time.Duration, n int64) float64 { return float64(d.Microseconds()) / float64(max(n, 1)) }
	claimMean := func(r costRun) float64 {
		for _, st := range r.statements {
			if strings.Contains(st.name, claimName) {
				return st.mean
			}
		}
		return 0
	}
	note := fmt.Sprintf("%.0f µs per cycle against %.0f µs without secrets (×%.2f)",
		perCycle(sealedTook, sealed.cycles), perCycle(plainTook, plain.cycles),
		perCycle(sealedTook, sealed.cycles)/perCycle(plainTook, plain.cycles))
	if p, s := claimMean(plain), claimMean(sealed); p > 0 && s > 0 {
		note += fmt.Sprintf("; %s %.3f ms against %.3f ms (×%.2f)", claimName, s, p, s/p)
	}
	if plain.walBytes > 0 && plain.cycles > 0 && sealed.cycles > 0 {
		note += fmt.Sprintf("; WAL per cycle ×%.2f", (float64(sealed.walBytes)/float64(sealed.cycles))/(float64(plain.walBytes)/float64(plain.cycles)))
	}
	return note
}

// costDB is a fresh service database with poolSize free keys in pool bench.
func (h *harness) costDB(ctx context.Context, poolSize int) (string, error) {
	url, err := h.freshDB(ctx)
	if err != nil {
		return "", err
	}
	return url, loadKeys(ctx, url, "bench", poolSize)
}

// measureCost runs cycles of the workload on the database after a
// checkpoint and a warm-up as long as the measurement (which leaves the
// full-page images that follow a checkpoint mostly to the warm-up), and
// reads what the cycles cost from the server's statistics and its WAL.
func (h *harness) measureCost(ctx context.Context, name, url, dbName string, cycles int, run func(context.Context, int) (int64, error)) (costRun, error) {
	r := costRun{name: name}
	admin, err := pgx.Connect(ctx, h.adminURL)
	if err != nil {
		return r, err
	}
	defer admin.Close(context.Background())
	db, err := pgx.Connect(ctx, url)
	if err != nil {
		return r, err
	}
	defer db.Close(context.Background())

	if _, err := admin.Exec(ctx, "CHECKPOINT"); err != nil {
		return r, err
	}
	if _, err := run(ctx, cycles); err != nil {
		return r, fmt.Errorf("warm-up: %w", err)
	}
	if h.statements == "" {
		if _, err := admin.Exec(ctx, "SELECT pg_stat_statements_reset()"); err != nil {
			return r, err
		}
	}
	// The workload's sessions report their row counts when they end; let
	// the warm-up's arrive before the first reading.
	time.Sleep(time.Second)
	before, err := tableCounters(ctx, db)
	if err != nil {
		return r, err
	}
	var start, end string
	if err := admin.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&start); err != nil {
		return r, err
	}
	if r.cycles, err = run(ctx, cycles); err != nil {
		return r, err
	}
	if err := admin.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text, pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1::pg_lsn)::bigint", start).Scan(&end, &r.walBytes); err != nil {
		return r, err
	}
	time.Sleep(time.Second)
	after, err := tableCounters(ctx, db)
	if err != nil {
		return r, err
	}
	r.tables = tableDeltas(before, after)

	if h.statements != "" {
		r.notes = append(r.notes, "no per-statement figures: "+h.statements)
	} else if r.statements, err = statementCosts(ctx, admin, dbName); err != nil {
		return r, err
	}

	if h.walDir == "" {
		r.notes = append(r.notes, "no WAL records by resource manager: the server's pg_wal (or pg_waldump) is not reachable from here")
	} else {
		if err := waitFlushed(ctx, admin, end); err != nil {
			return r, err
		}
		if r.rmgrs, err = walStats(ctx, h.waldump, h.walDir, start, end); err != nil {
			return r, err
		}
	}
	return r, nil
}

// tableCounters reads the row counters of every table of the database.
func tableCounters(ctx context.Context, db *pgx.Conn) (map[string]tableDelta, error) {
	rows, err := db.Query(ctx, "SELECT relname, n_tup_upd, n_tup_hot_upd, n_tup_ins FROM pg_stat_user_tables")
	if err != nil {
		return nil, err
	}
	out := map[string]tableDelta{}
	for rows.Next() {
		var t tableDelta
		if err := rows.Scan(&t.name, &t.updated, &t.hot, &t.inserted); err != nil {
			return nil, err
		}
		out[t.name] = t
	}
	return out, rows.Err()
}

// tableDeltas gives the tables whose counters moved, by name.
func tableDeltas(before, after map[string]tableDelta) []tableDelta {
	var out []tableDelta
	for name, a := range after {
		b := before[name]
		d := tableDelta{name: name, updated: a.updated - b.updated, hot: a.hot - b.hot, inserted: a.inserted - b.inserted}
		if d.updated != 0 || d.hot != 0 || d.inserted != 0 {
			out = append(out, d)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// statementCosts reads the workload's statements, told apart by the comment
// each starts with, from pg_stat_statements.
func statementCosts(ctx context.Context, admin *pgx.Conn, dbName string) ([]statementCost, error) {
	rows, err := admin.Query(ctx, `
SELECT substring(s.query from '^/\* (.*?) \*/'), s.calls, s.rows,
       s.shared_blks_hit::float8 / s.calls, s.shared_blks_read::float8 / s.calls,
       s.shared_blks_dirtied::float8 / s.calls, s.wal_records::float8 / s.calls,
       s.wal_bytes::float8 / s.calls, s.mean_exec_time
FROM pg_stat_statements AS s
JOIN pg_database AS d ON d.oid = s.dbid
WHERE d.datname = $1 AND s.query LIKE '/* %' AND s.calls > 0
ORDER BY s.calls DESC, 1`, dbName)
	if err != nil {
		return nil, fmt.Errorf("pg_stat_statements: %w", err)
	}
	var out []statementCost
	for rows.Next() {
		var s statementCost
		if err := rows.Scan(&s.name, &s.calls, &s.rows, &s.hit, &s.read, &s.dirtied, &s.walRecords, &s.walBytes, &s.mean); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// waitFlushed waits until the WAL up to lsn is on disk, where pg_waldump
// reads it; the WAL writer flushes within a fraction of a second.
func waitFlushed(ctx context.Context, admin *pgx.Conn, lsn string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		var flushed bool
		if err := admin.QueryRow(ctx, "SELECT pg_current_wal_flush_lsn() >= $1::pg_lsn", lsn).Scan(&flushed); err != nil {
			return err
		}
		if flushed {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("WAL up to %s not flushed after 10 s", lsn)
		}
		if err := sleepUntil(ctx, time.Now().Add(50*time.Millisecond)); err != nil {
			return err
		}
	}
}

// walStats runs pg_waldump --stats over the range.
func walStats(ctx context.Context, waldump, walDir, start, end string) ([]rmgrStat, error) {
	cmd := exec.CommandContext(ctx, waldump, "--path="+walDir, "--start="+start, "--end="+end, "--stats")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("pg_waldump: %w\n%s", err, out.String())
	}
	stats := parseWalStats(out.String())
	if len(stats) == 0 {
		return nil, fmt.Errorf("pg_waldump printed no statistics:\n%s", out.String())
	}
	return stats, nil
}

// One line per resource manager: name, records, record bytes, full-page
// image bytes, combined bytes, each count followed by its share.
var walStatsLine = regexp.MustCompile(`(?m)^(\S+)\s+(\d+)\s+\(\s*[\d.]+\)\s+(\d+)\s+\(\s*[\d.]+\)\s+(\d+)\s+\(\s*[\d.]+\)\s+\d+\s+\(\s*[\d.]+\)\s*$`)

// parseWalStats reads pg_waldump --stats, keeping the resource managers
// that wrote records; the total line is left out (it has no shares).
func parseWalStats(out string) []rmgrStat {
	var stats []rmgrStat
	for _, m := range walStatsLine.FindAllStringSubmatch(out, -1) {
		s := rmgrStat{name: m[1]}
		s.records, _ = strconv.ParseInt(m[2], 10, 64)
		s.recordBytes, _ = strconv.ParseInt(m[3], 10, 64)
		s.fpiBytes, _ = strconv.ParseInt(m[4], 10, 64)
		if s.records > 0 {
			stats = append(stats, s)
		}
	}
	return stats
}

// batchedCycles runs the service's claim for batch keys at a time and the
// release of those keys in one statement, over one connection, as
// prepared statements (pgx prepares and caches each statement).
func batchedCycles(queriesFile, url string, batch int) (func(context.Context, int) (int64, error), error) {
	claim, release, err := serviceStatements(queriesFile)
	if err != nil {
		return nil, err
	}
	claimSQL, claimArgs := positional(tagged(fmt.Sprintf("%s, %d keys", claimName, batch), claim))
	releaseSQL, releaseArgs := positional(tagged(fmt.Sprintf("%s, %d keys", releaseName, batch), release))
	// Fail before running anything when a statement has a parameter this
	// driver does not know.
	if _, err := argValues(claimName, claimArgs, claimValues(batch)); err != nil {
		return nil, err
	}
	if _, err := argValues(releaseName, releaseArgs, map[string]any{"ids": nil, "lease_tokens": nil, "cooldown_seconds": nil}); err != nil {
		return nil, err
	}
	return func(ctx context.Context, keys int) (int64, error) {
		cfg, err := pgx.ParseConfig(url)
		if err != nil {
			return 0, err
		}
		// The service's session settings (server.connect).
		cfg.RuntimeParams["jit"] = "off"
		cfg.RuntimeParams["plan_cache_mode"] = "force_generic_plan"
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			return 0, err
		}
		defer conn.Close(context.Background())
		var done int64
		for done < int64(keys) {
			args, _ := argValues(claimName, claimArgs, claimValues(batch))
			ids, tokens, err := claimRows(ctx, conn, claimSQL, args)
			if err != nil {
				return done, err
			}
			if len(ids) == 0 {
				return done, errors.New("the claim found no free key")
			}
			args, _ = argValues(releaseName, releaseArgs, map[string]any{"ids": ids, "lease_tokens": tokens, "cooldown_seconds": make([]float64, len(ids))})
			tag, err := conn.Exec(ctx, releaseSQL, args...)
			if err != nil {
				return done, fmt.Errorf("%s: %w", releaseName, err)
			}
			if tag.RowsAffected() != int64(len(ids)) {
				return done, fmt.Errorf("%s released %d of %d keys", releaseName, tag.RowsAffected(), len(ids))
			}
			done += int64(len(ids))
		}
		return done, nil
	}, nil
}

func claimValues(batch int) map[string]any {
	return map[string]any{"pool": "bench", "start_position": rand.Float64(), "max": batch, "lease_ttl_seconds": 3600.0}
}

// argValues orders the values by the statement's parameters.
func argValues(statement string, names []string, values map[string]any) ([]any, error) {
	out := make([]any, len(names))
	for i, n := range names {
		v, ok := values[n]
		if !ok {
			return nil, fmt.Errorf("%s: no value for sqlc.arg(%s) in the benchmark (cmd/bench)", statement, n)
		}
		out[i] = v
	}
	return out, nil
}

// claimRows runs a claim and returns the keys' ids and lease tokens from
// its id and lease_token columns.
func claimRows(ctx context.Context, conn *pgx.Conn, sql string, args []any) (ids [][16]byte, tokens []int64, err error) {
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", claimName, err)
	}
	defer rows.Close()
	idCol, tokenCol := -1, -1
	for i, f := range rows.FieldDescriptions() {
		switch f.Name {
		case "id":
			idCol = i
		case "lease_token":
			tokenCol = i
		}
	}
	if idCol < 0 || tokenCol < 0 {
		return nil, nil, fmt.Errorf("%s returns no id or no lease_token column", claimName)
	}
	for rows.Next() {
		values, err := rows.Values()
		if err != nil {
			return nil, nil, err
		}
		id, ok1 := values[idCol].([16]byte)
		token, ok2 := values[tokenCol].(int64)
		if !ok1 || !ok2 {
			return nil, nil, fmt.Errorf("%s: id %T and lease_token %T are not a uuid and a bigint", claimName, values[idCol], values[tokenCol])
		}
		ids, tokens = append(ids, id), append(tokens, token)
	}
	return ids, tokens, rows.Err()
}
