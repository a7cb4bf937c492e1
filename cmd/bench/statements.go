package main

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// statementCounters are a statement's cumulative pg_stat_statements
// counters at one moment.
type statementCounters struct {
	calls   int64
	buffers int64 // shared blocks hit and read
	// reads are the buffers not found in shared_buffers (read from the
	// operating system's cache or the disk).
	reads  int64
	execMS float64
}

// statementWindow is what one statement cost in one window.
type statementWindow struct {
	calls          int64
	buffersPerCall float64
	msPerCall      float64
}

// statementSampler reads the cumulative counters of a database's
// statements at the end of every window of a run, so that each window's
// cost per statement is the difference of two readings. A held snapshot
// shows in the buffers a statement reads per call: dead entries of an
// index walked, version chains followed.
type statementSampler struct {
	readings []map[string]statementCounters
	err      error
}

// sampleStatements takes a reading at begin and at the end of each of n
// windows of width, on its own connection, and returns once it has the
// last one (or ctx ends). Statements are named by their leading comment:
// sqlc's "-- name: X" for the service, "/* X */" for pgbench scripts.
func sampleStatements(ctx context.Context, adminURL, dbName string, begin time.Time, width time.Duration, n int) *statementSampler {
	s := &statementSampler{}
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		s.err = err
		return s
	}
	defer conn.Close(context.Background())
	for k := 0; k <= n; k++ {
		if err := sleepUntil(ctx, begin.Add(time.Duration(k)*width)); err != nil {
			s.err = err
			return s
		}
		reading, err := readStatements(ctx, conn, dbName)
		if err != nil {
			s.err = err
			return s
		}
		s.readings = append(s.readings, reading)
	}
	return s
}

func readStatements(ctx context.Context, conn *pgx.Conn, dbName string) (map[string]statementCounters, error) {
	rows, err := conn.Query(ctx, `
SELECT coalesce(substring(s.query from '^/\* (.*?) \*/'), substring(s.query from '-- name: (\S+)')) AS name,
       sum(s.calls)::bigint, sum(s.shared_blks_hit + s.shared_blks_read)::bigint, sum(s.shared_blks_read)::bigint,
       sum(s.total_exec_time)
FROM pg_stat_statements AS s
JOIN pg_database AS d ON d.oid = s.dbid
WHERE d.datname = $1
GROUP BY 1
HAVING coalesce(substring(s.query from '^/\* (.*?) \*/'), substring(s.query from '-- name: (\S+)')) IS NOT NULL`, dbName)
	if err != nil {
		return nil, fmt.Errorf("pg_stat_statements: %w", err)
	}
	out := map[string]statementCounters{}
	for rows.Next() {
		var name string
		var c statementCounters
		if err := rows.Scan(&name, &c.calls, &c.buffers, &c.reads, &c.execMS); err != nil {
			return nil, err
		}
		out[name] = c
	}
	return out, rows.Err()
}

// statementsShown is how many statements a run's table shows: those that
// read the most buffers over the whole run.
const statementsShown = 5

// windows turns the readings into each window's cost per statement, for
// the statements that read the most buffers over the run, in that order.
func (s *statementSampler) windows() (names []string, perWindow []map[string]statementWindow) {
	if len(s.readings) < 2 {
		return nil, nil
	}
	first, last := s.readings[0], s.readings[len(s.readings)-1]
	type total struct {
		name    string
		buffers int64
	}
	var totals []total
	for name, c := range last {
		if b := c.buffers - first[name].buffers; b > 0 {
			totals = append(totals, total{name, b})
		}
	}
	slices.SortFunc(totals, func(a, b total) int {
		return cmp.Or(cmp.Compare(b.buffers, a.buffers), strings.Compare(a.name, b.name))
	})
	for _, t := range totals[:min(statementsShown, len(totals))] {
		names = append(names, t.name)
	}
	for k := 1; k < len(s.readings); k++ {
		w := map[string]statementWindow{}
		for _, name := range names {
			now, then := s.readings[k][name], s.readings[k-1][name]
			calls := now.calls - then.calls
			if calls <= 0 {
				continue
			}
			w[name] = statementWindow{
				calls:          calls,
				buffersPerCall: float64(now.buffers-then.buffers) / float64(calls),
				msPerCall:      (now.execMS - then.execMS) / float64(calls),
			}
		}
		perWindow = append(perWindow, w)
	}
	return names, perWindow
}

// cycleStatement is what one statement cost a throughput run, per cycle.
type cycleStatement struct {
	name                              string
	callsPerCycle, execMicrosPerCycle float64
	buffersPerCycle, buffersPerCall   float64
	// readsPerCycle are the buffers per cycle that were not in
	// shared_buffers.
	readsPerCycle float64
}

// cycleStatementsShown is how many statements a throughput run lists.
const cycleStatementsShown = 6

// statementsPerCycle turns two readings around a run of cycles into each
// statement's cost per cycle, for the statements that took the most time.
func statementsPerCycle(before, after map[string]statementCounters, cycles int64) []cycleStatement {
	if cycles <= 0 {
		return nil
	}
	var out []cycleStatement
	for name, a := range after {
		b := before[name]
		calls := a.calls - b.calls
		if calls <= 0 {
			continue
		}
		out = append(out, cycleStatement{
			name:               name,
			callsPerCycle:      float64(calls) / float64(cycles),
			execMicrosPerCycle: (a.execMS - b.execMS) * 1000 / float64(cycles),
			buffersPerCycle:    float64(a.buffers-b.buffers) / float64(cycles),
			buffersPerCall:     float64(a.buffers-b.buffers) / float64(calls),
			readsPerCycle:      float64(a.reads-b.reads) / float64(cycles),
		})
	}
	slices.SortFunc(out, func(x, y cycleStatement) int {
		return cmp.Or(cmp.Compare(y.execMicrosPerCycle, x.execMicrosPerCycle), strings.Compare(x.name, y.name))
	})
	return out[:min(cycleStatementsShown, len(out))]
}

// readStatementsOf reads the counters of dbName's statements on a
// connection of its own.
func readStatementsOf(ctx context.Context, adminURL, dbName string) (map[string]statementCounters, error) {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	return readStatements(ctx, conn, dbName)
}
