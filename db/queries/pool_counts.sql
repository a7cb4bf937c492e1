-- Queries on the per-pool counts: pool_count_totals, the changes appended
-- by every statement that changes a pool's counts (pool_count_changes), and
-- the view pool_counts that adds the two up (see migration 00005).

-- name: PoolCountsList :many
-- Counts of every pool that has keys: pool_counts of every pool, its totals
-- and changes joined once and grouped. Through the view, whose lateral
-- searches the changes once per pool, the planner scanned
-- pool_count_changes once per pool after an ANALYZE that saw few changes
-- in many pages (rows the folds deleted): 108,548 buffers for 2,000 pools,
-- polled by the dashboard every two seconds.
SELECT t.pool,
       (t.keys + coalesce(sum(c.keys), 0))::bigint AS keys,
       (t.blocked + coalesce(sum(c.blocked), 0))::bigint AS blocked,
       (t.seats + coalesce(sum(coalesce(c.seats, c.keys)), 0))::bigint AS seats
FROM pool_count_totals AS t
LEFT JOIN pool_count_changes AS c ON c.pool = t.pool AND c.xid >= t.horizon
GROUP BY t.pool, t.keys, t.blocked, t.seats
HAVING t.keys + coalesce(sum(c.keys), 0) <> 0
ORDER BY t.pool;

-- name: PoolCountsGet :one
SELECT coalesce(sum(keys), 0)::bigint AS keys, coalesce(sum(blocked), 0)::bigint AS blocked,
       coalesce(sum(seats), 0)::bigint AS seats
FROM pool_counts
WHERE pool = sqlc.arg(pool)::text;

-- name: PoolCountsKnown :one
-- Whether the pool is known, which a claim asks once it found no free key
-- (or before it waits): a pool without keys is not waited for. Each way a
-- pool comes to be known is one line of the union.
SELECT EXISTS (
    SELECT 1 FROM pool_counts WHERE pool = sqlc.arg(pool)::text AND keys <> 0
    UNION ALL
    SELECT 1 FROM pools WHERE name = sqlc.arg(pool)::text
) AS known;

-- name: PoolCountsFold :one
-- Moves the changes of every pool into its totals, and returns how many
-- change rows it moved. The pool's horizon becomes the oldest transaction
-- still running (pg_snapshot_xmin): every change of an older transaction is
-- committed or rolled back by now, so if committed it is one that this fold
-- sees and moves, and readers need only add the changes from the horizon
-- on. One fold at a time (a transaction-scoped advisory lock; a replica
-- that does not get it skips this fold), so that two never lock the same
-- rows in different orders.
WITH fold_lock AS (
    SELECT pg_try_advisory_xact_lock(sqlc.arg(lock_id)::bigint) AS held
), horizon AS (
    SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xid
), moved AS (
    DELETE FROM pool_count_changes AS c
    USING pool_count_totals AS t
    WHERE (SELECT fold_lock.held FROM fold_lock) AND c.pool = t.pool AND c.xid >= t.horizon
    RETURNING c.pool, c.keys, c.blocked, c.seats
), sums AS (
    -- A change without seats is one of keys of one seat each (migration 00013).
    SELECT moved.pool, sum(moved.keys) AS keys, sum(moved.blocked) AS blocked,
           sum(coalesce(moved.seats, moved.keys)) AS seats, count(*) AS changes
    FROM moved
    GROUP BY moved.pool
), folded AS (
    UPDATE pool_count_totals AS t
    SET keys = t.keys + sums.keys,
        blocked = t.blocked + sums.blocked,
        seats = t.seats + sums.seats,
        horizon = greatest(t.horizon, (SELECT horizon.xid FROM horizon))
    FROM sums
    WHERE t.pool = sums.pool
    RETURNING sums.changes
)
SELECT coalesce(sum(folded.changes), 0)::bigint AS changes FROM folded;

-- name: PoolCountsEmpty :many
-- Up to max pools that have no key left, in pool order.
SELECT pool FROM pool_counts
WHERE keys = 0 AND blocked = 0
ORDER BY pool
LIMIT sqlc.arg(max)::int;

-- name: PoolCountsLock :many
-- Locks the totals rows of the pools named, in pool order. A statement that
-- creates keys locks its pool's row too, so a pool cannot get keys between
-- this lock and the end of the transaction.
SELECT pool FROM pool_count_totals
WHERE pool = ANY (sqlc.arg(pools)::text[])
ORDER BY pool
FOR UPDATE;

-- name: PoolCountsDeleteEmpty :one
-- Removes the counts of the pools named that still have no key, with the
-- snapshot of this statement, taken after PoolCountsLock in the same
-- transaction.
WITH empty AS (
    SELECT p.pool FROM pool_counts AS p
    WHERE p.pool = ANY (sqlc.arg(pools)::text[]) AND p.keys = 0 AND p.blocked = 0
), changes AS (
    DELETE FROM pool_count_changes AS c
    WHERE c.pool = ANY (ARRAY(SELECT empty.pool FROM empty))
), totals AS (
    DELETE FROM pool_count_totals AS t
    WHERE t.pool = ANY (ARRAY(SELECT empty.pool FROM empty))
    RETURNING t.pool
)
SELECT count(*) FROM totals;

-- name: PoolCountsTryFoldLock :one
-- Takes, for the rest of the transaction, the advisory lock that a fold
-- takes: removing an empty pool's counts locks its totals row and then its
-- changes, a fold the changes and then the totals, so the two must not run
-- at once.
SELECT pg_try_advisory_xact_lock(sqlc.arg(lock_id)::bigint) AS held;
