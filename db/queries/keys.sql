-- Queries on the keys table. Every statement that changes a key appends its
-- history row in the same statement, and every deadline uses the database
-- clock (now()) so that replicas with skewed clocks agree.
--
-- A key whose expires_at has passed counts as gone even before the background
-- job deletes it: every statement on a single key filters on it.

-- name: KeyCreate :many
-- Creates count free keys in one statement.
WITH created AS (
    INSERT INTO keys (pool, expires_at)
    SELECT sqlc.arg(pool)::text, now() + sqlc.arg(key_ttl_seconds)::float8 * interval '1 second'
    FROM generate_series(1, sqlc.arg(count)::int)
    RETURNING *
), history AS (
    INSERT INTO key_events (key_id, pool, event)
    SELECT created.id, created.pool, 'created' FROM created
)
SELECT * FROM created;

-- name: KeyClaim :many
-- Blocks up to max free, live keys of the pool under new lease tokens. It
-- walks the partial index of free keys from a random position and wraps
-- around to the start; the second scan asks only for what the first could
-- not find, so it does no work when the first found enough. SKIP LOCKED lets
-- concurrent claims pass each other instead of queueing on the same row.
-- (FOR UPDATE is not allowed on a UNION, hence two CTEs.)
WITH after_start AS (
    SELECT c.id FROM keys AS c
    WHERE c.pool = sqlc.arg(pool)::text AND c.lease_token IS NULL AND c.expires_at > now()
      AND c.position >= sqlc.arg(start_position)::float8
    ORDER BY c.position
    LIMIT sqlc.arg(max)::int
    FOR UPDATE SKIP LOCKED
), before_start AS (
    SELECT c.id FROM keys AS c
    WHERE c.pool = sqlc.arg(pool)::text AND c.lease_token IS NULL AND c.expires_at > now()
      AND c.position < sqlc.arg(start_position)::float8
    ORDER BY c.position
    LIMIT sqlc.arg(max)::int - (SELECT count(*) FROM after_start)
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE keys AS k
    SET lease_token = nextval('lease_token_seq'),
        blocked_at = now(),
        lease_expires_at = now() + sqlc.arg(lease_ttl_seconds)::float8 * interval '1 second',
        times_assigned = k.times_assigned + 1
    -- An array, not a join: the planner cannot know how few rows the CTEs
    -- give, and may otherwise hash-join them against a scan of the table.
    WHERE k.id = ANY (ARRAY(SELECT after_start.id FROM after_start UNION ALL SELECT before_start.id FROM before_start))
    RETURNING k.*
), history AS (
    INSERT INTO key_events (key_id, pool, event, lease_token)
    SELECT claimed.id, claimed.pool, 'assigned', claimed.lease_token FROM claimed
)
SELECT * FROM claimed;

-- name: KeyGet :one
SELECT * FROM keys
WHERE id = sqlc.arg(id) AND expires_at > now();

-- name: KeyPoolHasFree :one
-- Whether a claim on the pool would find a key right now; never blocks one.
-- Written as the claim's own index walk: as an EXISTS, the planner may prefer
-- a table scan, which is quick only while free keys are plentiful.
SELECT ((
    SELECT c.position FROM keys AS c
    WHERE c.pool = sqlc.arg(pool)::text AND c.lease_token IS NULL AND c.expires_at > now()
    ORDER BY c.position
    LIMIT 1
) IS NOT NULL)::boolean AS has_free;

-- name: KeyKeepAliveMany :many
-- Resets the life of each key named and, when it is blocked, its lease. A
-- request's lease token, when not 0, must name the key's current lease: a
-- stale token matches no row. Rows are found by primary key with = ANY, so
-- the plan is an index lookup whatever the planner guesses of the batch's
-- size, and locked in id order so that two batches never wait on each
-- other in a cycle.
WITH request AS (
    -- Two unnests in one select list advance together, pairing ids and tokens.
    SELECT unnest(sqlc.arg(ids)::uuid[]) AS id, unnest(sqlc.arg(lease_tokens)::bigint[]) AS lease_token
), target AS (
    SELECT c.id FROM keys AS c
    WHERE c.id = ANY (sqlc.arg(ids)::uuid[]) AND c.expires_at > now()
      AND EXISTS (
          SELECT 1 FROM request AS r
          WHERE r.id = c.id AND (r.lease_token = 0 OR r.lease_token = c.lease_token)
      )
    ORDER BY c.id
    FOR UPDATE
), kept AS (
    UPDATE keys AS k
    SET expires_at = now() + sqlc.arg(key_ttl_seconds)::float8 * interval '1 second',
        last_keep_alive_at = now(),
        lease_expires_at = CASE
            WHEN k.lease_token IS NULL THEN NULL
            ELSE now() + sqlc.arg(lease_ttl_seconds)::float8 * interval '1 second'
        END
    FROM target
    WHERE k.id = target.id
    RETURNING k.*
), history AS (
    INSERT INTO key_events (key_id, pool, event, lease_token)
    SELECT kept.id, kept.pool, 'kept_alive', kept.lease_token FROM kept
)
SELECT * FROM kept;

-- name: KeyReleaseMany :many
-- Ends the current lease of each key named (or, when the request's lease
-- token is not 0, only the lease it names) and gives the key a new random
-- position. A key that is gone, free, or held under another lease matches
-- no row; the caller tells those apart afterwards.
WITH request AS (
    -- Two unnests in one select list advance together, pairing ids and tokens.
    SELECT unnest(sqlc.arg(ids)::uuid[]) AS id, unnest(sqlc.arg(lease_tokens)::bigint[]) AS lease_token
), current_lease AS (
    SELECT c.id, c.lease_token FROM keys AS c
    WHERE c.id = ANY (sqlc.arg(ids)::uuid[]) AND c.expires_at > now() AND c.lease_token IS NOT NULL
      AND EXISTS (
          SELECT 1 FROM request AS r
          WHERE r.id = c.id AND (r.lease_token = 0 OR r.lease_token = c.lease_token)
      )
    ORDER BY c.id
    FOR UPDATE
), released AS (
    UPDATE keys AS k
    SET lease_token = NULL, blocked_at = NULL, lease_expires_at = NULL, position = random()
    FROM current_lease
    WHERE k.id = current_lease.id
    RETURNING k.*, current_lease.lease_token AS ended_lease_token
), history AS (
    INSERT INTO key_events (key_id, pool, event, lease_token)
    SELECT released.id, released.pool, 'released', released.ended_lease_token FROM released
)
SELECT * FROM released;

-- name: KeyDelete :one
WITH deleted AS (
    DELETE FROM keys AS k
    WHERE k.id = sqlc.arg(id) AND k.expires_at > now()
    RETURNING k.*
), history AS (
    INSERT INTO key_events (key_id, pool, event, lease_token)
    SELECT deleted.id, deleted.pool, 'deleted', deleted.lease_token FROM deleted
)
SELECT * FROM deleted;

-- name: KeyReleaseEndedLeases :one
-- One batch of the background job: frees up to max keys whose lease has
-- ended, oldest deadline first. SKIP LOCKED leaves rows that a request or
-- another replica is working on to the next pass. The history rows come
-- from the rows locked, which are exactly the rows updated: the update
-- finds them by primary key (= ANY, an index lookup per key) and needs no
-- join back to them.
WITH ended AS (
    SELECT c.id, c.pool, c.lease_token FROM keys AS c
    WHERE c.lease_token IS NOT NULL AND c.lease_expires_at <= now()
    ORDER BY c.lease_expires_at
    LIMIT sqlc.arg(max)::int
    FOR UPDATE SKIP LOCKED
), released AS (
    UPDATE keys AS k
    SET lease_token = NULL, blocked_at = NULL, lease_expires_at = NULL, position = random()
    WHERE k.id = ANY (ARRAY(SELECT ended.id FROM ended))
    RETURNING k.id
), history AS (
    INSERT INTO key_events (key_id, pool, event, lease_token)
    SELECT ended.id, ended.pool, 'lease_expired', ended.lease_token FROM ended
)
SELECT count(*) FROM released;

-- name: KeyDeleteExpired :one
-- One batch of the background job: deletes up to max keys whose life has
-- ended, held or free.
WITH expired AS (
    SELECT c.id FROM keys AS c
    WHERE c.expires_at <= now()
    ORDER BY c.expires_at
    LIMIT sqlc.arg(max)::int
    FOR UPDATE SKIP LOCKED
), deleted AS (
    DELETE FROM keys AS k
    -- An array, not a join: see KeyClaim.
    WHERE k.id = ANY (ARRAY(SELECT expired.id FROM expired))
    RETURNING k.id, k.pool, k.lease_token
), history AS (
    INSERT INTO key_events (key_id, pool, event, lease_token)
    SELECT deleted.id, deleted.pool, 'expired', deleted.lease_token FROM deleted
)
SELECT count(*) FROM deleted;

-- name: KeyCountExpiring :many
-- Live keys per pool whose life ends within the given number of seconds: a
-- range on keys_expires_at_idx that reads only those keys.
SELECT k.pool, count(*) AS keys
FROM keys AS k
WHERE k.expires_at > now() AND k.expires_at <= now() + sqlc.arg(within_seconds)::float8 * interval '1 second'
GROUP BY k.pool
ORDER BY k.pool;

-- name: KeyListPage :many
-- One page of a pool's live keys in id order, starting after the given id
-- (the nil UUID for the first page): a range on keys_pool_id_idx that reads
-- the page's rows and stops. Keys whose life has ended are left out, as
-- everywhere; the background job removes them shortly.
SELECT k.* FROM keys AS k
WHERE k.pool = sqlc.arg(pool)::text AND k.id > sqlc.arg(after)::uuid AND k.expires_at > now()
ORDER BY k.id
LIMIT sqlc.arg(max)::int;
