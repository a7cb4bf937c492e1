-- Queries on pool_waiters: which replicas have clients waiting for a key.

-- name: PoolWaitersRegister :exec
-- Registers (or renews) a replica's waiters for the pool.
INSERT INTO pool_waiters AS w (pool, replica, expires_at)
VALUES (sqlc.arg(pool)::text, sqlc.arg(replica)::text, now() + sqlc.arg(ttl_seconds)::float8 * interval '1 second')
ON CONFLICT (pool, replica) DO UPDATE SET expires_at = excluded.expires_at;

-- name: PoolWaitersUnregister :exec
DELETE FROM pool_waiters
WHERE pool = sqlc.arg(pool)::text AND replica = sqlc.arg(replica)::text;
