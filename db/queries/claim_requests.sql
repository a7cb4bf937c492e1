-- Queries on claim_requests: the lease each claim made under an
-- Idempotency-Key got, so that a repeat of the claim answers that lease
-- (see migration 00008). A first claim under a key runs, in one
-- transaction: ClaimRequestLock, KeyClaim for one key, ClaimRequestRecord.

-- name: ClaimRequestGet :one
-- The claim recorded under the idempotency key of the pool, unless the
-- record has expired. current tells whether the recorded lease is still the
-- key's lease and running; the key's columns are then the key as it is now,
-- and all NULL when that lease has ended (released, run out, or its key
-- deleted or expired). Every step is a primary-key lookup.
SELECT r.key_id AS id,
       (k.id IS NOT NULL)::boolean AS current,
       k.pool, k.created_at, k.expires_at, k.last_keep_alive_at, k.labels, k.name, k.secret_hint,
       k.seats, (CASE WHEN k.seats = 1 THEN (s.lease_token IS NOT NULL)::int ELSE -1 END)::int AS seats_held,
       s.times_assigned, s.lease_token, s.blocked_at, s.lease_expires_at, s.cooling_until,
       -- The repeat of a claim answers what the claim answered, the secret
       -- included; the record itself never holds it.
       k.secret_key_id, k.secret_ciphertext
FROM claim_requests AS r
-- The lease is compared with IS NOT DISTINCT FROM (the record's token is
-- never NULL): from an = the planner proves lease_token IS NOT NULL and may
-- walk the partial index of held keys instead of the primary key (see
-- keys.sql).
LEFT JOIN key_state AS s
    ON s.key_id = r.key_id AND s.lease_token IS NOT DISTINCT FROM r.lease_token AND s.lease_expires_at > now()
LEFT JOIN keys AS k
    ON k.id = s.key_id AND (k.expires_at IS NULL OR k.expires_at > now())
WHERE r.pool = sqlc.arg(pool)::text AND r.idempotency_key = sqlc.arg(idempotency_key)::text
  -- Checked on the record found, not searched for: written so that it
  -- cannot be a condition on claim_requests_expires_at_idx, which an
  -- ANALYZE that saw the records expired makes look empty.
  AND r.expires_at - now() > interval '0';

-- name: ClaimRequestLock :exec
-- Orders the first claims made under one idempotency key of a pool, until
-- the end of the transaction: the second waits here until the first has
-- committed or rolled back, so that it then sees the first one's record
-- even when it finds no free key of its own (a unique-index wait orders two
-- claims only when both have a key to record). A transaction-scoped
-- advisory lock on a hash of the pool and the key: a collision only makes
-- two unrelated claims wait on each other for a moment.
SELECT pg_advisory_xact_lock(hashtextextended(sqlc.arg(pool)::text || ' ' || sqlc.arg(idempotency_key)::text, 9));

-- name: ClaimRequestRecord :execrows
-- Records the lease just claimed under the idempotency key, in the claim's
-- transaction, for as long as the lease lasts without keep-alives: the
-- record ends exactly at the lease's first deadline (expires_at), whatever
-- the pool's lease length. An expired record that the background job has not deleted yet
-- is replaced; a live one is kept, and no row is affected: another request
-- with the same key has claimed first, and the caller rolls its claim back.
INSERT INTO claim_requests AS r (pool, idempotency_key, key_id, lease_token, expires_at)
VALUES (sqlc.arg(pool)::text, sqlc.arg(idempotency_key)::text, sqlc.arg(key_id)::uuid, sqlc.arg(lease_token)::bigint,
        sqlc.arg(expires_at)::timestamptz)
ON CONFLICT (pool, idempotency_key) DO UPDATE
SET key_id = excluded.key_id,
    lease_token = excluded.lease_token,
    created_at = excluded.created_at,
    expires_at = excluded.expires_at
WHERE r.expires_at <= now();

-- name: ClaimRequestDeleteExpired :one
-- One batch of the background job: deletes up to max records that have
-- expired, oldest first. SKIP LOCKED leaves a record that a claim is
-- replacing to the claim. The delete finds the locked rows again through
-- the index on expires_at (= ANY, one lookup per time, however the planner
-- guesses the batch's size; a join on the two-column primary key may become
-- a scan of the table), and keeps only those locked.
WITH expired AS (
    SELECT c.pool, c.idempotency_key, c.expires_at FROM claim_requests AS c
    WHERE c.expires_at <= now()
    ORDER BY c.expires_at
    LIMIT sqlc.arg(max)::int
    FOR UPDATE SKIP LOCKED
), deleted AS (
    DELETE FROM claim_requests AS r
    WHERE r.expires_at = ANY (ARRAY(SELECT expired.expires_at FROM expired))
      AND EXISTS (
          SELECT 1 FROM expired
          WHERE expired.pool = r.pool AND expired.idempotency_key = r.idempotency_key
      )
    RETURNING 1
)
SELECT count(*) FROM deleted;
