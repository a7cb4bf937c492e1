-- +goose Up

-- Reports over the history in key_events. Hours are UTC hours.
--
-- The hourly views are built from cells, one per pool and hour; each cell is
-- computed by one index range scan over that pool's events of that hour
-- (on key_events_pool_at_idx, or on key_events_at_idx when the planner finds
-- the pool not selective enough to be worth it). A filter on pool and hour therefore selects the
-- cells before any event is read, and the cost of a report grows with the
-- history inside its range, not with the whole history:
--
--     SELECT * FROM lease_activity_hourly
--     WHERE pool = 'default' AND hour >= now() - interval '24 hours';
--
-- Utilisation cannot be computed that way: the number of keys at the start of
-- an hour is known only by counting back from today's counts over every later
-- event, which a view cannot limit to the range asked for. It is a function
-- taking the range, pool_utilisation(from, to, pool); the view of the same
-- name is that function over the whole history.

-- Every pool with history and every hour from the oldest event kept to now:
-- the cells of the hourly views. Pools are found by a loose index scan (one
-- index probe per pool); hours are generated, not read.
CREATE VIEW history_hours AS
WITH RECURSIVE pools (pool) AS (
    (SELECT e.pool FROM key_events AS e ORDER BY e.pool LIMIT 1)
    UNION ALL
    SELECT (SELECT e.pool FROM key_events AS e WHERE e.pool > pools.pool ORDER BY e.pool LIMIT 1)
    FROM pools
    WHERE pools.pool IS NOT NULL
)
SELECT pools.pool, hours.hour::timestamptz AS hour
FROM pools
CROSS JOIN generate_series(
    date_bin('1 hour', (SELECT min(e.at) FROM key_events AS e), timestamptz '2000-01-01 00:00:00+00'),
    now(),
    interval '1 hour'
) AS hours (hour)
WHERE pools.pool IS NOT NULL;

COMMENT ON VIEW history_hours IS 'Every pool with history and every UTC hour from the oldest event kept to now: the cells of the hourly report views.';

-- One row per lease: when it started, when and how it ended, how often its
-- holder kept it alive. A lease starts with its assigned event and ends with
-- the first released, lease_expired, deleted or expired event that carries
-- its token. A key's lease ends before its next one starts, and the events
-- of one key are in their true order by at, so that end is the first such
-- event of the key after the start: one step along key_events_key_id_at_idx,
-- where a search by token would have to read every later event of the key.
-- Filters on pool and started_at become index range conditions on the
-- assigned events.
CREATE VIEW key_leases AS
SELECT a.pool,
       a.key_id,
       a.lease_token,
       a.at AS started_at,
       ended.at AS ended_at,
       ended.event AS ended_by,
       kept.keep_alives,
       date_part('epoch', ended.at - a.at)::float8 AS duration_seconds
FROM key_events AS a
LEFT JOIN LATERAL (
    SELECT e.at, e.event, e.lease_token
    FROM key_events AS e
    WHERE e.key_id = a.key_id AND e.at > a.at
      AND e.event IN ('released', 'lease_expired', 'deleted', 'expired')
    ORDER BY e.at
    LIMIT 1
) AS ended ON ended.lease_token = a.lease_token
CROSS JOIN LATERAL (
    SELECT count(*) AS keep_alives
    FROM key_events AS e
    WHERE e.key_id = a.key_id AND e.at > a.at AND e.at < coalesce(ended.at, 'infinity')
      AND e.lease_token = a.lease_token AND e.event = 'kept_alive'
) AS kept
WHERE a.event = 'assigned';

COMMENT ON VIEW key_leases IS 'One row per lease: pool, key, token, started_at, ended_at and ended_by (released, lease_expired, deleted, expired; NULL while held), keep_alives during the lease, duration_seconds (NULL while held).';

-- How busy each pool is: per pool and hour, leases assigned, released by
-- their holder, ended by the background job because nobody kept them alive
-- (the holder vanished), ended because the key was deleted or expired while
-- held, and keep-alives on held keys. Hours without any of these are left out.
CREATE VIEW lease_activity_hourly AS
SELECT c.pool,
       c.hour,
       n.assigned,
       n.released,
       n.lease_expired,
       n.ended_by_deletion,
       n.keep_alives
FROM history_hours AS c
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE e.event = 'assigned') AS assigned,
           count(*) FILTER (WHERE e.event = 'released') AS released,
           count(*) FILTER (WHERE e.event = 'lease_expired') AS lease_expired,
           count(*) FILTER (WHERE e.event IN ('deleted', 'expired') AND e.lease_token IS NOT NULL) AS ended_by_deletion,
           count(*) FILTER (WHERE e.event = 'kept_alive' AND e.lease_token IS NOT NULL) AS keep_alives
    FROM key_events AS e
    WHERE e.pool = c.pool AND e.at >= c.hour AND e.at < c.hour + interval '1 hour'
) AS n
WHERE n.assigned + n.released + n.lease_expired + n.ended_by_deletion + n.keep_alives > 0;

COMMENT ON VIEW lease_activity_hourly IS 'Per pool and UTC hour: leases assigned, released (by the holder), lease_expired (by the background job), ended_by_deletion (key deleted or expired while held), keep_alives on held keys.';

-- How long keys are held: per pool and hour, the leases that started in the
-- hour, how many of them have ended, and the mean, median, 95th percentile
-- and longest duration of those that ended. An hour's figures are final once
-- its last lease has ended.
CREATE VIEW lease_durations_hourly AS
SELECT c.pool,
       c.hour,
       d.leases,
       d.ended,
       d.mean_seconds,
       d.p50_seconds,
       d.p95_seconds,
       d.max_seconds
FROM history_hours AS c
CROSS JOIN LATERAL (
    SELECT count(*) AS leases,
           count(l.duration_seconds) AS ended,
           avg(l.duration_seconds)::float8 AS mean_seconds,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY l.duration_seconds)::float8 AS p50_seconds,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY l.duration_seconds)::float8 AS p95_seconds,
           max(l.duration_seconds)::float8 AS max_seconds
    FROM key_leases AS l
    WHERE l.pool = c.pool AND l.started_at >= c.hour AND l.started_at < c.hour + interval '1 hour'
) AS d
WHERE d.leases > 0;

COMMENT ON VIEW lease_durations_hourly IS 'Per pool and UTC hour: leases started in the hour, how many have ended, and mean, p50, p95 and max duration in seconds of the ended ones.';

-- Keys created, deleted by a client and expired (deleted by the background
-- job because nobody kept them alive) per pool and hour.
CREATE VIEW key_activity_hourly AS
SELECT c.pool,
       c.hour,
       n.created,
       n.deleted,
       n.expired
FROM history_hours AS c
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE e.event = 'created') AS created,
           count(*) FILTER (WHERE e.event = 'deleted') AS deleted,
           count(*) FILTER (WHERE e.event = 'expired') AS expired
    FROM key_events AS e
    WHERE e.pool = c.pool AND e.at >= c.hour AND e.at < c.hour + interval '1 hour'
      AND e.event IN ('created', 'deleted', 'expired')
) AS n
WHERE n.created + n.deleted + n.expired > 0;

COMMENT ON VIEW key_activity_hourly IS 'Per pool and UTC hour: keys created, deleted (by a client) and expired (by the background job).';

-- Every event with the change it makes to its pool's count of keys (+1
-- created, -1 deleted or expired) and of blocked keys (+1 assigned, -1
-- released, lease_expired, or deleted or expired while held).
CREATE VIEW key_event_changes AS
SELECT e.id, e.at, e.key_id, e.pool, e.event, e.lease_token,
       CASE WHEN e.event = 'created' THEN 1
            WHEN e.event IN ('deleted', 'expired') THEN -1
            ELSE 0 END AS keys,
       CASE WHEN e.event = 'assigned' THEN 1
            WHEN e.event IN ('released', 'lease_expired') THEN -1
            WHEN e.event IN ('deleted', 'expired') AND e.lease_token IS NOT NULL THEN -1
            ELSE 0 END AS blocked
FROM key_events AS e;

COMMENT ON VIEW key_event_changes IS 'Every event with the change it makes to its pool''s count of keys (keys: +1, -1, 0) and of blocked keys (blocked).';

-- Utilisation: per pool and hour, the key-seconds (keys existing, summed over
-- the hour), the blocked-seconds (keys under a lease) and their ratio, for
-- the hours that overlap [range_from, range_to) and the pool (NULL: every
-- pool).
--
-- The number of keys at the start of an hour is today's count in
-- pool_counts minus every change since then; every change is a history row,
-- and both are written in the same transaction, so the reconstruction is
-- exact for every hour whose events are all kept. (The oldest hour kept may
-- have lost some events to retention.) Within an hour, each change adds or
-- removes the seconds from its moment to the end of the hour. The function
-- reads the events of the range and those after it, each pool's through one
-- index range scan per hour and one from the range's end on.
-- +goose StatementBegin
CREATE FUNCTION pool_utilisation(range_from timestamptz, range_to timestamptz, only_pool text DEFAULT NULL)
RETURNS TABLE (pool text, hour timestamptz, key_seconds float8, blocked_seconds float8, utilisation float8)
LANGUAGE sql STABLE AS $$
WITH cells AS (
    SELECT c.pool, c.hour, least(c.hour + interval '1 hour', now()) AS hour_end
    FROM history_hours AS c
    WHERE c.hour > range_from - interval '1 hour' AND c.hour < range_to
      AND (only_pool IS NULL OR c.pool = only_pool)
), changes AS (
    SELECT cells.pool, cells.hour, cells.hour_end, s.*
    FROM cells
    CROSS JOIN LATERAL (
        SELECT coalesce(sum(e.keys), 0) AS net_keys,
               coalesce(sum(e.blocked), 0) AS net_blocked,
               coalesce(sum(e.keys * date_part('epoch', greatest(cells.hour_end - e.at, interval '0'))), 0) AS keys_seconds_added,
               coalesce(sum(e.blocked * date_part('epoch', greatest(cells.hour_end - e.at, interval '0'))), 0) AS blocked_seconds_added
        FROM key_event_changes AS e
        WHERE e.pool = cells.pool AND e.at >= cells.hour AND e.at < cells.hour + interval '1 hour'
    ) AS s
), later AS (
    -- The net change per pool after the last hour of the range.
    SELECT e.pool, sum(e.keys) AS keys, sum(e.blocked) AS blocked
    FROM key_event_changes AS e
    WHERE e.at >= (SELECT max(changes.hour) FROM changes) + interval '1 hour'
      AND (only_pool IS NULL OR e.pool = only_pool)
    GROUP BY e.pool
), current AS (
    SELECT p.pool, sum(p.keys) AS keys, sum(p.blocked) AS blocked
    FROM pool_counts AS p
    WHERE only_pool IS NULL OR p.pool = only_pool
    GROUP BY p.pool
), starts AS (
    -- Keys and blocked keys at the start of each hour, counted back from now.
    SELECT changes.*,
           coalesce(current.keys, 0) - coalesce(later.keys, 0)
               - sum(changes.net_keys) OVER back AS keys_at_start,
           coalesce(current.blocked, 0) - coalesce(later.blocked, 0)
               - sum(changes.net_blocked) OVER back AS blocked_at_start
    FROM changes
    LEFT JOIN later ON later.pool = changes.pool
    LEFT JOIN current ON current.pool = changes.pool
    WINDOW back AS (PARTITION BY changes.pool ORDER BY changes.hour DESC)
), seconds AS (
    SELECT starts.pool, starts.hour,
           (starts.keys_at_start * date_part('epoch', starts.hour_end - starts.hour) + starts.keys_seconds_added)::float8 AS key_seconds,
           (starts.blocked_at_start * date_part('epoch', starts.hour_end - starts.hour) + starts.blocked_seconds_added)::float8 AS blocked_seconds
    FROM starts
)
SELECT seconds.pool, seconds.hour, seconds.key_seconds, seconds.blocked_seconds,
       seconds.blocked_seconds / seconds.key_seconds AS utilisation
FROM seconds
WHERE seconds.key_seconds > 0
ORDER BY seconds.pool, seconds.hour
$$;
-- +goose StatementEnd

COMMENT ON FUNCTION pool_utilisation(timestamptz, timestamptz, text) IS 'Per pool and UTC hour overlapping [range_from, range_to): key_seconds, blocked_seconds and utilisation (their ratio). only_pool NULL: every pool.';

CREATE VIEW pool_utilisation_hourly AS
SELECT u.pool::text AS pool, u.hour::timestamptz AS hour, u.key_seconds::float8 AS key_seconds,
       u.blocked_seconds::float8 AS blocked_seconds, u.utilisation::float8 AS utilisation
FROM pool_utilisation('-infinity', 'infinity') AS u;

COMMENT ON VIEW pool_utilisation_hourly IS 'pool_utilisation over the whole history. For a range call pool_utilisation(from, to, pool): it reads only the events from the range on.';

-- +goose Down
DROP VIEW pool_utilisation_hourly;
DROP FUNCTION pool_utilisation(timestamptz, timestamptz, text);
DROP VIEW key_activity_hourly;
DROP VIEW lease_durations_hourly;
DROP VIEW lease_activity_hourly;
DROP VIEW key_leases;
DROP VIEW key_event_changes;
DROP VIEW history_hours;
