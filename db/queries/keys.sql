-- Queries on keys and key_state. A key's identity and life are in keys; its
-- lease state, which every claim and release rewrites, is in key_state (see
-- migration 00005 for why). Every statement that changes a key appends its
-- history row, and its change to the pool's counts, in the same statement,
-- and every deadline uses the database clock (now()) so that replicas with
-- skewed clocks agree.
--
-- A key whose expires_at has passed counts as gone even before the background
-- job deletes it: every statement on a key filters on it. A key whose
-- expires_at is NULL lives until deleted (its pool's keys stay).
--
-- Statements that wait for row locks take them in one order: key_state rows
-- before keys rows, each in id order (a scan of id = ANY (...) on a primary
-- key visits the ids in order). Statements of the background job take theirs
-- with SKIP LOCKED and never wait. So no two statements wait on each other in
-- a cycle.
--
-- Every statement that returns keys returns the same columns, in the order
-- of KeyGet.
--
-- Seats (migration 00013): a key has keys.seats rows in key_state, one per
-- seat, each claimed, released and expired on its own as a key of one seat
-- is. A statement about a lease acts on its seat's row and answers that
-- row's lease; seats_held, which counts the key's held seats, is computed
-- only where a key is read as a whole (KeyGet, KeyGetByName, KeyListPage)
-- elsewhere from the row at hand for a key of one seat, and as -1 (not
-- known) for a key of several, where it would cost a read of every seat.
--
-- A statement that updates rows it has just locked with SKIP LOCKED finds
-- them again by their physical address (ctid), a TID read with no index,
-- and then by key and seat (key_id = ANY, an index lookup per key, and an
-- EXISTS that pairs each key with its seat) those that the first update
-- missed: none, unless a row that another transaction changed and
-- committed after the statement began (a key claimed and released
-- meanwhile) was locked in that newest version, which the statement's
-- snapshot does not see at its address. An update that finds the version
-- the snapshot sees is taken on to the newest, which the statement holds
-- locked. By key alone, the lease-expiry job freed 100,000 leases four
-- times slower under load.
--
-- A statement on key_state tells a live key by its expires_at in keys,
-- written as a scalar subquery, (SELECT coalesce(k.expires_at, 'infinity')
-- ...) > now() (NULL when the key is gone, so false): the
-- planner runs it as one primary-key lookup per row it looks at, where an
-- EXISTS may become a join that scans keys.
--
-- Access paths are fixed by each statement's shape, not by what the last
-- ANALYZE saw: the service runs generic plans, which the planner picks from
-- the statistics alone. A statement that acts on keys it was given finds
-- their key_state rows by primary key, and its conditions on them leave the
-- planner no other index: it tells a held key by blocked_at IS NOT NULL and
-- a free one by blocked_at IS NULL (key_state_lease_complete makes that the
-- same as lease_token), and where a lease token must match it compares with
-- IS NOT DISTINCT FROM. From lease_token IS [NOT] NULL, or from an = on
-- lease_token that must hold, the planner proves the predicate of a partial
-- index and may walk the whole index instead: a release of 2 keys read
-- 31,281 buffers of key_state_lease_expires_at_idx after an ANALYZE that
-- had seen few held keys. Only the claims and the background job's batches
-- name those predicates, to walk the index they mean.
-- TestQueryPlansUseIndexes holds every statement to its index under five
-- states of the statistics.

-- name: KeyCreate :many
-- Creates count free keys in one statement, each with the seats asked for
-- (0: the pool's policy's, or 1; one more probe of pools_pkey). Nothing is
-- created when count keys of those seats would be more than max_seats
-- seats in all: the caller then finds no row returned.
WITH seats AS (
    SELECT coalesce(nullif(sqlc.arg(seats)::int, 0),
                    (SELECT p.seats FROM pools AS p WHERE p.name = sqlc.arg(pool)::text), 1) AS seats
), created AS (
    INSERT INTO keys (pool, seats, expires_at)
    SELECT sqlc.arg(pool)::text, (SELECT seats.seats FROM seats),
           -- The pool's policy, or KEY_TTL (see migration 00011).
           -- NULL (keys that stay) is 'infinity' until the end, so that one
           -- probe of pools_pkey tells both a key life and no row.
           nullif(coalesce((SELECT CASE WHEN p.keys_stay THEN 'infinity'::timestamptz
                                        ELSE now() + coalesce(p.key_ttl, sqlc.arg(key_ttl_seconds)::float8 * interval '1 second') END
                            FROM pools AS p WHERE p.name = sqlc.arg(pool)::text),
                           now() + sqlc.arg(key_ttl_seconds)::float8 * interval '1 second'), 'infinity')
    FROM generate_series(1, sqlc.arg(count)::int)
    WHERE sqlc.arg(count)::int * (SELECT seats.seats FROM seats) <= sqlc.arg(max_seats)::int
    RETURNING *
), state AS (
    -- One row per seat. The series is in the select list (a ProjectSet):
    -- as a lateral function in FROM it was scanned anew for every key,
    -- which made 10,000 keys take half a second longer.
    INSERT INTO key_state (key_id, seat, pool)
    SELECT created.id, generate_series(0, created.seats - 1), created.pool
    FROM created
    RETURNING *
), history AS (
    INSERT INTO key_events (key_id, pool, event, seats)
    SELECT created.id, created.pool, 'created', nullif(created.seats, 1) FROM created
), totals AS (
    -- Creates the pool's totals row, or locks it: the background job removes
    -- the row of an empty pool only under the same lock, so it never removes
    -- that of a pool that is getting keys.
    INSERT INTO pool_count_totals AS t (pool) VALUES (sqlc.arg(pool)::text)
    ON CONFLICT (pool) DO UPDATE SET pool = t.pool
), counted AS (
    INSERT INTO pool_count_changes (pool, keys, blocked, seats)
    SELECT sqlc.arg(pool)::text, count(*), 0, announce_freed(sqlc.arg(pool)::text, sum(created.seats))
    FROM created HAVING count(*) > 0
)
SELECT created.id, created.pool, created.created_at, created.expires_at, created.last_keep_alive_at, created.labels, created.name, created.secret_hint,
       created.seats, 0::int AS seats_held,
       state.times_assigned, state.lease_token, state.blocked_at, state.lease_expires_at, state.cooling_until
FROM created
JOIN state ON state.key_id = created.id AND state.seat = 0;

-- name: KeyClaim :many
-- Claims up to max free, live keys of the pool under new lease tokens. It
-- walks the partial index of free keys from a random position and wraps
-- around to the start; the second scan asks only for what the first could
-- not find, so it does no work when the first found enough. SKIP LOCKED lets
-- concurrent claims pass each other instead of queueing on the same row.
-- (FOR UPDATE is not allowed on a UNION, hence two CTEs.)
WITH after_start AS (
    SELECT c.ctid, c.key_id, c.seat FROM key_state AS c
    WHERE c.pool = sqlc.arg(pool)::text AND c.lease_token IS NULL AND c.cooling_until IS NULL
      AND c.position >= sqlc.arg(start_position)::float8
      AND (SELECT coalesce(k.expires_at, 'infinity') FROM keys AS k WHERE k.id = c.key_id) > now()
    ORDER BY c.position
    LIMIT sqlc.arg(max)::int
    FOR UPDATE SKIP LOCKED
), before_start AS (
    SELECT c.ctid, c.key_id, c.seat FROM key_state AS c
    WHERE c.pool = sqlc.arg(pool)::text AND c.lease_token IS NULL AND c.cooling_until IS NULL
      AND c.position < sqlc.arg(start_position)::float8
      AND (SELECT coalesce(k.expires_at, 'infinity') FROM keys AS k WHERE k.id = c.key_id) > now()
    ORDER BY c.position
    LIMIT sqlc.arg(max)::int - (SELECT count(*) FROM after_start)
    FOR UPDATE SKIP LOCKED
), locked AS (
    SELECT after_start.ctid, after_start.key_id, after_start.seat FROM after_start
    UNION ALL
    SELECT before_start.ctid, before_start.key_id, before_start.seat FROM before_start
), lease AS (
    -- The statement's own time, not the transaction's: an idempotent claim
    -- runs in a transaction that may first have waited for the idempotency
    -- key's lock, and that wait must not shorten the lease. It ends after
    -- the pool's lease length (or LEASE_TTL), within its longest lease
    -- (least ignores a NULL: no bound): one probe of pools_pkey for the
    -- statement, one row.
    SELECT statement_timestamp() AS starts_at,
           statement_timestamp() + coalesce(
               (SELECT least(coalesce(p.lease_ttl, sqlc.arg(lease_ttl_seconds)::float8 * interval '1 second'), p.max_lease_ttl)
                FROM pools AS p WHERE p.name = sqlc.arg(pool)::text),
               sqlc.arg(lease_ttl_seconds)::float8 * interval '1 second') AS ends_at
), by_address AS (
    UPDATE key_state AS s
    SET lease_token = nextval('lease_token_seq'), blocked_at = lease.starts_at, lease_expires_at = lease.ends_at,
        times_assigned = s.times_assigned + 1
    FROM lease
    -- An array, not a join: the planner cannot know how few rows the CTEs
    -- give, and may otherwise hash-join them against a scan of the table.
    -- The rows locked above, by address (see the top of this file).
    WHERE s.ctid = ANY (ARRAY(SELECT locked.ctid FROM locked))
    RETURNING s.*
), missed AS (
    -- The rows locked in a version that this statement's snapshot does not
    -- see (see the top of this file): none, unless the claim met such a row.
    SELECT locked.key_id, locked.seat FROM locked
    -- Compared one by one only when the counts differ: a one-time test.
    WHERE (SELECT count(*) FROM by_address) < (SELECT count(*) FROM locked)
      AND NOT EXISTS (SELECT 1 FROM by_address AS a WHERE a.key_id = locked.key_id AND a.seat = locked.seat)
), by_key AS (
    -- The rows missed, found by key and seat: an empty array, and no work,
    -- unless there are any.
    UPDATE key_state AS s
    SET lease_token = nextval('lease_token_seq'), blocked_at = lease.starts_at, lease_expires_at = lease.ends_at,
        times_assigned = s.times_assigned + 1
    FROM lease
    WHERE s.key_id = ANY (ARRAY(SELECT missed.key_id FROM missed))
      AND EXISTS (SELECT 1 FROM missed WHERE missed.key_id = s.key_id AND missed.seat = s.seat)
    RETURNING s.*
), claimed AS (
    SELECT * FROM by_address
    UNION ALL
    SELECT * FROM by_key
), unclaimable AS (
    -- Labelled seats leave the label index while held; for keys without
    -- labels the arrays are empty and this reads nothing.
    UPDATE key_labels AS l SET position = NULL
    WHERE l.key_id = ANY (ARRAY(SELECT claimed.key_id FROM claimed WHERE claimed.labelled))
      AND l.seat = ANY (ARRAY(SELECT claimed.seat FROM claimed WHERE claimed.labelled))
      AND EXISTS (SELECT 1 FROM claimed WHERE claimed.key_id = l.key_id AND claimed.seat = l.seat)
), history AS (
    INSERT INTO key_events (key_id, pool, event, lease_token, seat)
    SELECT claimed.key_id, claimed.pool, 'assigned', claimed.lease_token, claimed.seat FROM claimed
), counted AS (
    INSERT INTO pool_count_changes (pool, keys, blocked, seats)
    SELECT sqlc.arg(pool)::text, 0, count(*), 0 FROM claimed HAVING count(*) > 0
)
-- The sealed secret comes with the key's row, which the claim reads anyway.
SELECT k.id, k.pool, k.created_at, k.expires_at, k.last_keep_alive_at, k.labels, k.name, k.secret_hint,
       k.seats, (CASE WHEN k.seats = 1 THEN (claimed.lease_token IS NOT NULL)::int ELSE -1 END)::int AS seats_held,
       claimed.times_assigned, claimed.lease_token, claimed.blocked_at, claimed.lease_expires_at, claimed.cooling_until,
       k.secret_key_id, k.secret_ciphertext
FROM claimed
JOIN keys AS k ON k.id = claimed.key_id
-- Found by primary key, whatever the planner guesses of the batch's size.
WHERE k.id = ANY (ARRAY(SELECT claimed.key_id FROM claimed));

-- name: KeyClaimLabelled :many
-- KeyClaim among the keys that carry every label asked for ("name=value").
-- It walks key_labels_claimable_idx for the first label from a random
-- position and wraps around, as KeyClaim walks key_state_claimable_position_idx:
-- that index holds the claimable keys of each label only. The other labels
-- are checked on each key found (one primary-key lookup per label), so the
-- first label should be the most selective one. Each key_state row is
-- locked with SKIP LOCKED and checked again once locked, so a label row a
-- concurrent statement has not yet updated never claims a held key.
-- key_state is read by primary key only: a free key is told by blocked_at
-- (see the top of this file; from lease_token IS NULL the planner joined
-- the labels to a walk of key_state_claimable_position_idx, or updated
-- through it, on tables never analysed). The other labels are counted
-- with >= (the count is never more than the labels asked for): the planner
-- takes an = for a filter that leaves a few keys, and then read and sorted
-- every claimable key of the label rather than walk them in order.
WITH after_start AS (
    SELECT s.ctid, s.key_id, s.seat, l.position FROM key_labels AS l
    JOIN key_state AS s ON s.key_id = l.key_id AND s.seat = l.seat
    WHERE l.pool = sqlc.arg(pool)::text AND l.label = sqlc.arg(label)::text
      AND l.position IS NOT NULL AND l.position >= sqlc.arg(start_position)::float8
      AND s.blocked_at IS NULL AND s.cooling_until IS NULL
      AND (SELECT count(*) FROM key_labels AS m
           WHERE m.key_id = l.key_id AND m.seat = l.seat AND m.label = ANY (sqlc.arg(other_labels)::text[])) >= cardinality(sqlc.arg(other_labels)::text[])
      AND (SELECT coalesce(k.expires_at, 'infinity') FROM keys AS k WHERE k.id = s.key_id) > now()
    ORDER BY l.position
    LIMIT sqlc.arg(max)::int
    FOR UPDATE OF s SKIP LOCKED
), before_start AS (
    SELECT s.ctid, s.key_id, s.seat, l.position FROM key_labels AS l
    JOIN key_state AS s ON s.key_id = l.key_id AND s.seat = l.seat
    WHERE l.pool = sqlc.arg(pool)::text AND l.label = sqlc.arg(label)::text
      AND l.position IS NOT NULL AND l.position < sqlc.arg(start_position)::float8
      AND s.blocked_at IS NULL AND s.cooling_until IS NULL
      AND (SELECT count(*) FROM key_labels AS m
           WHERE m.key_id = l.key_id AND m.seat = l.seat AND m.label = ANY (sqlc.arg(other_labels)::text[])) >= cardinality(sqlc.arg(other_labels)::text[])
      AND (SELECT coalesce(k.expires_at, 'infinity') FROM keys AS k WHERE k.id = s.key_id) > now()
    ORDER BY l.position
    LIMIT sqlc.arg(max)::int - (SELECT count(*) FROM after_start)
    FOR UPDATE OF s SKIP LOCKED
), locked AS (
    SELECT after_start.ctid, after_start.key_id, after_start.seat FROM after_start
    UNION ALL
    SELECT before_start.ctid, before_start.key_id, before_start.seat FROM before_start
), lease AS (
    -- See KeyClaim.
    SELECT statement_timestamp() AS starts_at,
           statement_timestamp() + coalesce(
               (SELECT least(coalesce(p.lease_ttl, sqlc.arg(lease_ttl_seconds)::float8 * interval '1 second'), p.max_lease_ttl)
                FROM pools AS p WHERE p.name = sqlc.arg(pool)::text),
               sqlc.arg(lease_ttl_seconds)::float8 * interval '1 second') AS ends_at
), by_address AS (
    UPDATE key_state AS s
    SET lease_token = nextval('lease_token_seq'), blocked_at = lease.starts_at, lease_expires_at = lease.ends_at,
        times_assigned = s.times_assigned + 1
    FROM lease
    WHERE s.ctid = ANY (ARRAY(SELECT locked.ctid FROM locked))
      AND s.blocked_at IS NULL AND s.cooling_until IS NULL
    RETURNING s.*
), missed AS (
    -- See KeyClaim.
    SELECT locked.key_id, locked.seat FROM locked
    -- Compared one by one only when the counts differ: a one-time test.
    WHERE (SELECT count(*) FROM by_address) < (SELECT count(*) FROM locked)
      AND NOT EXISTS (SELECT 1 FROM by_address AS a WHERE a.key_id = locked.key_id AND a.seat = locked.seat)
), by_key AS (
    UPDATE key_state AS s
    SET lease_token = nextval('lease_token_seq'), blocked_at = lease.starts_at, lease_expires_at = lease.ends_at,
        times_assigned = s.times_assigned + 1
    FROM lease
    WHERE s.key_id = ANY (ARRAY(SELECT missed.key_id FROM missed))
      AND EXISTS (SELECT 1 FROM missed WHERE missed.key_id = s.key_id AND missed.seat = s.seat)
      AND s.blocked_at IS NULL AND s.cooling_until IS NULL
    RETURNING s.*
), claimed AS (
    SELECT * FROM by_address
    UNION ALL
    SELECT * FROM by_key
), unclaimable AS (
    UPDATE key_labels AS l SET position = NULL
    WHERE l.key_id = ANY (ARRAY(SELECT claimed.key_id FROM claimed))
      AND l.seat = ANY (ARRAY(SELECT claimed.seat FROM claimed))
      AND EXISTS (SELECT 1 FROM claimed WHERE claimed.key_id = l.key_id AND claimed.seat = l.seat)
), history AS (
    INSERT INTO key_events (key_id, pool, event, lease_token, seat)
    SELECT claimed.key_id, claimed.pool, 'assigned', claimed.lease_token, claimed.seat FROM claimed
), counted AS (
    INSERT INTO pool_count_changes (pool, keys, blocked, seats)
    SELECT sqlc.arg(pool)::text, 0, count(*), 0 FROM claimed HAVING count(*) > 0
)
SELECT k.id, k.pool, k.created_at, k.expires_at, k.last_keep_alive_at, k.labels, k.name, k.secret_hint,
       k.seats, (CASE WHEN k.seats = 1 THEN (claimed.lease_token IS NOT NULL)::int ELSE -1 END)::int AS seats_held,
       claimed.times_assigned, claimed.lease_token, claimed.blocked_at, claimed.lease_expires_at, claimed.cooling_until,
       k.secret_key_id, k.secret_ciphertext
FROM claimed
JOIN keys AS k ON k.id = claimed.key_id
WHERE k.id = ANY (ARRAY(SELECT claimed.key_id FROM claimed));

-- name: KeyGet :one
SELECT k.id, k.pool, k.created_at, k.expires_at, k.last_keep_alive_at, k.labels, k.name, k.secret_hint,
       k.seats, s.seats_held,
       coalesce(s.times_assigned, 0)::bigint AS times_assigned,
       one.lease_token, one.blocked_at, one.lease_expires_at, one.cooling_until
FROM keys AS k
-- The key's seats, one range of key_state_pkey.
LEFT JOIN LATERAL (
    SELECT count(c.blocked_at)::int AS seats_held, sum(c.times_assigned)::bigint AS times_assigned
    FROM key_state AS c
    WHERE c.key_id = k.id
) AS s ON true
-- A key of one seat shows that seat's lease; a key of several has a lease
-- per seat and shows none here (each is read with its token: KeyGetLease).
LEFT JOIN LATERAL (
    SELECT o.lease_token, o.blocked_at, o.lease_expires_at, o.cooling_until FROM key_state AS o
    WHERE o.key_id = k.id AND o.seat = 0 AND k.seats = 1
    -- One row; the limit also keeps the planner from making it a join.
    LIMIT 1
) AS one ON true
WHERE k.id = sqlc.arg(id) AND (k.expires_at IS NULL OR k.expires_at > now());

-- name: KeyGetSecret :one
-- The key's sealed secret, with whether the lease named is the key's
-- current lease and still running: the caller opens the secret only then.
SELECT EXISTS (
           -- The key's seats, one range of key_state_pkey.
           SELECT 1 FROM key_state AS s
           WHERE s.key_id = k.id AND s.lease_token IS NOT DISTINCT FROM sqlc.arg(lease_token)::bigint
             AND s.lease_expires_at > now()
       )::boolean AS lease_current,
       k.secret_key_id, k.secret_ciphertext
FROM keys AS k
WHERE k.id = sqlc.arg(id) AND (k.expires_at IS NULL OR k.expires_at > now());

-- name: KeyGetLease :one
-- The key as the lease named sees it: the seat whose current lease, or
-- most recently ended one, it is. No row when neither is (a later lease has
-- taken its seat since, or it was never a lease of this key), or when the
-- key is gone. The key's seats are one range of key_state_pkey.
SELECT k.id, k.pool, k.created_at, k.expires_at, k.last_keep_alive_at, k.labels, k.name, k.secret_hint,
       k.seats, (CASE WHEN k.seats = 1 THEN (s.lease_token IS NOT NULL)::int ELSE -1 END)::int AS seats_held,
       s.times_assigned, s.lease_token, s.blocked_at, s.lease_expires_at, s.cooling_until
FROM keys AS k
JOIN key_state AS s ON s.key_id = k.id
WHERE k.id = sqlc.arg(id) AND (k.expires_at IS NULL OR k.expires_at > now())
  AND (s.lease_token IS NOT DISTINCT FROM sqlc.arg(lease_token)::bigint
       OR s.last_lease_token IS NOT DISTINCT FROM sqlc.arg(lease_token)::bigint);

-- name: KeyPoolHasFree :one
-- Whether a claim on the pool would find a key right now; never claims one.
-- Written as the claim's own index walk: as an EXISTS, the planner may prefer
-- a table scan, which is quick only while free keys are plentiful.
SELECT ((
    SELECT c.position FROM key_state AS c
    WHERE c.pool = sqlc.arg(pool)::text AND c.lease_token IS NULL AND c.cooling_until IS NULL
      AND (SELECT coalesce(k.expires_at, 'infinity') FROM keys AS k WHERE k.id = c.key_id) > now()
    ORDER BY c.position
    LIMIT 1
) IS NOT NULL)::boolean AS has_free;

-- name: KeyKeepAliveMany :many
-- Keeps each key named alive. A request without a lease token (0) resets
-- the key's life only, and never touches its lease: the owner of a pool
-- keeps its keys alive without keeping crashed holders' leases alive. A
-- request with a token resets the key's life and extends that lease, if it
-- is the key's current lease and still running; nothing revives a lease past
-- its deadline, even before the background job has ended it. A request whose
-- token does not qualify changes nothing. Rows are found by primary key with
-- = ANY, so the plan is an index lookup whatever the planner guesses of the
-- batch's size.
WITH request AS (
    -- Two unnests in one select list advance together, pairing ids and tokens.
    SELECT unnest(sqlc.arg(ids)::uuid[]) AS id, unnest(sqlc.arg(lease_tokens)::bigint[]) AS lease_token
), extended AS (
    UPDATE key_state AS s
    -- The pool's lease length (or LEASE_TTL) from now, but never past its
    -- longest lease from the claim; least ignores a NULL (no bound).
    SET lease_expires_at = coalesce(
            (SELECT least(now() + coalesce(p.lease_ttl, sqlc.arg(lease_ttl_seconds)::float8 * interval '1 second'),
                          s.blocked_at + p.max_lease_ttl)
             FROM pools AS p WHERE p.name = s.pool),
            now() + sqlc.arg(lease_ttl_seconds)::float8 * interval '1 second')
    -- Only a held key has a lease_expires_at, and the token is compared as
    -- the top of this file says: from lease_token IS NOT NULL, or an = on
    -- it, the planner walked key_state_lease_expires_at_idx from now() on,
    -- every running lease, even for an empty array.
    WHERE s.key_id = ANY (ARRAY(SELECT r.id FROM request AS r WHERE r.lease_token <> 0))
      AND s.lease_expires_at > now()
      AND EXISTS (SELECT 1 FROM request AS r WHERE r.id = s.key_id AND r.lease_token IS NOT DISTINCT FROM s.lease_token)
      AND (SELECT coalesce(k.expires_at, 'infinity') FROM keys AS k WHERE k.id = s.key_id) > now()
    RETURNING s.*
), kept AS (
    -- Runs after extended: it reads its rows, so the key_state rows are
    -- locked before the keys rows.
    UPDATE keys AS k
    -- NULL (keys that stay) is 'infinity' until the end, so that one probe
    -- of pools_pkey tells both a key life and no row.
    SET expires_at = nullif(coalesce(
            (SELECT CASE WHEN p.keys_stay THEN 'infinity'::timestamptz
                         ELSE now() + coalesce(p.key_ttl, sqlc.arg(key_ttl_seconds)::float8 * interval '1 second') END
             FROM pools AS p WHERE p.name = k.pool),
            now() + sqlc.arg(key_ttl_seconds)::float8 * interval '1 second'), 'infinity'),
        last_keep_alive_at = now()
    WHERE k.id = ANY (ARRAY(
        SELECT r.id FROM request AS r WHERE r.lease_token = 0
        UNION ALL
        SELECT extended.key_id FROM extended
    ))
      AND (k.expires_at IS NULL OR k.expires_at > now())
      -- A request without a token does nothing in a pool that requires one.
      AND (k.id = ANY (ARRAY(SELECT extended.key_id FROM extended))
           OR NOT coalesce((SELECT p.require_lease_token FROM pools AS p WHERE p.name = k.pool), false))
    -- Whether a request without a token kept the key alive: not in a pool
    -- that requires a token, where only the leases extended did. Asked of
    -- the pool only for a key that such a request named: a keep-alive with
    -- a token, the usual one, makes no second probe.
    RETURNING k.*,
        k.id = ANY (ARRAY(SELECT r.id FROM request AS r WHERE r.lease_token = 0))
        AND NOT coalesce((SELECT p.require_lease_token FROM pools AS p WHERE p.name = k.pool), false) AS tokenless_kept
), history AS (
    -- One row per key: with the token of the lease it extended, or without
    -- one when only the key's life was reset.
    -- (A key of several seats may have several leases extended at once.)
    INSERT INTO key_events (key_id, pool, event, lease_token, seat)
    SELECT kept.id, kept.pool, 'kept_alive', extended.lease_token, extended.seat
    FROM kept
    LEFT JOIN extended ON extended.key_id = kept.id
)
-- A row per lease extended, and one per key kept alive without a token,
-- with seat 0's lease (the caller shows it for a key of one seat only).
-- tokenless_kept tells the caller whether the row also answers a request
-- of the key without a token (false when none named the key).
SELECT kept.id, kept.pool, kept.created_at, kept.expires_at, kept.last_keep_alive_at, kept.labels, kept.name, kept.secret_hint,
       kept.seats, (CASE WHEN kept.seats = 1 THEN (s.lease_token IS NOT NULL)::int ELSE -1 END)::int AS seats_held,
       s.times_assigned, s.lease_token, s.blocked_at,
       coalesce(extended.lease_expires_at, s.lease_expires_at) AS lease_expires_at, s.cooling_until,
       extended.lease_token AS extended_lease_token, kept.tokenless_kept::boolean AS tokenless_kept
FROM kept
LEFT JOIN extended ON extended.key_id = kept.id
JOIN key_state AS s ON s.key_id = kept.id AND s.seat = coalesce(extended.seat, 0)
-- Found by primary key, whatever the planner guesses of the batch's size.
WHERE s.key_id = ANY (ARRAY(SELECT kept.id FROM kept));

-- name: KeyReleaseMany :many
-- Ends the current lease of each key named (or, when the request's lease
-- token is not 0, only the lease it names) and gives the seat a new random
-- position. A request without a token acts only on a key of one seat: a
-- key of several has a lease per seat, and the caller must name one. A request with a cooldown (seconds, 0 for none) leaves the key
-- out of every claimable index until the cooldown ends (KeyEndCooldowns),
-- and wakes nobody; it counts as free (not under a lease), as history says.
-- A key that is gone, free, or held under another lease matches no row; the
-- caller tells those apart afterwards. ended_lease_seconds is how long the
-- ended lease lasted, by the database clock, for the metrics.
WITH request AS (
    -- Unnests in one select list advance together, pairing the arrays.
    SELECT unnest(sqlc.arg(ids)::uuid[]) AS id, unnest(sqlc.arg(lease_tokens)::bigint[]) AS lease_token,
           unnest(sqlc.arg(cooldown_seconds)::float8[]) AS cooldown_seconds
), current_lease AS (
    SELECT c.key_id, c.seat, c.lease_token, c.blocked_at,
           (SELECT max(r.cooldown_seconds) FROM request AS r
            WHERE r.id = c.key_id AND (r.lease_token = c.lease_token
                 OR r.lease_token = 0 AND NOT coalesce((SELECT p.require_lease_token FROM pools AS p WHERE p.name = c.pool), false)
                    AND (SELECT k.seats FROM keys AS k WHERE k.id = c.key_id) = 1)) AS cooldown_seconds
    FROM key_state AS c
    -- Held is told by blocked_at (see the top of this file): with
    -- lease_token IS NOT NULL the planner walked all of
    -- key_state_lease_expires_at_idx for a few keys.
    WHERE c.key_id = ANY (sqlc.arg(ids)::uuid[]) AND c.blocked_at IS NOT NULL
      AND EXISTS (
          SELECT 1 FROM request AS r
          WHERE r.id = c.key_id AND (r.lease_token = c.lease_token
                 OR r.lease_token = 0 AND NOT coalesce((SELECT p.require_lease_token FROM pools AS p WHERE p.name = c.pool), false)
                    AND (SELECT k.seats FROM keys AS k WHERE k.id = c.key_id) = 1)
      )
      AND (SELECT coalesce(k.expires_at, 'infinity') FROM keys AS k WHERE k.id = c.key_id) > now()
    ORDER BY c.key_id, c.seat
    FOR UPDATE
), released AS (
    UPDATE key_state AS s
    SET lease_token = NULL, blocked_at = NULL, lease_expires_at = NULL, position = random(),
        last_lease_token = s.lease_token,
        cooling_until = CASE WHEN current_lease.cooldown_seconds > 0
                             THEN now() + current_lease.cooldown_seconds * interval '1 second' END
    FROM current_lease
    WHERE s.key_id = current_lease.key_id AND s.seat = current_lease.seat
    RETURNING s.*, current_lease.lease_token AS ended_lease_token,
        extract(epoch FROM now() - current_lease.blocked_at)::float8 AS ended_lease_seconds
), claimable AS (
    -- Labelled seats freed without a cooldown are claimable by label again.
    UPDATE key_labels AS l SET position = random()
    WHERE l.key_id = ANY (ARRAY(SELECT released.key_id FROM released WHERE released.labelled AND released.cooling_until IS NULL))
      AND l.seat = ANY (ARRAY(SELECT released.seat FROM released WHERE released.labelled AND released.cooling_until IS NULL))
      AND EXISTS (SELECT 1 FROM released
                  WHERE released.key_id = l.key_id AND released.seat = l.seat AND released.cooling_until IS NULL)
), history AS (
    INSERT INTO key_events (key_id, pool, event, lease_token, cooldown, seat)
    SELECT released.key_id, released.pool, 'released', released.ended_lease_token, released.cooling_until - now(), released.seat
    FROM released
), counted AS (
    -- Pools in order: see KeyReleaseEndedLeases.
    INSERT INTO pool_count_changes (pool, keys, blocked, seats)
    SELECT released.pool, 0,
           -announce_freed(released.pool, count(*) FILTER (WHERE released.cooling_until IS NULL))
           - count(*) FILTER (WHERE released.cooling_until IS NOT NULL), 0
    FROM released
    GROUP BY released.pool ORDER BY released.pool
)
SELECT k.id, k.pool, k.created_at, k.expires_at, k.last_keep_alive_at, k.labels, k.name, k.secret_hint,
       k.seats, (CASE WHEN k.seats = 1 THEN (released.lease_token IS NOT NULL)::int ELSE -1 END)::int AS seats_held,
       released.times_assigned, released.lease_token, released.blocked_at, released.lease_expires_at, released.cooling_until,
       released.ended_lease_token, released.ended_lease_seconds
FROM released
JOIN keys AS k ON k.id = released.key_id
-- Found by primary key, whatever the planner guesses of the batch's size.
WHERE k.id = ANY (ARRAY(SELECT released.key_id FROM released));

-- name: KeyDelete :one
-- Deletes the key's rows, its labels and, with its keys row, its sealed
-- secret: no copy remains (history and claim records never hold one).
WITH state AS (
    DELETE FROM key_state AS s
    WHERE s.key_id = sqlc.arg(id)
      AND (SELECT coalesce(k.expires_at, 'infinity') FROM keys AS k WHERE k.id = s.key_id) > now()
    RETURNING s.*
), deleted AS (
    -- Runs after state: it reads its row, so the key_state row is locked
    -- before the keys row.
    DELETE FROM keys AS k
    WHERE k.id = ANY (ARRAY(SELECT state.key_id FROM state))
    RETURNING k.*
), labels AS (
    DELETE FROM key_labels AS l
    WHERE l.key_id = ANY (ARRAY(SELECT state.key_id FROM state WHERE state.labelled))
), history AS (
    -- One event for the key, and one for each other seat that was held,
    -- so that every lease it ended has an end with its token.
    -- The key's end (seat 0's) carries its seats: the keys row as the
    -- statement's snapshot has it, before its deletion.
    INSERT INTO key_events (key_id, pool, event, lease_token, seat, seats)
    SELECT state.key_id, state.pool, 'deleted', state.lease_token, CASE WHEN state.lease_token IS NOT NULL THEN state.seat END,
           CASE WHEN state.seat = 0 THEN (SELECT nullif(k.seats, 1) FROM keys AS k WHERE k.id = state.key_id) END
    FROM state WHERE state.seat = 0 OR state.lease_token IS NOT NULL
), counted AS (
    INSERT INTO pool_count_changes (pool, keys, blocked, seats)
    SELECT state.pool, -1, -count(state.lease_token), -count(*) FROM state GROUP BY state.pool
)
SELECT deleted.id, deleted.pool, deleted.created_at, deleted.expires_at, deleted.last_keep_alive_at, deleted.labels, deleted.name, deleted.secret_hint,
       deleted.seats, (SELECT count(held.lease_token) FROM state AS held)::int AS seats_held,
       (SELECT coalesce(sum(all_seats.times_assigned), 0) FROM state AS all_seats)::bigint AS times_assigned,
       -- A key of one seat shows the lease it had (see KeyGet).
       one.lease_token, one.blocked_at, one.lease_expires_at, one.cooling_until
FROM deleted
LEFT JOIN state AS one ON one.key_id = deleted.id AND one.seat = 0 AND deleted.seats = 1;

-- name: KeyReleaseEndedLeases :many
-- One batch of the background job: frees up to max keys whose lease has
-- ended, oldest deadline first, from the deadline since on (NULL: from the
-- start). SKIP LOCKED leaves rows that a request or another replica is
-- working on to the next pass. The history rows come from the rows locked,
-- which are exactly the rows updated (by their address, or by key and seat
-- where the address missed: see the top of this file). The
-- changes to the counts are written pool by pool in pool order. Returns
-- the database time it looked at (scanned_until) and, per pool, how many
-- it freed and how long each of their leases lasted (claim to
-- deadline), for the metrics: one row with a NULL pool when it freed none.
--
-- Why since: every claim adds an entry to key_state_lease_expires_at_idx
-- and its release makes that entry dead. While a snapshot is held nothing
-- removes dead entries, and those whose deadline has passed pile up at the
-- start of the index: a scan from the start walked every one of them on
-- every pass (20,368 buffers for a batch that found nothing, after 10,000
-- cycles). Starting just below the previous pass's time skips them.
WITH ended AS (
    SELECT c.ctid, c.key_id, c.seat, c.pool, c.lease_token, c.blocked_at, c.lease_expires_at FROM key_state AS c
    WHERE c.lease_token IS NOT NULL AND c.lease_expires_at <= now()
      AND c.lease_expires_at >= coalesce(sqlc.narg(since)::timestamptz, '-infinity')
    ORDER BY c.lease_expires_at
    LIMIT sqlc.arg(max)::int
    FOR UPDATE SKIP LOCKED
), by_address AS (
    UPDATE key_state AS s
    SET lease_token = NULL, blocked_at = NULL, lease_expires_at = NULL, position = random(),
        last_lease_token = s.lease_token
    -- The rows locked above, by address, then by key and seat those that
    -- this missed (see the top of this file).
    WHERE s.ctid = ANY (ARRAY(SELECT ended.ctid FROM ended))
    RETURNING s.key_id, s.seat, s.pool, s.labelled
), missed AS (
    SELECT ended.key_id, ended.seat FROM ended
    -- Compared one by one only when the counts differ: a one-time test.
    WHERE (SELECT count(*) FROM by_address) < (SELECT count(*) FROM ended)
      AND NOT EXISTS (SELECT 1 FROM by_address AS a WHERE a.key_id = ended.key_id AND a.seat = ended.seat)
), by_key AS (
    UPDATE key_state AS s
    SET lease_token = NULL, blocked_at = NULL, lease_expires_at = NULL, position = random(),
        last_lease_token = s.lease_token
    WHERE s.key_id = ANY (ARRAY(SELECT missed.key_id FROM missed))
      AND EXISTS (SELECT 1 FROM missed WHERE missed.key_id = s.key_id AND missed.seat = s.seat)
    RETURNING s.key_id, s.seat, s.pool, s.labelled
), released AS (
    SELECT * FROM by_address
    UNION ALL
    SELECT * FROM by_key
), claimable AS (
    UPDATE key_labels AS l SET position = random()
    WHERE l.key_id = ANY (ARRAY(SELECT released.key_id FROM released WHERE released.labelled))
      AND l.seat = ANY (ARRAY(SELECT released.seat FROM released WHERE released.labelled))
      AND EXISTS (SELECT 1 FROM released WHERE released.key_id = l.key_id AND released.seat = l.seat)
), history AS (
    INSERT INTO key_events (key_id, pool, event, lease_token, seat)
    SELECT ended.key_id, ended.pool, 'lease_expired', ended.lease_token, ended.seat FROM ended
), counted AS (
    INSERT INTO pool_count_changes (pool, keys, blocked, seats)
    SELECT released.pool, 0, -announce_freed(released.pool, count(*)), 0 FROM released
    GROUP BY released.pool ORDER BY released.pool
), per_pool AS (
    SELECT ended.pool, count(*) AS released,
           array_agg(extract(epoch FROM ended.lease_expires_at - ended.blocked_at)::float8) AS lease_seconds
    FROM ended
    GROUP BY ended.pool
)
SELECT now()::timestamptz AS scanned_until, per_pool.pool, coalesce(per_pool.released, 0)::int AS released,
       per_pool.lease_seconds::float8[] AS lease_seconds
FROM (SELECT 1) AS one
LEFT JOIN per_pool ON true;

-- name: KeyDeleteExpired :one
-- One batch of the background job: deletes up to max keys whose life has
-- ended, held or free. Both rows of a key are locked with SKIP LOCKED, so
-- the job never waits for a request: a key whose lease state a request is
-- changing is left to the next pass.
WITH expired AS (
    SELECT c.id FROM keys AS c
    WHERE c.expires_at <= now()
    ORDER BY c.expires_at
    LIMIT sqlc.arg(max)::int
    FOR UPDATE SKIP LOCKED
), expired_state AS (
    SELECT s.key_id FROM key_state AS s
    -- An array, not a join: see KeyClaim.
    WHERE s.key_id = ANY (ARRAY(SELECT expired.id FROM expired))
    FOR UPDATE SKIP LOCKED
), complete AS (
    -- Keys all of whose seats are locked: a key with a seat that a request
    -- holds locked is left whole to the next pass.
    SELECT expired_state.key_id FROM expired_state
    GROUP BY expired_state.key_id
    HAVING count(*) = (SELECT k.seats FROM keys AS k WHERE k.id = expired_state.key_id)
), state AS (
    DELETE FROM key_state AS s
    WHERE s.key_id = ANY (ARRAY(SELECT complete.key_id FROM complete))
    RETURNING s.key_id, s.seat, s.pool, s.lease_token, s.cooling_until, s.labelled
), deleted AS (
    DELETE FROM keys AS k
    WHERE k.id = ANY (ARRAY(SELECT complete.key_id FROM complete))
), labels AS (
    DELETE FROM key_labels AS l
    WHERE l.key_id = ANY (ARRAY(SELECT state.key_id FROM state WHERE state.labelled))
), history AS (
    -- As KeyDelete: one event for the key, one for each other seat held.
    -- The key's end (seat 0's) carries its seats: the keys row as the
    -- statement's snapshot has it, before its deletion.
    INSERT INTO key_events (key_id, pool, event, lease_token, seat, seats)
    SELECT state.key_id, state.pool, 'expired', state.lease_token, CASE WHEN state.lease_token IS NOT NULL THEN state.seat END,
           CASE WHEN state.seat = 0 THEN (SELECT nullif(k.seats, 1) FROM keys AS k WHERE k.id = state.key_id) END
    FROM state WHERE state.seat = 0 OR state.lease_token IS NOT NULL
), counted AS (
    INSERT INTO pool_count_changes (pool, keys, blocked, seats)
    SELECT state.pool, -count(*) FILTER (WHERE state.seat = 0), -count(state.lease_token), -count(*) FROM state
    GROUP BY state.pool ORDER BY state.pool
)
SELECT count(*) FILTER (WHERE state.seat = 0) FROM state;

-- name: KeyCountExpiring :many
-- Live keys per pool whose life ends within the given number of seconds,
-- among the first max of them in expiry order, and on the pool of the key
-- after those (more) whether there are others: a walk of
-- keys_expires_at_idx that stops after max + 1 keys, however many are about
-- to expire (all of them, in a pool of a short key life that nobody keeps
-- alive). The window numbers the keys in the index's order, so it sorts
-- nothing.
SELECT e.pool, count(*) FILTER (WHERE e.n <= sqlc.arg(max)::int) AS keys, bool_or(e.n > sqlc.arg(max)::int)::bool AS more
FROM (
    SELECT k.pool, row_number() OVER (ORDER BY k.expires_at) AS n
    FROM keys AS k
    WHERE k.expires_at > now() AND k.expires_at <= now() + sqlc.arg(within_seconds)::float8 * interval '1 second'
    ORDER BY k.expires_at
    LIMIT sqlc.arg(max)::int + 1
) AS e
GROUP BY e.pool
ORDER BY e.pool;

-- name: KeyListPage :many
-- One page of a pool's live keys in id order, starting after the given id
-- (the nil UUID for the first page): a range on keys_pool_id_idx that reads
-- the page's rows and stops. Keys whose life has ended are left out, as
-- everywhere; the background job removes them shortly. The page is planned
-- on its own (MATERIALIZED): folded into the query with its seats, the
-- planner sorted a bitmap scan of the pool's keys instead of walking them.
--
-- Each key's key_state rows are searched once: a key of one seat has one,
-- seat 0, which gives its lease, whether it is held and its assignments; a
-- key of several seats, whose lease is shown per seat only, has its seats
-- counted. Each lateral is gated on the key's seats (a one-time filter:
-- the other key_state_pkey search is not made). Searched twice for every
-- key, as KeyGet does, key_state cost 130 of a first page's 155 buffers at
-- 10,000 keys and 171 of 198 at 1,000,000: a page of n keys now costs a
-- descent of keys_pool_id_idx, the n keys' rows, and per key one descent
-- of key_state_pkey and its row.
WITH page AS MATERIALIZED (
    SELECT k.* FROM keys AS k
    WHERE k.pool = sqlc.arg(pool)::text AND k.id > sqlc.arg(after)::uuid AND (k.expires_at IS NULL OR k.expires_at > now())
    -- The index's own order (pool is fixed): the planner then walks
    -- keys_pool_id_idx and stops after the page, rather than sorting.
    ORDER BY k.pool, k.id
    LIMIT sqlc.arg(max)::int
)
SELECT page.id, page.pool, page.created_at, page.expires_at, page.last_keep_alive_at, page.labels, page.name, page.secret_hint,
       page.seats,
       -- As KeyGet counts them: a key of one seat has the one row.
       coalesce(many.seats_held, (one.blocked_at IS NOT NULL)::int)::int AS seats_held,
       coalesce(many.times_assigned, one.times_assigned, 0)::bigint AS times_assigned,
       one.lease_token, one.blocked_at, one.lease_expires_at, one.cooling_until
FROM page
-- Laterals that the planner cannot turn into joins (an aggregate, a
-- limit), so that each is a lookup per key of the page: as a join, the
-- planner hashed a scan of all of key_state. A key of several seats: its
-- seats counted (no row for a key of one seat: grouped).
LEFT JOIN LATERAL (
    SELECT count(c.blocked_at)::int AS seats_held, sum(c.times_assigned)::bigint AS times_assigned
    FROM key_state AS c
    WHERE c.key_id = page.id AND page.seats > 1
    GROUP BY c.key_id
) AS many ON true
-- A key of one seat: that seat's row, its lease.
LEFT JOIN LATERAL (
    SELECT o.lease_token, o.blocked_at, o.lease_expires_at, o.cooling_until, o.times_assigned FROM key_state AS o
    WHERE o.key_id = page.id AND o.seat = 0 AND page.seats = 1
    LIMIT 1
) AS one ON true
ORDER BY page.id;

-- name: KeyLockPoolSecrets :exec
-- Orders the statements that create keys with secrets in one pool, until
-- the end of the transaction, so that each one's duplicate check (run in a
-- later statement, with a snapshot taken after this lock) sees the secrets
-- the one before it committed. Needed beside keys_pool_secret_digest_idx
-- because two replicas may seal under different encryption keys during a
-- rotation, and then store different digests of one secret. A
-- transaction-scoped advisory lock on a hash of the pool: a collision only
-- makes two imports wait on each other for a moment; claims never take it.
SELECT pg_advisory_xact_lock(hashtextextended('key secrets ' || sqlc.arg(pool)::text, 11));

-- name: KeyCreateWithSecrets :many
-- Creates one free key per id given, with its labels (a JSON object as
-- text, '' for none; label_key_ids and label_texts list the labels as
-- "name=value" rows), its name and its secret's hint ('' for none) and its
-- sealed secret (NULL for none). Its life comes from the pool's policy, as
-- in KeyCreate. The ids are
-- chosen by the caller, which seals each secret bound to its row's id. No
-- key is created when any row of the pool already has one of all_digests,
-- the digests of the secrets under every configured encryption key: the
-- caller then finds no row returned. Two such statements that race on the
-- same secret under the current key meet on keys_pool_secret_digest_idx.
WITH input AS (
    -- Unnests in one select list advance together, pairing the arrays.
    SELECT unnest(sqlc.arg(ids)::uuid[]) AS id, unnest(sqlc.arg(labels)::text[]) AS labels,
           unnest(sqlc.arg(ciphertexts)::bytea[]) AS ciphertext, unnest(sqlc.arg(digests)::bytea[]) AS digest,
           unnest(sqlc.arg(names)::text[]) AS name, unnest(sqlc.arg(hints)::text[]) AS hint,
           unnest(sqlc.arg(seats)::int[]) AS seats
), created AS (
    INSERT INTO keys (id, pool, seats, expires_at, labels, secret_key_id, secret_ciphertext, secret_digest, name, secret_hint)
    SELECT input.id, sqlc.arg(pool)::text, input.seats,
           -- NULL (keys that stay) is 'infinity' until the end, so that one
           -- probe of pools_pkey tells both a key life and no row.
           nullif(coalesce((SELECT CASE WHEN p.keys_stay THEN 'infinity'::timestamptz
                                        ELSE now() + coalesce(p.key_ttl, sqlc.arg(key_ttl_seconds)::float8 * interval '1 second') END
                            FROM pools AS p WHERE p.name = sqlc.arg(pool)::text),
                           now() + sqlc.arg(key_ttl_seconds)::float8 * interval '1 second'), 'infinity'),
           nullif(input.labels, '')::jsonb,
           CASE WHEN input.ciphertext IS NOT NULL THEN sqlc.arg(secret_key_id)::text END,
           input.ciphertext, input.digest, nullif(input.name, ''), nullif(input.hint, '')
    FROM input
    WHERE NOT EXISTS (
        SELECT 1 FROM keys AS d
        WHERE d.pool = sqlc.arg(pool)::text AND d.secret_digest = ANY (sqlc.arg(all_digests)::bytea[])
    )
    RETURNING *
), state AS (
    -- One row per seat (the series in the select list: see KeyCreate).
    INSERT INTO key_state (key_id, seat, pool, labelled)
    SELECT created.id, generate_series(0, created.seats - 1), created.pool, created.labels IS NOT NULL
    FROM created
    RETURNING *
), labelled AS (
    -- Each label on each seat.
    INSERT INTO key_labels (key_id, seat, pool, label)
    SELECT state.key_id, state.seat, sqlc.arg(pool)::text, l.label
    FROM (SELECT unnest(sqlc.arg(label_key_ids)::uuid[]) AS key_id, unnest(sqlc.arg(label_texts)::text[]) AS label) AS l
    JOIN state ON state.key_id = l.key_id
), history AS (
    INSERT INTO key_events (key_id, pool, event, seats)
    SELECT created.id, created.pool, 'created', nullif(created.seats, 1) FROM created
), totals AS (
    -- See KeyCreate.
    INSERT INTO pool_count_totals AS t (pool) VALUES (sqlc.arg(pool)::text)
    ON CONFLICT (pool) DO UPDATE SET pool = t.pool
), counted AS (
    INSERT INTO pool_count_changes (pool, keys, blocked, seats)
    SELECT sqlc.arg(pool)::text, count(*), 0, announce_freed(sqlc.arg(pool)::text, sum(created.seats))
    FROM created HAVING count(*) > 0
)
SELECT created.id, created.pool, created.created_at, created.expires_at, created.last_keep_alive_at, created.labels, created.name, created.secret_hint,
       created.seats, 0::int AS seats_held,
       state.times_assigned, state.lease_token, state.blocked_at, state.lease_expires_at, state.cooling_until
FROM created
JOIN state ON state.key_id = created.id AND state.seat = 0;

-- name: KeyEndCooldowns :one
-- One batch of the background job: ends up to max cooldowns that are over,
-- oldest first, through key_state_cooling_until_idx. The keys become
-- claimable (and, when labelled, claimable by label) and wake the clients
-- that wait for a key of their pool; the counts do not change (a cooling
-- key already counts as free). SKIP LOCKED leaves rows that a request is
-- deleting to the next pass.
WITH ended AS (
    SELECT c.ctid, c.key_id, c.seat FROM key_state AS c
    WHERE c.cooling_until IS NOT NULL AND c.cooling_until <= now()
    ORDER BY c.cooling_until
    LIMIT sqlc.arg(max)::int
    FOR UPDATE SKIP LOCKED
), by_address AS (
    UPDATE key_state AS s
    SET cooling_until = NULL, position = random()
    -- The rows locked above, by address, then by key and seat those that
    -- this missed (see the top of this file).
    WHERE s.ctid = ANY (ARRAY(SELECT ended.ctid FROM ended))
    RETURNING s.key_id, s.seat, s.pool, s.labelled
), missed AS (
    SELECT ended.key_id, ended.seat FROM ended
    -- Compared one by one only when the counts differ: a one-time test.
    WHERE (SELECT count(*) FROM by_address) < (SELECT count(*) FROM ended)
      AND NOT EXISTS (SELECT 1 FROM by_address AS a WHERE a.key_id = ended.key_id AND a.seat = ended.seat)
), by_key AS (
    UPDATE key_state AS s
    SET cooling_until = NULL, position = random()
    WHERE s.key_id = ANY (ARRAY(SELECT missed.key_id FROM missed))
      AND EXISTS (SELECT 1 FROM missed WHERE missed.key_id = s.key_id AND missed.seat = s.seat)
    RETURNING s.key_id, s.seat, s.pool, s.labelled
), cooled AS (
    SELECT * FROM by_address
    UNION ALL
    SELECT * FROM by_key
), claimable AS (
    UPDATE key_labels AS l SET position = random()
    WHERE l.key_id = ANY (ARRAY(SELECT cooled.key_id FROM cooled WHERE cooled.labelled))
      AND l.seat = ANY (ARRAY(SELECT cooled.seat FROM cooled WHERE cooled.labelled))
      AND EXISTS (SELECT 1 FROM cooled WHERE cooled.key_id = l.key_id AND cooled.seat = l.seat)
), announced AS (
    SELECT announce_freed(cooled.pool, count(*)) AS freed FROM cooled
    GROUP BY cooled.pool ORDER BY cooled.pool
)
SELECT coalesce(sum(announced.freed), 0)::bigint AS cooled FROM announced;

-- name: KeySecretsSealedUnder :many
-- One batch of `secrets rotate`: up to max keys whose secret is sealed
-- under the given encryption key, through
-- keys_secret_key_id_idx. A resealed row leaves that range, so the next
-- batch (or a rotation started again) picks up where this one ended.
-- Locked for the batch's transaction; SKIP LOCKED leaves keys that a
-- request is changing to a later pass.
-- The equality is written as a closed range: a generic plan guesses an
-- equality on a column of few distinct values to match half the table (and
-- then scans it), a range on a parameter to match a few rows.
SELECT k.id, k.pool, k.secret_key_id, k.secret_ciphertext FROM keys AS k
WHERE k.secret_key_id >= sqlc.arg(secret_key_id)::text AND k.secret_key_id <= sqlc.arg(secret_key_id)::text
ORDER BY k.secret_key_id, k.id
LIMIT sqlc.arg(max)::int
FOR UPDATE SKIP LOCKED;

-- name: KeySecretsReseal :execrows
-- Stores secrets sealed again under a new encryption key, with their new
-- digests, for rows still sealed under the old one.
WITH sealed AS (
    SELECT unnest(sqlc.arg(ids)::uuid[]) AS id, unnest(sqlc.arg(ciphertexts)::bytea[]) AS ciphertext,
           unnest(sqlc.arg(digests)::bytea[]) AS digest
)
UPDATE keys AS k
SET secret_key_id = sqlc.arg(new_key_id)::text, secret_ciphertext = sealed.ciphertext, secret_digest = sealed.digest
FROM sealed
WHERE k.id = ANY (sqlc.arg(ids)::uuid[]) AND k.id = sealed.id AND k.secret_key_id = sqlc.arg(old_key_id)::text;


-- name: KeyFindExisting :many
-- Which of the keys about to be created a pool already has: the positions
-- (in the caller's list) whose secret has a digest in the pool (digests
-- under every configured encryption key, so rows not yet rotated count),
-- reason 'secret', and those whose name a key of the pool has, reason
-- 'name', with that key and whether its life has ended (it counts as gone,
-- and the caller deletes it first: KeyDeleteExpiredByID). Each is one probe
-- of keys_pool_secret_digest_idx or keys_pool_name_idx. Run under
-- KeyLockPoolSecrets, so that no import of the pool commits in between.
WITH digests AS (
    SELECT unnest(sqlc.arg(digest_positions)::int[]) AS position, unnest(sqlc.arg(digests)::bytea[]) AS digest
), names AS (
    SELECT unnest(sqlc.arg(name_positions)::int[]) AS position, unnest(sqlc.arg(names)::text[]) AS name
)
SELECT digests.position::int AS position, 'secret'::text AS reason, d.id AS key_id,
       coalesce(d.expires_at <= now(), false)::boolean AS expired
FROM digests
JOIN keys AS d ON d.pool = sqlc.arg(pool)::text AND d.secret_digest = digests.digest
UNION ALL
SELECT names.position::int AS position, 'name'::text AS reason, d.id AS key_id,
       coalesce(d.expires_at <= now(), false)::boolean AS expired
FROM names
JOIN keys AS d ON d.pool = sqlc.arg(pool)::text AND d.name = names.name
ORDER BY 1, 2;

-- name: KeyGetByName :one
-- The live key of the pool with this name: one probe of keys_pool_name_idx.
SELECT k.id, k.pool, k.created_at, k.expires_at, k.last_keep_alive_at, k.labels, k.name, k.secret_hint,
       k.seats, s.seats_held,
       coalesce(s.times_assigned, 0)::bigint AS times_assigned,
       one.lease_token, one.blocked_at, one.lease_expires_at, one.cooling_until
FROM keys AS k
-- The key's seats, one range of key_state_pkey.
LEFT JOIN LATERAL (
    SELECT count(c.blocked_at)::int AS seats_held, sum(c.times_assigned)::bigint AS times_assigned
    FROM key_state AS c
    WHERE c.key_id = k.id
) AS s ON true
-- A key of one seat shows that seat's lease; a key of several has a lease
-- per seat and shows none here (each is read with its token: KeyGetLease).
LEFT JOIN LATERAL (
    SELECT o.lease_token, o.blocked_at, o.lease_expires_at, o.cooling_until FROM key_state AS o
    WHERE o.key_id = k.id AND o.seat = 0 AND k.seats = 1
    -- One row; the limit also keeps the planner from making it a join.
    LIMIT 1
) AS one ON true
WHERE k.pool = sqlc.arg(pool)::text AND k.name = sqlc.arg(name)::text AND (k.expires_at IS NULL OR k.expires_at > now());

-- name: KeyCooldownAfterLease :one
-- A cooldown sent with the token of a seat's most recent lease after that
-- lease has ended: while the seat is free, it cools down from now (never
-- shorter than a cooldown it already has), leaves the label indexes, and
-- the cooldown is recorded (cooled_down). The seat's most recent lease is
-- its last_lease_token, which every release sets; the key's seats are one
-- range of key_state_pkey. A seat held under another lease, or whose most
-- recent lease is not the one named, matches no row.
WITH cooled AS (
    UPDATE key_state AS s
    SET cooling_until = greatest(s.cooling_until, now() + sqlc.arg(cooldown_seconds)::float8 * interval '1 second')
    WHERE s.key_id = sqlc.arg(id)::uuid AND s.blocked_at IS NULL
      AND s.last_lease_token IS NOT DISTINCT FROM sqlc.arg(lease_token)::bigint
      AND (SELECT coalesce(k.expires_at, 'infinity') FROM keys AS k WHERE k.id = s.key_id) > now()
    RETURNING s.*
), unclaimable AS (
    UPDATE key_labels AS l SET position = NULL
    WHERE l.key_id = sqlc.arg(id)::uuid AND l.seat = ANY (ARRAY(SELECT cooled.seat FROM cooled WHERE cooled.labelled))
), history AS (
    INSERT INTO key_events (key_id, pool, event, lease_token, cooldown, seat)
    SELECT cooled.key_id, cooled.pool, 'cooled_down', sqlc.arg(lease_token)::bigint,
           sqlc.arg(cooldown_seconds)::float8 * interval '1 second', cooled.seat
    FROM cooled
)
SELECT k.id, k.pool, k.created_at, k.expires_at, k.last_keep_alive_at, k.labels, k.name, k.secret_hint,
       k.seats, (CASE WHEN k.seats = 1 THEN (cooled.lease_token IS NOT NULL)::int ELSE -1 END)::int AS seats_held,
       cooled.times_assigned, cooled.lease_token, cooled.blocked_at, cooled.lease_expires_at, cooled.cooling_until
FROM cooled
JOIN keys AS k ON k.id = cooled.key_id
WHERE k.id = sqlc.arg(id)::uuid;

-- name: KeyCoolFreeSeats :execrows
-- Every free seat of the keys named that is not cooling down cools down
-- for the given seconds: a key whose secret this server cannot open is
-- set aside as a whole, so that claims do not take its seats one at a time
-- while other keys are free. The seats leave the label indexes, and each
-- cooldown is recorded (cooled_down, without a lease). The keys' seats are
-- one range of key_state_pkey each, locked in key and seat order as every
-- statement that locks several seats of a key locks them; SKIP LOCKED
-- leaves a seat that a request is changing as it is, as it does a seat held
-- or already cooling. The counts do not change: a cooling seat counts as
-- free.
WITH free AS (
    SELECT c.key_id, c.seat FROM key_state AS c
    WHERE c.key_id = ANY (sqlc.arg(ids)::uuid[]) AND c.blocked_at IS NULL AND c.cooling_until IS NULL
      AND (SELECT coalesce(k.expires_at, 'infinity') FROM keys AS k WHERE k.id = c.key_id) > now()
    ORDER BY c.key_id, c.seat
    FOR UPDATE SKIP LOCKED
), cooled AS (
    UPDATE key_state AS s
    SET cooling_until = now() + sqlc.arg(cooldown_seconds)::float8 * interval '1 second'
    -- The rows locked above, a few seats of a few keys: by key and seat
    -- alone (see the top of this file).
    WHERE s.key_id = ANY (ARRAY(SELECT free.key_id FROM free))
      AND EXISTS (SELECT 1 FROM free WHERE free.key_id = s.key_id AND free.seat = s.seat)
    RETURNING s.key_id, s.seat, s.pool, s.labelled
), unclaimable AS (
    UPDATE key_labels AS l SET position = NULL
    WHERE l.key_id = ANY (ARRAY(SELECT cooled.key_id FROM cooled WHERE cooled.labelled))
      AND l.seat = ANY (ARRAY(SELECT cooled.seat FROM cooled WHERE cooled.labelled))
      AND EXISTS (SELECT 1 FROM cooled WHERE cooled.key_id = l.key_id AND cooled.seat = l.seat)
)
INSERT INTO key_events (key_id, pool, event, cooldown, seat)
SELECT cooled.key_id, cooled.pool, 'cooled_down', sqlc.arg(cooldown_seconds)::float8 * interval '1 second', cooled.seat
FROM cooled;

-- name: KeyRebaseLives :one
-- One page of a pool's keys, in id order after the given id, whose life is
-- set again from the pool's policy as a keep-alive would set it: after a
-- change of the policy's key life, the pool's keys follow it at once (keys
-- that stay, or a new life from now). A range on keys_pool_id_idx, then
-- each key by primary key. Returns the last id of the page (the nil UUID
-- when the page was empty), the page's size and how many keys it changed.
WITH page AS (
    SELECT k.id FROM keys AS k
    WHERE k.pool = sqlc.arg(pool)::text AND k.id > sqlc.arg(after)::uuid
    ORDER BY k.pool, k.id
    LIMIT sqlc.arg(max)::int
), rebased AS (
    UPDATE keys AS k
    -- NULL (keys that stay) is 'infinity' until the end, so that one probe
    -- of pools_pkey tells both a key life and no row.
    SET expires_at = nullif(coalesce(
            (SELECT CASE WHEN p.keys_stay THEN 'infinity'::timestamptz
                         ELSE now() + coalesce(p.key_ttl, sqlc.arg(key_ttl_seconds)::float8 * interval '1 second') END
             FROM pools AS p WHERE p.name = k.pool),
            now() + sqlc.arg(key_ttl_seconds)::float8 * interval '1 second'), 'infinity')
    WHERE k.id = ANY (ARRAY(SELECT page.id FROM page)) AND (k.expires_at IS NULL OR k.expires_at > now())
    RETURNING k.id
)
SELECT coalesce((SELECT page.id FROM page ORDER BY page.id DESC LIMIT 1), '00000000-0000-0000-0000-000000000000')::uuid AS last_id,
       (SELECT count(*) FROM page)::int AS paged,
       (SELECT count(*) FROM rebased)::int AS rebased;

-- name: KeyDeletePoolPage :one
-- Deletes up to max keys of the pool, in id order (a range on
-- keys_pool_id_idx), as KeyDelete deletes one: for DELETE /pools/{pool}
-- with its keys. Returns how many it deleted; the caller repeats until none
-- is left.
WITH page AS (
    SELECT k.id FROM keys AS k
    WHERE k.pool = sqlc.arg(pool)::text
    ORDER BY k.pool, k.id
    LIMIT sqlc.arg(max)::int
), state AS (
    DELETE FROM key_state AS s
    WHERE s.key_id = ANY (ARRAY(SELECT page.id FROM page))
    RETURNING s.*
), deleted AS (
    -- Runs after state: see KeyDelete.
    DELETE FROM keys AS k
    WHERE k.id = ANY (ARRAY(SELECT state.key_id FROM state))
), labels AS (
    DELETE FROM key_labels AS l
    WHERE l.key_id = ANY (ARRAY(SELECT state.key_id FROM state WHERE state.labelled))
), history AS (
    -- As KeyDelete: one event for the key, one for each other seat held.
    -- The key's end (seat 0's) carries its seats: the keys row as the
    -- statement's snapshot has it, before its deletion.
    INSERT INTO key_events (key_id, pool, event, lease_token, seat, seats)
    SELECT state.key_id, state.pool, 'deleted', state.lease_token, CASE WHEN state.lease_token IS NOT NULL THEN state.seat END,
           CASE WHEN state.seat = 0 THEN (SELECT nullif(k.seats, 1) FROM keys AS k WHERE k.id = state.key_id) END
    FROM state WHERE state.seat = 0 OR state.lease_token IS NOT NULL
), counted AS (
    INSERT INTO pool_count_changes (pool, keys, blocked, seats)
    SELECT state.pool, -count(*) FILTER (WHERE state.seat = 0), -count(state.lease_token), -count(*) FROM state
    GROUP BY state.pool
)
SELECT (count(*) FILTER (WHERE state.seat = 0))::int FROM state;

-- name: KeyDeleteExpiredByID :one
-- Deletes the keys named whose life has ended, as the background job does
-- (KeyDeleteExpired: history 'expired'), for an import that brings their
-- secret or name back: a key whose life has ended is gone, even before the
-- job has removed it. Waits for a job that is deleting them (they are then
-- gone). Both rows by primary key, key_state first.
WITH expired_state AS (
    SELECT s.key_id FROM key_state AS s
    WHERE s.key_id = ANY (sqlc.arg(ids)::uuid[])
      AND (SELECT k.expires_at FROM keys AS k WHERE k.id = s.key_id) <= now()
    ORDER BY s.key_id, s.seat
    FOR UPDATE
), state AS (
    DELETE FROM key_state AS s
    WHERE s.key_id = ANY (ARRAY(SELECT expired_state.key_id FROM expired_state))
    RETURNING s.key_id, s.seat, s.pool, s.lease_token, s.labelled
), deleted AS (
    DELETE FROM keys AS k
    WHERE k.id = ANY (ARRAY(SELECT state.key_id FROM state))
), labels AS (
    DELETE FROM key_labels AS l
    WHERE l.key_id = ANY (ARRAY(SELECT state.key_id FROM state WHERE state.labelled))
), history AS (
    -- As KeyDelete: one event for the key, one for each other seat held.
    -- The key's end (seat 0's) carries its seats: the keys row as the
    -- statement's snapshot has it, before its deletion.
    INSERT INTO key_events (key_id, pool, event, lease_token, seat, seats)
    SELECT state.key_id, state.pool, 'expired', state.lease_token, CASE WHEN state.lease_token IS NOT NULL THEN state.seat END,
           CASE WHEN state.seat = 0 THEN (SELECT nullif(k.seats, 1) FROM keys AS k WHERE k.id = state.key_id) END
    FROM state WHERE state.seat = 0 OR state.lease_token IS NOT NULL
), counted AS (
    INSERT INTO pool_count_changes (pool, keys, blocked, seats)
    SELECT state.pool, -count(*) FILTER (WHERE state.seat = 0), -count(state.lease_token), -count(*) FROM state
    GROUP BY state.pool ORDER BY state.pool
)
SELECT (count(*) FILTER (WHERE state.seat = 0))::int FROM state;

-- name: KeySecretsRemainUnder :one
-- Whether any key's secret is still sealed under the given encryption key,
-- locked or not: `secrets rotate` is done only when none is. The first entry
-- of the key's range in keys_secret_key_id_idx (written as a range: see
-- KeySecretsSealedUnder).
SELECT ((SELECT k.id FROM keys AS k
         WHERE k.secret_key_id >= sqlc.arg(secret_key_id)::text AND k.secret_key_id <= sqlc.arg(secret_key_id)::text
         ORDER BY k.secret_key_id, k.id
         LIMIT 1) IS NOT NULL)::boolean AS remain;
