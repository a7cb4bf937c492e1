package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// The bare SQL floor: the least a claim-and-release cycle can cost in
// PostgreSQL, one table with the indexes a claim and the background job
// need, no history and no triggers. Every measurement of the service is
// set against it; its definition is fixed so that figures taken months
// apart, and before and after a schema change, stay comparable.
const floorDB = "tokenorchestrator_floor"

// floorSchema creates the floor's table with n free keys in pool 'default'.
// The indexes come after the rows, which only makes loading a large pool
// quicker; the table ends up the same.
func floorSchema(n int) string {
	return fmt.Sprintf(`
CREATE TABLE keys (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    pool text,
    rnd float8 DEFAULT random(),
    created_at timestamptz DEFAULT now(),
    expires_at timestamptz,
    blocked_at timestamptz,
    lease_expires_at timestamptz,
    lease_token bigint
);
CREATE SEQUENCE seq;
INSERT INTO keys (pool, expires_at) SELECT 'default', now() + interval '1 day' FROM generate_series(1, %d);
CREATE INDEX keys_free_rnd_idx ON keys (pool, rnd) WHERE lease_token IS NULL;
CREATE INDEX keys_lease_expires_at_idx ON keys (lease_expires_at) WHERE lease_token IS NOT NULL;
CREATE INDEX keys_expires_at_idx ON keys (expires_at);
`, n)
}

// floorStart is the highest start point (exclusive) a floor claim draws.
// The floor's claim does not wrap around to the start of the index, so at
// least 1% of the keys must lie above any start; the keys the clients hold
// are spread over the whole range, so only about 1% of them lie there, and
// the claim always finds a key (\gset fails the client on no row).
const floorStart = 0.99

// floorScript is one floor cycle: the claim and the release, two prepared
// statements, each its own transaction.
var floorScript = fmt.Sprintf(`\set r random(0, %d) / 1000000.0
/* floor claim */ WITH c AS (SELECT id FROM keys WHERE pool = 'default' AND lease_token IS NULL AND rnd >= :r AND expires_at > now() ORDER BY rnd LIMIT 1 FOR UPDATE SKIP LOCKED) UPDATE keys SET lease_token = nextval('seq'), blocked_at = now(), lease_expires_at = now() + interval '60 s' FROM c WHERE keys.id = c.id RETURNING keys.id \gset
/* floor release */ UPDATE keys SET lease_token = NULL, blocked_at = NULL, lease_expires_at = NULL, rnd = random() WHERE id = :id;
`, int(floorStart*1_000_000)-1)

// freshFloor recreates the floor's database with n keys, vacuumed and
// analysed, and returns its URL.
func (h *harness) freshFloor(ctx context.Context, n int) (string, error) {
	url, err := h.recreateDB(ctx, floorDB)
	if err != nil {
		return "", err
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, floorSchema(n)); err != nil {
		return "", fmt.Errorf("floor schema: %w", err)
	}
	return url, vacuum(ctx, url)
}

// floorRate runs the floor with the given clients for the given time on a
// fresh pool of n keys and returns its cycles per second.
func (h *harness) floorRate(ctx context.Context, n, clients int, duration time.Duration) (float64, error) {
	rate, _, err := h.floorRun(ctx, n, clients, duration)
	return rate, err
}

// floorRun is floorRate with the CPU time per cycle of PostgreSQL and of
// pgbench.
func (h *harness) floorRun(ctx context.Context, n, clients int, duration time.Duration) (float64, cpuSplit, error) {
	url, err := h.freshFloor(ctx, n)
	if err != nil {
		return 0, cpuSplit{}, err
	}
	pgBefore := postgresCPU(h.postmasterPID())
	out, err := runPgbench(ctx, h.pgbench, pgbenchRun{url: url, script: floorScript, clients: clients, duration: duration})
	var split cpuSplit
	if cycles := float64(out.processed); err == nil && cycles > 0 {
		split.client = out.cpu / cycles * 1e6
		if pid := h.postmasterPID(); pid != 0 {
			split.postgres = (postgresCPU(pid) - pgBefore) / cycles * 1e6
		}
	}
	return out.tps, split, err
}
