-- Queries on pools: the policy of each pool that has one (see migration
-- 00011). A pool without a row uses the server's settings.

-- name: PoolGet :one
SELECT p.name, p.key_ttl, p.keys_stay, p.lease_ttl, p.max_lease_ttl, p.require_lease_token, p.max_wait,
       p.created_at, p.updated_at, p.seats
FROM pools AS p
WHERE p.name = sqlc.arg(name)::text;

-- name: PoolList :many
-- Every pool that has a policy, in name order.
SELECT p.name, p.key_ttl, p.keys_stay, p.lease_ttl, p.max_lease_ttl, p.require_lease_token, p.max_wait,
       p.created_at, p.updated_at, p.seats
FROM pools AS p
ORDER BY p.name;

-- name: PoolLock :many
-- The pool's key life as it is, its row locked until the end of the
-- transaction, so that changes of one pool's policy are ordered: PoolPut
-- follows in the same transaction, and the caller tells whether the key
-- life changed. No row for a pool without a policy.
SELECT p.key_ttl, p.keys_stay FROM pools AS p WHERE p.name = sqlc.arg(name)::text FOR UPDATE;

-- name: PoolPut :one
-- Creates or replaces the pool's policy.
INSERT INTO pools AS p (name, key_ttl, keys_stay, lease_ttl, max_lease_ttl, require_lease_token, max_wait, seats)
VALUES (sqlc.arg(name)::text, sqlc.narg(key_ttl)::interval, sqlc.arg(keys_stay)::boolean,
        sqlc.narg(lease_ttl)::interval, sqlc.narg(max_lease_ttl)::interval,
        sqlc.arg(require_lease_token)::boolean, sqlc.narg(max_wait)::interval, sqlc.narg(seats)::int)
ON CONFLICT (name) DO UPDATE
SET key_ttl = excluded.key_ttl, keys_stay = excluded.keys_stay, lease_ttl = excluded.lease_ttl,
    max_lease_ttl = excluded.max_lease_ttl, require_lease_token = excluded.require_lease_token,
    max_wait = excluded.max_wait, seats = excluded.seats, updated_at = now()
RETURNING p.name, p.key_ttl, p.keys_stay, p.lease_ttl, p.max_lease_ttl, p.require_lease_token, p.max_wait,
          p.created_at, p.updated_at, p.seats;

-- name: PoolCreateIfAbsent :one
-- Gives a pool that has none the policy of an import of secrets: keys that
-- stay, or the key life the import asked for. Answers whether it created
-- one; a pool that has a policy keeps it.
WITH created AS (
    INSERT INTO pools AS p (name, key_ttl, keys_stay)
    VALUES (sqlc.arg(name)::text, sqlc.narg(key_ttl)::interval, sqlc.narg(key_ttl)::interval IS NULL)
    ON CONFLICT (name) DO NOTHING
    RETURNING p.name
)
SELECT EXISTS (SELECT 1 FROM created)::boolean AS created;

-- name: PoolDelete :one
-- Removes the pool's policy once it has no key left (one probe of
-- keys_pool_id_idx). Answers whether it had a policy, and whether it removed
-- it.
WITH deleted AS (
    DELETE FROM pools AS p
    WHERE p.name = sqlc.arg(name)::text
      -- The pool's first key in the index's order, whatever the pool's
      -- share of the keys (an EXISTS would drop the order and may scan).
      AND (SELECT k.id FROM keys AS k WHERE k.pool = sqlc.arg(name)::text ORDER BY k.pool, k.id LIMIT 1) IS NULL
    RETURNING p.name
)
SELECT EXISTS (SELECT 1 FROM pools AS p WHERE p.name = sqlc.arg(name)::text)::boolean AS had_policy,
       EXISTS (SELECT 1 FROM deleted)::boolean AS deleted;

-- name: PoolHasKeys :one
-- Whether any key of the pool is left: one probe of keys_pool_id_idx.
SELECT ((SELECT k.id FROM keys AS k WHERE k.pool = sqlc.arg(name)::text ORDER BY k.pool, k.id LIMIT 1) IS NOT NULL)::boolean AS has_keys;
