-- Queries on pool_waiters: which replicas have clients waiting for a key.

-- name: PoolWaitersRegister :exec
-- Registers (or renews) a replica's waiters for the pool. generation grows
-- with every registration a replica sends: one that reaches the database
-- after a newer one changes nothing.
INSERT INTO pool_waiters AS w (pool, replica, expires_at, generation)
VALUES (sqlc.arg(pool)::text, sqlc.arg(replica)::text,
        now() + sqlc.arg(ttl_seconds)::float8 * interval '1 second', sqlc.arg(generation)::bigint)
ON CONFLICT (pool, replica) DO UPDATE SET expires_at = excluded.expires_at, generation = excluded.generation
WHERE w.generation < excluded.generation;

-- name: PoolWaitersUnregister :exec
-- Withdraws the replica's registration for the pool if generation wrote it,
-- or an older registration did: a withdrawal that arrives after the replica
-- registered again leaves the newer registration in place.
DELETE FROM pool_waiters
WHERE pool = sqlc.arg(pool)::text AND replica = sqlc.arg(replica)::text
  AND generation <= sqlc.arg(generation)::bigint;

-- name: PoolWaitersFreePools :many
-- Of the pools a replica's clients wait on, those in which a claim would
-- find a key now: one statement per poll however many pools are waited on,
-- so that made-up pool names cannot multiply the polling. Each pool costs
-- one step on key_state_claimable_position_idx, the claim's own index walk (see
-- KeyPoolHasFree). It never claims a key.
SELECT w.pool::text AS pool
FROM unnest(sqlc.arg(pools)::text[]) AS w (pool)
WHERE (
    SELECT c.position FROM key_state AS c
    WHERE c.pool = w.pool AND c.lease_token IS NULL AND c.cooling_until IS NULL
      AND (SELECT coalesce(k.expires_at, 'infinity') FROM keys AS k WHERE k.id = c.key_id) > now()
    ORDER BY c.position
    LIMIT 1
) IS NOT NULL;

-- name: PoolWaitersDeleteExpired :one
-- One batch of the background job: deletes up to max registrations that
-- have expired, those of replicas that died without withdrawing them,
-- oldest first through pool_waiters_expires_at_idx. A registration renewed
-- meanwhile is no longer expired when its row is locked, and stays. SKIP
-- LOCKED lets replicas that run the job at the same time pass each other.
WITH expired AS (
    SELECT e.pool, e.replica FROM pool_waiters AS e
    WHERE e.expires_at <= now()
    ORDER BY e.expires_at
    LIMIT sqlc.arg(max)::int
    FOR UPDATE SKIP LOCKED
), batch AS (
    -- Arrays, not a join with the CTE: the planner cannot know how few rows
    -- it gives, and may otherwise hash the whole table (see KeyClaim). One
    -- pass over the locked rows fills both arrays, so their elements pair
    -- up, and two unnests in one select list advance together.
    SELECT unnest(b.pools) AS pool, unnest(b.replicas) AS replica
    FROM (SELECT array_agg(x.pool) AS pools, array_agg(x.replica) AS replicas FROM expired AS x) AS b
), deleted AS (
    DELETE FROM pool_waiters AS w
    USING batch
    WHERE w.pool = batch.pool AND w.replica = batch.replica
    RETURNING w.pool
)
SELECT count(*) FROM deleted;
