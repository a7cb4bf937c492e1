-- Queries on key_events, the append-only history.

-- name: KeyEventsOverlappingLeases :many
-- Pairs of leases of the same seat of a key that overlap in time: a second
-- lease that began before the first had ended. The service guarantees there
-- are none (a key of N seats has up to N leases at once, one per seat);
-- a lease ends with the first released, lease_expired, deleted or expired
-- event that carries its token.
WITH leases AS (
    SELECT a.key_id, a.seat, a.lease_token, a.at AS started_at,
           coalesce((
               SELECT min(e.at) FROM key_events AS e
               WHERE e.key_id = a.key_id AND e.lease_token = a.lease_token
                 AND e.event IN ('released', 'lease_expired', 'deleted', 'expired')
           ), 'infinity'::timestamptz) AS ended_at
    FROM key_events AS a
    WHERE a.event = 'assigned'
      AND a.at >= sqlc.arg(since)::timestamptz
)
SELECT first.key_id, first.lease_token AS first_lease_token, second.lease_token AS second_lease_token
FROM leases AS first
JOIN leases AS second
  ON second.key_id = first.key_id
 AND second.seat IS NOT DISTINCT FROM first.seat
 AND second.lease_token <> first.lease_token
 AND second.started_at >= first.started_at
 AND second.started_at < first.ended_at;

-- name: KeyEventsCountByEvent :many
SELECT event, count(*) AS events
FROM key_events
WHERE at >= sqlc.arg(since)::timestamptz
GROUP BY event
ORDER BY event;

-- name: KeyEventsDeleteOlderThan :one
-- One batch of history retention: deletes the max oldest events older than
-- the retention, in (at, id) order, so that a batch stays at max rows even
-- when many events share one time. Both scans are ranges from the start of
-- key_events_at_idx, and it never reads the keys table. Replicas that run it
-- at once delete in the same order, the later one skipping the rows the
-- first deleted. now pins the clock for tests; NULL is the database's now().
-- The delete's range is bounded below by the oldest event too, which it
-- always holds: with an upper bound only, on tables never analysed, the
-- planner guessed a third of the history and scanned all of it.
WITH cut_off AS (
    SELECT coalesce(sqlc.narg(now)::timestamptz, now()) - sqlc.arg(retention_seconds)::float8 * interval '1 second' AS at
), first_of_batch AS (
    SELECT f.at FROM key_events AS f ORDER BY f.at LIMIT 1
), last_of_batch AS (
    SELECT o.at, o.id FROM key_events AS o
    WHERE o.at < (SELECT cut_off.at FROM cut_off)
    ORDER BY o.at, o.id
    OFFSET sqlc.arg(max)::int - 1
    LIMIT 1
), deleted AS (
    DELETE FROM key_events AS e
    WHERE e.at >= (SELECT first_of_batch.at FROM first_of_batch)
      AND e.at < (SELECT cut_off.at FROM cut_off)
      AND e.at <= coalesce((SELECT last_of_batch.at FROM last_of_batch), 'infinity')
      AND (NOT EXISTS (SELECT 1 FROM last_of_batch)
           OR e.at < (SELECT last_of_batch.at FROM last_of_batch)
           OR e.id <= (SELECT last_of_batch.id FROM last_of_batch))
    RETURNING 1
)
SELECT count(*) FROM deleted;

-- name: KeyEventsPerMinute :many
-- Events of the pool per UTC minute of the database clock over the last
-- minutes minutes, the current one included; minutes without events are
-- there with zeros. One range on key_events_pool_at_idx over just those
-- minutes of the pool, whatever the statistics say: the bounds are written
-- as (pool, at) rows, which only that index can search, so the planner
-- cannot read every pool's events of those minutes on key_events_at_idx
-- instead (it did, in a generic plan, when the pools were few). There is
-- no e.pool = pool beside them: the index scan would start from that
-- equality, at the pool's oldest event, rather than from the lower row.
-- Every pool's chart is KeyEventsPerMinuteAllPools: an optional pool,
-- (pool IS NULL OR e.pool = pool), can be no index condition in a generic
-- plan.
WITH bounds AS (
    SELECT date_bin('1 minute', now(), timestamptz '2000-01-01 00:00:00+00') AS current_minute
), counts AS (
    SELECT date_bin('1 minute', e.at, timestamptz '2000-01-01 00:00:00+00') AS minute,
           count(*) FILTER (WHERE e.event = 'created') AS created,
           count(*) FILTER (WHERE e.event = 'assigned') AS assigned,
           count(*) FILTER (WHERE e.event = 'released') AS released,
           count(*) FILTER (WHERE e.event = 'lease_expired') AS lease_expired,
           count(*) FILTER (WHERE e.event = 'kept_alive') AS kept_alive,
           -- A key of several seats ends with one event per held seat;
           -- the key itself is counted once, by seat 0's (seat NULL or 0).
           count(*) FILTER (WHERE e.event = 'deleted' AND coalesce(e.seat, 0) = 0) AS deleted,
           count(*) FILTER (WHERE e.event = 'expired' AND coalesce(e.seat, 0) = 0) AS expired
    FROM key_events AS e
    WHERE (e.pool, e.at) >= (sqlc.arg(pool)::text, (SELECT b.current_minute FROM bounds AS b) - (sqlc.arg(minutes)::int - 1) * interval '1 minute')
      AND (e.pool, e.at) < (sqlc.arg(pool)::text, (SELECT b.current_minute FROM bounds AS b) + interval '1 minute')
    GROUP BY 1
)
SELECT m.minute::timestamptz AS minute,
       coalesce(c.created, 0)::bigint AS created,
       coalesce(c.assigned, 0)::bigint AS claimed,
       coalesce(c.released, 0)::bigint AS released,
       coalesce(c.lease_expired, 0)::bigint AS lease_expired,
       coalesce(c.kept_alive, 0)::bigint AS kept_alive,
       coalesce(c.deleted, 0)::bigint AS deleted,
       coalesce(c.expired, 0)::bigint AS expired
FROM bounds AS b
CROSS JOIN generate_series(
    b.current_minute - (sqlc.arg(minutes)::int - 1) * interval '1 minute',
    b.current_minute,
    interval '1 minute'
) AS m (minute)
LEFT JOIN counts AS c ON c.minute = m.minute
ORDER BY m.minute;

-- name: KeyEventsPerMinuteAllPools :many
-- KeyEventsPerMinute of every pool: one range on key_events_at_idx.
WITH bounds AS (
    SELECT date_bin('1 minute', now(), timestamptz '2000-01-01 00:00:00+00') AS current_minute
), counts AS (
    SELECT date_bin('1 minute', e.at, timestamptz '2000-01-01 00:00:00+00') AS minute,
           count(*) FILTER (WHERE e.event = 'created') AS created,
           count(*) FILTER (WHERE e.event = 'assigned') AS assigned,
           count(*) FILTER (WHERE e.event = 'released') AS released,
           count(*) FILTER (WHERE e.event = 'lease_expired') AS lease_expired,
           count(*) FILTER (WHERE e.event = 'kept_alive') AS kept_alive,
           -- A key of several seats ends with one event per held seat;
           -- the key itself is counted once, by seat 0's (seat NULL or 0).
           count(*) FILTER (WHERE e.event = 'deleted' AND coalesce(e.seat, 0) = 0) AS deleted,
           count(*) FILTER (WHERE e.event = 'expired' AND coalesce(e.seat, 0) = 0) AS expired
    FROM key_events AS e
    WHERE e.at >= (SELECT b.current_minute FROM bounds AS b) - (sqlc.arg(minutes)::int - 1) * interval '1 minute'
      AND e.at < (SELECT b.current_minute FROM bounds AS b) + interval '1 minute'
    GROUP BY 1
)
SELECT m.minute::timestamptz AS minute,
       coalesce(c.created, 0)::bigint AS created,
       coalesce(c.assigned, 0)::bigint AS claimed,
       coalesce(c.released, 0)::bigint AS released,
       coalesce(c.lease_expired, 0)::bigint AS lease_expired,
       coalesce(c.kept_alive, 0)::bigint AS kept_alive,
       coalesce(c.deleted, 0)::bigint AS deleted,
       coalesce(c.expired, 0)::bigint AS expired
FROM bounds AS b
CROSS JOIN generate_series(
    b.current_minute - (sqlc.arg(minutes)::int - 1) * interval '1 minute',
    b.current_minute,
    interval '1 minute'
) AS m (minute)
LEFT JOIN counts AS c ON c.minute = m.minute
ORDER BY m.minute;
