-- Queries on pool_counts, the per-pool counters kept by triggers on keys.

-- name: PoolCountsList :many
-- Counts of every pool that has keys.
SELECT pool, sum(keys)::bigint AS keys, sum(blocked)::bigint AS blocked
FROM pool_counts
GROUP BY pool
HAVING sum(keys) <> 0
ORDER BY pool;

-- name: PoolCountsGet :one
SELECT coalesce(sum(keys), 0)::bigint AS keys, coalesce(sum(blocked), 0)::bigint AS blocked
FROM pool_counts
WHERE pool = sqlc.arg(pool)::text;
