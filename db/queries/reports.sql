-- Queries of the reports and the dashboard's lease durations. pool NULL
-- means every pool.
--
-- Hourly reports cover the UTC hours that overlap [range_from, range_to): an
-- hour belongs when it starts after range_from - 1 hour and before range_to,
-- and not after now (the views' hours end there).
--
-- The leases and their durations per hour are read as key_leases (migration
-- 00002) reads them: each lease is a row of their answer. The others read
-- the rollups of migration 00015, which hold the events before
-- key_event_rollup_state.folded_to, and key_events from folded_to on, and
-- answer what the views answer: the rollups count exactly the events the
-- views count. One pool and every pool are separate statements: one pool's
-- reads are ranges on (pool, time) indexes from the pool's first hour,
-- written as (pool, time) rows, which only those indexes can search; every
-- pool's are ranges on time indexes.

-- name: KeyLeasesList :many
-- Leases of the pool that started in [range_from, range_to), oldest first,
-- at most max: key_leases from one range on key_events_pool_at_idx, from
-- the pool's first event of the range (the bounds as (pool, started_at)
-- rows, which only that index can search), each lease's end one step
-- along its key's events. Every pool's is KeyLeasesListAllPools.
SELECT pool, key_id, lease_token, started_at, ended_at, ended_by, keep_alives, duration_seconds
FROM key_leases
WHERE (pool, started_at) >= (sqlc.arg(pool)::text, sqlc.arg(range_from)::timestamptz)
  AND (pool, started_at) < (sqlc.arg(pool)::text, sqlc.arg(range_to)::timestamptz)
-- The pool first, though it is the one pool: the order of the index, which
-- the planner cannot tell from the rows.
ORDER BY pool, started_at, lease_token
LIMIT sqlc.arg(max)::int;

-- name: KeyLeasesListAllPools :many
-- KeyLeasesList of every pool: key_leases of the range by key_events_at_idx,
-- up to the time of the max-th start from range_from on, which a walk of
-- key_events_at_idx in its order finds first. What either reads is then
-- about max starts, whatever plan the statistics choose: a walk of the
-- index that stops after max rows, or a bitmap scan of the range and a
-- sort. With the range bounded by range_to alone, on tables never analysed
-- the planner took the range for a few rows and chose the bitmap scan,
-- which read every lease of the range, each with its end and
-- keep-alives: 45,521 buffers for a day of 2,000 pools of 50 keys. The
-- walk's only bound is range_from, which the planner prices at a third of
-- the table whatever the statistics say: it never sorts that instead.
WITH last_start AS MATERIALIZED (
    SELECT a.at FROM key_events AS a
    WHERE a.at >= sqlc.arg(range_from)::timestamptz AND a.event = 'assigned'
    ORDER BY a.at
    OFFSET greatest(sqlc.arg(max)::int - 1, 0)
    LIMIT 1
)
SELECT pool, key_id, lease_token, started_at, ended_at, ended_by, keep_alives, duration_seconds
FROM key_leases
WHERE started_at >= sqlc.arg(range_from)::timestamptz AND started_at < sqlc.arg(range_to)::timestamptz
  -- No later than the max-th start: every lease of the answer, and the
  -- others of its last microsecond. All of the range when it has fewer.
  AND started_at <= coalesce((SELECT last_start.at FROM last_start), 'infinity')
ORDER BY started_at, lease_token
LIMIT sqlc.arg(max)::int;

-- name: LeaseDurationsHourlyList :many
-- lease_durations_hourly of one pool: per hour of start, the leases, how
-- many have ended, and the mean, p50, p95 and longest duration of those
-- (0 while none has). The leases that started are the rollups' (assigned
-- in key_event_hours, and the assigned events from folded_to on); the
-- ended ones, each a value of the percentiles, are the rows of
-- ended_leases (migration 00016) of the range, which hold every lease that
-- ended before ended_leases_to, and the ends from ended_leases_to on, each
-- one step back along its key's events to its start, as the fold matches
-- them. A held lease is never read: what this reads grows with the hours
-- and the leases that ended in the range, and with the events not folded
-- yet. The pool's rows of key_event_hours and ended_leases are ranges by
-- pool and time (plain conditions, which end the range at its last hour: a
-- bound written as a (pool, time) row ends the range only at the pool's
-- last entry), each on the only index that has the pool; key_events' by
-- (pool, time) rows to the newest event.
WITH bounds AS (
    -- One row, whatever the statistics of the one-row table say: scalar
    -- subqueries, not a join. open_end: as in PoolUtilisationList.
    SELECT r.first_hour, r.end_hour, r.ended_leases_to, greatest(r.first_hour, r.folded_to) AS raw_from,
           'infinity'::timestamptz AS open_end
    FROM (
        SELECT date_bin('1 hour', sqlc.arg(range_from)::timestamptz, timestamptz '2000-01-01 00:00:00+00') AS first_hour,
               least(date_bin('1 hour', sqlc.arg(range_to)::timestamptz - interval '1 microsecond', timestamptz '2000-01-01 00:00:00+00'),
                     date_bin('1 hour', now(), timestamptz '2000-01-01 00:00:00+00')) + interval '1 hour' AS end_hour,
               (SELECT s.folded_to FROM key_event_rollup_state AS s) AS folded_to,
               (SELECT s.ended_leases_to FROM key_event_rollup_state AS s) AS ended_leases_to
    ) AS r
), started (hour, leases) AS (
    SELECT h.hour, h.assigned
    FROM key_event_hours AS h
    WHERE h.pool = sqlc.arg(pool)::text
      AND h.hour >= (SELECT b.first_hour FROM bounds AS b) AND h.hour < (SELECT b.end_hour FROM bounds AS b)
    UNION ALL
    SELECT date_bin('1 hour', e.at, timestamptz '2000-01-01 00:00:00+00'), 1
    FROM key_events AS e
    WHERE (e.pool, e.at) >= (sqlc.arg(pool)::text, (SELECT b.raw_from FROM bounds AS b))
      AND (e.pool, e.at) < (sqlc.arg(pool)::text, (SELECT b.open_end FROM bounds AS b))
      AND e.at < (SELECT b.end_hour FROM bounds AS b) AND e.event = 'assigned'
), ended (hour, seconds) AS (
    SELECT date_bin('1 hour', d.started_at, timestamptz '2000-01-01 00:00:00+00'), d.seconds
    FROM ended_leases AS d
    WHERE d.pool = sqlc.arg(pool)::text
      AND d.started_at >= (SELECT b.first_hour FROM bounds AS b) AND d.started_at < (SELECT b.end_hour FROM bounds AS b)
    UNION ALL
    SELECT date_bin('1 hour', lease.started_at, timestamptz '2000-01-01 00:00:00+00'), date_part('epoch', x.at - lease.started_at)::float8
    FROM key_events AS x
    -- The lease this end ends, if any (migrations 00017, 00018).
    CROSS JOIN LATERAL lease_start(x.key_id, x.seat, x.at, x.lease_token) AS lease (pool, started_at)
    WHERE (x.pool, x.at) >= (sqlc.arg(pool)::text, (SELECT b.ended_leases_to FROM bounds AS b))
      AND (x.pool, x.at) < (sqlc.arg(pool)::text, (SELECT b.open_end FROM bounds AS b))
      AND x.event IN ('released', 'lease_expired', 'deleted', 'expired') AND x.lease_token IS NOT NULL
      AND lease.started_at >= (SELECT b.first_hour FROM bounds AS b) AND lease.started_at < (SELECT b.end_hour FROM bounds AS b)
), leases AS (
    SELECT started.hour, sum(started.leases) AS leases
    FROM started
    GROUP BY started.hour
), durations AS (
    SELECT ended.hour, count(*) AS ended,
           avg(ended.seconds)::float8 AS mean_seconds,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY ended.seconds)::float8 AS p50_seconds,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY ended.seconds)::float8 AS p95_seconds,
           max(ended.seconds)::float8 AS max_seconds
    FROM ended
    GROUP BY ended.hour
)
SELECT sqlc.arg(pool)::text AS pool, leases.hour::timestamptz AS hour, leases.leases::bigint AS leases,
       coalesce(durations.ended, 0)::bigint AS ended,
       coalesce(durations.mean_seconds, 0)::float8 AS mean_seconds, coalesce(durations.p50_seconds, 0)::float8 AS p50_seconds,
       coalesce(durations.p95_seconds, 0)::float8 AS p95_seconds, coalesce(durations.max_seconds, 0)::float8 AS max_seconds
FROM leases
LEFT JOIN durations ON durations.hour = leases.hour
WHERE leases.leases > 0
ORDER BY leases.hour;

-- name: LeaseDurationsHourlyListAllPools :many
-- LeaseDurationsHourlyList of every pool: the hours of the range of every
-- pool by key_event_hours_hour_idx (or a scan), the ended leases that
-- started in them by ended_leases_hour_idx (the hour of start, the
-- expression it indexes), and the events not folded yet by
-- key_events_at_idx.
WITH bounds AS (
    SELECT r.first_hour, r.end_hour, r.ended_leases_to, greatest(r.first_hour, r.folded_to) AS raw_from,
           'infinity'::timestamptz AS open_end
    FROM (
        SELECT date_bin('1 hour', sqlc.arg(range_from)::timestamptz, timestamptz '2000-01-01 00:00:00+00') AS first_hour,
               least(date_bin('1 hour', sqlc.arg(range_to)::timestamptz - interval '1 microsecond', timestamptz '2000-01-01 00:00:00+00'),
                     date_bin('1 hour', now(), timestamptz '2000-01-01 00:00:00+00')) + interval '1 hour' AS end_hour,
               (SELECT s.folded_to FROM key_event_rollup_state AS s) AS folded_to,
               (SELECT s.ended_leases_to FROM key_event_rollup_state AS s) AS ended_leases_to
    ) AS r
), started (pool, hour, leases) AS (
    SELECT h.pool, h.hour, h.assigned
    FROM key_event_hours AS h
    WHERE h.hour >= (SELECT b.first_hour FROM bounds AS b) AND h.hour < (SELECT b.end_hour FROM bounds AS b)
    UNION ALL
    SELECT e.pool, date_bin('1 hour', e.at, timestamptz '2000-01-01 00:00:00+00'), 1
    FROM key_events AS e
    WHERE e.at >= (SELECT b.raw_from FROM bounds AS b) AND e.at < (SELECT b.open_end FROM bounds AS b)
      AND e.at < (SELECT b.end_hour FROM bounds AS b) AND e.event = 'assigned'
), ended (pool, hour, seconds) AS (
    SELECT d.pool, date_bin('1 hour', d.started_at, timestamptz '2000-01-01 00:00:00+00'), d.seconds
    FROM ended_leases AS d
    WHERE date_bin('1 hour', d.started_at, timestamptz '2000-01-01 00:00:00+00') >= (SELECT b.first_hour FROM bounds AS b)
      AND date_bin('1 hour', d.started_at, timestamptz '2000-01-01 00:00:00+00') < (SELECT b.end_hour FROM bounds AS b)
    UNION ALL
    SELECT lease.pool, date_bin('1 hour', lease.started_at, timestamptz '2000-01-01 00:00:00+00'), date_part('epoch', x.at - lease.started_at)::float8
    FROM key_events AS x
    -- The lease this end ends, if any (migrations 00017, 00018).
    CROSS JOIN LATERAL lease_start(x.key_id, x.seat, x.at, x.lease_token) AS lease (pool, started_at)
    WHERE x.at >= (SELECT b.ended_leases_to FROM bounds AS b) AND x.at < (SELECT b.open_end FROM bounds AS b)
      AND x.event IN ('released', 'lease_expired', 'deleted', 'expired') AND x.lease_token IS NOT NULL
      AND lease.started_at >= (SELECT b.first_hour FROM bounds AS b) AND lease.started_at < (SELECT b.end_hour FROM bounds AS b)
), leases AS (
    SELECT started.pool, started.hour, sum(started.leases) AS leases
    FROM started
    GROUP BY started.pool, started.hour
), durations AS (
    SELECT ended.pool, ended.hour, count(*) AS ended,
           avg(ended.seconds)::float8 AS mean_seconds,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY ended.seconds)::float8 AS p50_seconds,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY ended.seconds)::float8 AS p95_seconds,
           max(ended.seconds)::float8 AS max_seconds
    FROM ended
    GROUP BY ended.pool, ended.hour
)
SELECT leases.pool::text AS pool, leases.hour::timestamptz AS hour, leases.leases::bigint AS leases,
       coalesce(durations.ended, 0)::bigint AS ended,
       coalesce(durations.mean_seconds, 0)::float8 AS mean_seconds, coalesce(durations.p50_seconds, 0)::float8 AS p50_seconds,
       coalesce(durations.p95_seconds, 0)::float8 AS p95_seconds, coalesce(durations.max_seconds, 0)::float8 AS max_seconds
FROM leases
LEFT JOIN durations ON durations.pool = leases.pool AND durations.hour = leases.hour
WHERE leases.leases > 0
ORDER BY leases.pool, leases.hour;

-- name: LeaseActivityHourlyList :many
-- lease_activity_hourly of one pool: leases claimed, released, ended by the
-- background job and by deletion, and keep-alives of held keys per hour.
WITH bounds AS (
    SELECT date_bin('1 hour', sqlc.arg(range_from)::timestamptz, timestamptz '2000-01-01 00:00:00+00') AS first_hour,
           least(date_bin('1 hour', sqlc.arg(range_to)::timestamptz - interval '1 microsecond', timestamptz '2000-01-01 00:00:00+00'),
                 date_bin('1 hour', now(), timestamptz '2000-01-01 00:00:00+00')) + interval '1 hour' AS end_hour,
           (SELECT s.folded_to FROM key_event_rollup_state AS s) AS folded_to
), counts (pool, hour, assigned, released, lease_expired, ended_by_deletion, keep_alives) AS (
    SELECT h.pool, h.hour, h.assigned, h.released, h.lease_expired, h.deleted_leased + h.expired_leased, h.kept_alive_leased
    FROM key_event_hours AS h
    WHERE (h.pool, h.hour) >= (sqlc.arg(pool)::text, (SELECT b.first_hour FROM bounds AS b))
      AND (h.pool, h.hour) < (sqlc.arg(pool)::text, (SELECT b.end_hour FROM bounds AS b))
    UNION ALL
    SELECT e.pool, date_bin('1 hour', e.at, timestamptz '2000-01-01 00:00:00+00'),
           count(*) FILTER (WHERE e.event = 'assigned'),
           count(*) FILTER (WHERE e.event = 'released'),
           count(*) FILTER (WHERE e.event = 'lease_expired'),
           count(*) FILTER (WHERE e.event IN ('deleted', 'expired') AND e.lease_token IS NOT NULL),
           count(*) FILTER (WHERE e.event = 'kept_alive' AND e.lease_token IS NOT NULL)
    FROM key_events AS e
    WHERE (e.pool, e.at) >= (sqlc.arg(pool)::text, (SELECT greatest(b.first_hour, b.folded_to) FROM bounds AS b))
      AND (e.pool, e.at) < (sqlc.arg(pool)::text, (SELECT b.end_hour FROM bounds AS b))
    GROUP BY 1, 2
)
SELECT c.pool::text AS pool, c.hour::timestamptz AS hour,
       sum(c.assigned)::bigint AS claimed, sum(c.released)::bigint AS released,
       sum(c.lease_expired)::bigint AS lease_expired, sum(c.ended_by_deletion)::bigint AS ended_by_deletion,
       sum(c.keep_alives)::bigint AS keep_alives
FROM counts AS c
GROUP BY c.pool, c.hour
HAVING sum(c.assigned + c.released + c.lease_expired + c.ended_by_deletion + c.keep_alives) > 0
ORDER BY c.pool, c.hour;

-- name: LeaseActivityHourlyListAllPools :many
-- LeaseActivityHourlyList of every pool.
WITH bounds AS (
    SELECT date_bin('1 hour', sqlc.arg(range_from)::timestamptz, timestamptz '2000-01-01 00:00:00+00') AS first_hour,
           least(date_bin('1 hour', sqlc.arg(range_to)::timestamptz - interval '1 microsecond', timestamptz '2000-01-01 00:00:00+00'),
                 date_bin('1 hour', now(), timestamptz '2000-01-01 00:00:00+00')) + interval '1 hour' AS end_hour,
           (SELECT s.folded_to FROM key_event_rollup_state AS s) AS folded_to
), counts (pool, hour, assigned, released, lease_expired, ended_by_deletion, keep_alives) AS (
    SELECT h.pool, h.hour, h.assigned, h.released, h.lease_expired, h.deleted_leased + h.expired_leased, h.kept_alive_leased
    FROM key_event_hours AS h
    WHERE h.hour >= (SELECT b.first_hour FROM bounds AS b) AND h.hour < (SELECT b.end_hour FROM bounds AS b)
    UNION ALL
    SELECT e.pool, date_bin('1 hour', e.at, timestamptz '2000-01-01 00:00:00+00'),
           count(*) FILTER (WHERE e.event = 'assigned'),
           count(*) FILTER (WHERE e.event = 'released'),
           count(*) FILTER (WHERE e.event = 'lease_expired'),
           count(*) FILTER (WHERE e.event IN ('deleted', 'expired') AND e.lease_token IS NOT NULL),
           count(*) FILTER (WHERE e.event = 'kept_alive' AND e.lease_token IS NOT NULL)
    FROM key_events AS e
    WHERE e.at >= (SELECT greatest(b.first_hour, b.folded_to) FROM bounds AS b)
      AND e.at < (SELECT b.end_hour FROM bounds AS b)
    GROUP BY 1, 2
)
SELECT c.pool::text AS pool, c.hour::timestamptz AS hour,
       sum(c.assigned)::bigint AS claimed, sum(c.released)::bigint AS released,
       sum(c.lease_expired)::bigint AS lease_expired, sum(c.ended_by_deletion)::bigint AS ended_by_deletion,
       sum(c.keep_alives)::bigint AS keep_alives
FROM counts AS c
GROUP BY c.pool, c.hour
HAVING sum(c.assigned + c.released + c.lease_expired + c.ended_by_deletion + c.keep_alives) > 0
ORDER BY c.pool, c.hour;

-- name: KeyActivityHourlyList :many
-- key_activity_hourly of one pool: keys created, deleted and expired per hour.
WITH bounds AS (
    SELECT date_bin('1 hour', sqlc.arg(range_from)::timestamptz, timestamptz '2000-01-01 00:00:00+00') AS first_hour,
           least(date_bin('1 hour', sqlc.arg(range_to)::timestamptz - interval '1 microsecond', timestamptz '2000-01-01 00:00:00+00'),
                 date_bin('1 hour', now(), timestamptz '2000-01-01 00:00:00+00')) + interval '1 hour' AS end_hour,
           (SELECT s.folded_to FROM key_event_rollup_state AS s) AS folded_to
), counts (pool, hour, created, deleted, expired) AS (
    SELECT h.pool, h.hour, h.created, h.deleted, h.expired
    FROM key_event_hours AS h
    WHERE (h.pool, h.hour) >= (sqlc.arg(pool)::text, (SELECT b.first_hour FROM bounds AS b))
      AND (h.pool, h.hour) < (sqlc.arg(pool)::text, (SELECT b.end_hour FROM bounds AS b))
    UNION ALL
    SELECT e.pool, date_bin('1 hour', e.at, timestamptz '2000-01-01 00:00:00+00'),
           count(*) FILTER (WHERE e.event = 'created'),
           -- A key of several seats ends with an event per held seat, and
           -- counts once, by seat 0's (seat NULL or 0).
           count(*) FILTER (WHERE e.event = 'deleted' AND coalesce(e.seat, 0) = 0),
           count(*) FILTER (WHERE e.event = 'expired' AND coalesce(e.seat, 0) = 0)
    FROM key_events AS e
    WHERE (e.pool, e.at) >= (sqlc.arg(pool)::text, (SELECT greatest(b.first_hour, b.folded_to) FROM bounds AS b))
      AND (e.pool, e.at) < (sqlc.arg(pool)::text, (SELECT b.end_hour FROM bounds AS b))
    GROUP BY 1, 2
)
SELECT c.pool::text AS pool, c.hour::timestamptz AS hour,
       sum(c.created)::bigint AS created, sum(c.deleted)::bigint AS deleted, sum(c.expired)::bigint AS expired
FROM counts AS c
GROUP BY c.pool, c.hour
HAVING sum(c.created + c.deleted + c.expired) > 0
ORDER BY c.pool, c.hour;

-- name: KeyActivityHourlyListAllPools :many
-- KeyActivityHourlyList of every pool.
WITH bounds AS (
    SELECT date_bin('1 hour', sqlc.arg(range_from)::timestamptz, timestamptz '2000-01-01 00:00:00+00') AS first_hour,
           least(date_bin('1 hour', sqlc.arg(range_to)::timestamptz - interval '1 microsecond', timestamptz '2000-01-01 00:00:00+00'),
                 date_bin('1 hour', now(), timestamptz '2000-01-01 00:00:00+00')) + interval '1 hour' AS end_hour,
           (SELECT s.folded_to FROM key_event_rollup_state AS s) AS folded_to
), counts (pool, hour, created, deleted, expired) AS (
    SELECT h.pool, h.hour, h.created, h.deleted, h.expired
    FROM key_event_hours AS h
    WHERE h.hour >= (SELECT b.first_hour FROM bounds AS b) AND h.hour < (SELECT b.end_hour FROM bounds AS b)
    UNION ALL
    SELECT e.pool, date_bin('1 hour', e.at, timestamptz '2000-01-01 00:00:00+00'),
           count(*) FILTER (WHERE e.event = 'created'),
           -- A key of several seats ends with an event per held seat, and
           -- counts once, by seat 0's (seat NULL or 0).
           count(*) FILTER (WHERE e.event = 'deleted' AND coalesce(e.seat, 0) = 0),
           count(*) FILTER (WHERE e.event = 'expired' AND coalesce(e.seat, 0) = 0)
    FROM key_events AS e
    WHERE e.at >= (SELECT greatest(b.first_hour, b.folded_to) FROM bounds AS b)
      AND e.at < (SELECT b.end_hour FROM bounds AS b)
    GROUP BY 1, 2
)
SELECT c.pool::text AS pool, c.hour::timestamptz AS hour,
       sum(c.created)::bigint AS created, sum(c.deleted)::bigint AS deleted, sum(c.expired)::bigint AS expired
FROM counts AS c
GROUP BY c.pool, c.hour
HAVING sum(c.created + c.deleted + c.expired) > 0
ORDER BY c.pool, c.hour;

-- name: KeyCooldownsHourlyList :many
-- The keys that cool down most: key_cooldowns_hourly of one pool, per hour
-- the keys released with a cooldown (or cooled down after their lease),
-- most cooldowns first.
WITH bounds AS (
    SELECT date_bin('1 hour', sqlc.arg(range_from)::timestamptz, timestamptz '2000-01-01 00:00:00+00') AS first_hour,
           least(date_bin('1 hour', sqlc.arg(range_to)::timestamptz - interval '1 microsecond', timestamptz '2000-01-01 00:00:00+00'),
                 date_bin('1 hour', now(), timestamptz '2000-01-01 00:00:00+00')) + interval '1 hour' AS end_hour,
           (SELECT s.folded_to FROM key_event_rollup_state AS s) AS folded_to
), cells (pool, hour, key_id, cooldowns, total_cooldown, longest_cooldown) AS (
    SELECT c.pool, c.hour, c.key_id, c.cooldowns, c.total_cooldown, c.longest_cooldown
    FROM key_cooldown_hours AS c
    WHERE (c.pool, c.hour) >= (sqlc.arg(pool)::text, (SELECT b.first_hour FROM bounds AS b))
      AND (c.pool, c.hour) < (sqlc.arg(pool)::text, (SELECT b.end_hour FROM bounds AS b))
    UNION ALL
    SELECT e.pool, date_bin('1 hour', e.at, timestamptz '2000-01-01 00:00:00+00'), e.key_id, count(*), sum(e.cooldown), max(e.cooldown)
    FROM key_events AS e
    WHERE (e.pool, e.at) >= (sqlc.arg(pool)::text, (SELECT greatest(b.first_hour, b.folded_to) FROM bounds AS b))
      AND (e.pool, e.at) < (sqlc.arg(pool)::text, (SELECT b.end_hour FROM bounds AS b))
      AND e.event IN ('released', 'cooled_down') AND e.cooldown IS NOT NULL
    GROUP BY 1, 2, 3
), keys AS (
    SELECT cells.pool, cells.hour, cells.key_id, sum(cells.cooldowns)::bigint AS cooldowns,
           date_part('epoch', sum(cells.total_cooldown))::float8 AS total_seconds,
           date_part('epoch', max(cells.longest_cooldown))::float8 AS max_seconds
    FROM cells
    GROUP BY cells.pool, cells.hour, cells.key_id
)
SELECT keys.pool::text AS pool, keys.hour::timestamptz AS hour, keys.key_id::uuid AS key_id, keys.cooldowns,
       keys.total_seconds, keys.max_seconds
FROM keys
WHERE keys.cooldowns > 0
ORDER BY keys.pool, keys.hour, keys.cooldowns DESC, keys.total_seconds DESC, keys.key_id;

-- name: KeyCooldownsHourlyListAllPools :many
-- KeyCooldownsHourlyList of every pool.
WITH bounds AS (
    SELECT date_bin('1 hour', sqlc.arg(range_from)::timestamptz, timestamptz '2000-01-01 00:00:00+00') AS first_hour,
           least(date_bin('1 hour', sqlc.arg(range_to)::timestamptz - interval '1 microsecond', timestamptz '2000-01-01 00:00:00+00'),
                 date_bin('1 hour', now(), timestamptz '2000-01-01 00:00:00+00')) + interval '1 hour' AS end_hour,
           (SELECT s.folded_to FROM key_event_rollup_state AS s) AS folded_to
), cells (pool, hour, key_id, cooldowns, total_cooldown, longest_cooldown) AS (
    SELECT c.pool, c.hour, c.key_id, c.cooldowns, c.total_cooldown, c.longest_cooldown
    FROM key_cooldown_hours AS c
    WHERE c.hour >= (SELECT b.first_hour FROM bounds AS b) AND c.hour < (SELECT b.end_hour FROM bounds AS b)
    UNION ALL
    SELECT e.pool, date_bin('1 hour', e.at, timestamptz '2000-01-01 00:00:00+00'), e.key_id, count(*), sum(e.cooldown), max(e.cooldown)
    FROM key_events AS e
    WHERE e.at >= (SELECT greatest(b.first_hour, b.folded_to) FROM bounds AS b)
      AND e.at < (SELECT b.end_hour FROM bounds AS b)
      AND e.event IN ('released', 'cooled_down') AND e.cooldown IS NOT NULL
    GROUP BY 1, 2, 3
), keys AS (
    SELECT cells.pool, cells.hour, cells.key_id, sum(cells.cooldowns)::bigint AS cooldowns,
           date_part('epoch', sum(cells.total_cooldown))::float8 AS total_seconds,
           date_part('epoch', max(cells.longest_cooldown))::float8 AS max_seconds
    FROM cells
    GROUP BY cells.pool, cells.hour, cells.key_id
)
SELECT keys.pool::text AS pool, keys.hour::timestamptz AS hour, keys.key_id::uuid AS key_id, keys.cooldowns,
       keys.total_seconds, keys.max_seconds
FROM keys
WHERE keys.cooldowns > 0
ORDER BY keys.pool, keys.hour, keys.cooldowns DESC, keys.total_seconds DESC, keys.key_id;

-- name: PoolUtilisationList :many
-- The utilisation of one pool: per hour overlapping the range, the
-- key-seconds (keys existing, summed over the hour; up to now for the
-- current hour), the seat-seconds (their seats), the held seconds (seats
-- under a lease) and the share of seat-time held, exactly as
-- pool_utilisation(range_from, range_to, pool) of migration 00019 counts
-- them: the keys, seats and held seats at the start of each hour are the
-- pool's counts now minus every change since, and each change adds or takes
-- away the seconds from its moment to the end of its hour. The changes come
-- from the hourly rollup for the hours that have ended before folded_to,
-- from the minute rollup for the minutes of the hour after (up to the
-- current minute: the events of the rows read are before now, where the
-- current hour's cells end), and from key_events after that.
WITH bounds AS (
    -- One row, whatever the statistics of the one-row table say: scalar
    -- subqueries, not a join.
    SELECT date_bin('1 hour', sqlc.arg(range_from)::timestamptz, timestamptz '2000-01-01 00:00:00+00') AS first_hour,
           f.folded_to,
           date_bin('1 hour', least(f.folded_to, now()), timestamptz '2000-01-01 00:00:00+00') AS split_hour,
           date_bin('1 minute', least(f.folded_to, now()), timestamptz '2000-01-01 00:00:00+00') AS split_minute,
           (SELECT o.at FROM key_events AS o ORDER BY o.at LIMIT 1) AS oldest,
           -- The end of the ranges that run to the newest event, a value
           -- the planner does not see: it then prices such a range as the
           -- short one it is, not as a third of the table.
           'infinity'::timestamptz AS open_end
    FROM (SELECT (SELECT s.folded_to FROM key_event_rollup_state AS s) AS folded_to) AS f
), pools AS (
    -- history_hours lists the pool while it has history.
    SELECT sqlc.arg(pool)::text AS pool
    -- Each the first entry of a range on its (pool, time) index: scalar
    -- subqueries keep the order and the limit that an EXISTS would drop.
    WHERE (SELECT h.hour FROM key_event_hours AS h
           WHERE (h.pool, h.hour) >= (sqlc.arg(pool)::text, '-infinity'::timestamptz)
             AND (h.pool, h.hour) < (sqlc.arg(pool)::text, 'infinity'::timestamptz)
           ORDER BY h.pool, h.hour
           LIMIT 1) IS NOT NULL
       OR (SELECT t.at FROM key_events AS t
           WHERE (t.pool, t.at) >= (sqlc.arg(pool)::text, (SELECT b.folded_to FROM bounds AS b))
             AND (t.pool, t.at) < (sqlc.arg(pool)::text, (SELECT b.open_end FROM bounds AS b))
           ORDER BY t.pool, t.at
           LIMIT 1) IS NOT NULL
), cells AS (
    -- history_hours: every pool with history, every hour from the oldest
    -- event's to now; those that overlap the range.
    SELECT pools.pool, hours.hour, least(hours.hour + interval '1 hour', now()) AS hour_end
    FROM bounds AS b
    CROSS JOIN pools
    CROSS JOIN generate_series(greatest(date_bin('1 hour', b.oldest, timestamptz '2000-01-01 00:00:00+00'), b.first_hour), now(), interval '1 hour') AS hours (hour)
    WHERE hours.hour < sqlc.arg(range_to)::timestamptz
), changes (pool, hour, net_keys, net_held, keys_added, held_added, net_seats, seats_added) AS (
    -- The change of each hour from the range's first hour on to the pool's
    -- keys, held seats and seats, and the seconds it adds to the hour's.
    SELECT h.pool, h.hour,
           h.created - h.deleted - h.expired,
           h.assigned - h.released - h.lease_expired - h.deleted_leased - h.expired_leased,
           ((h.created - h.deleted - h.expired) * 3600 - h.keys_offset_us / 1000000.0)::float8,
           ((h.assigned - h.released - h.lease_expired - h.deleted_leased - h.expired_leased) * 3600 - h.held_offset_us / 1000000.0)::float8,
           h.seats,
           (h.seats * 3600 - h.seats_offset_us / 1000000.0)::float8
    FROM key_event_hours AS h
    WHERE (h.pool, h.hour) >= (sqlc.arg(pool)::text, (SELECT b.first_hour FROM bounds AS b))
      AND (h.pool, h.hour) < (sqlc.arg(pool)::text, (SELECT b.split_hour FROM bounds AS b))
    UNION ALL
    SELECT m.pool, date_bin('1 hour', m.minute, timestamptz '2000-01-01 00:00:00+00'),
           m.created - m.deleted - m.expired,
           m.assigned - m.released - m.lease_expired - m.deleted_leased - m.expired_leased,
           ((m.created - m.deleted - m.expired)
               * extract(epoch FROM least(date_bin('1 hour', m.minute, timestamptz '2000-01-01 00:00:00+00') + interval '1 hour', now()) - m.minute)
               - m.keys_offset_us / 1000000.0)::float8,
           ((m.assigned - m.released - m.lease_expired - m.deleted_leased - m.expired_leased)
               * extract(epoch FROM least(date_bin('1 hour', m.minute, timestamptz '2000-01-01 00:00:00+00') + interval '1 hour', now()) - m.minute)
               - m.held_offset_us / 1000000.0)::float8,
           m.seats,
           (m.seats
               * extract(epoch FROM least(date_bin('1 hour', m.minute, timestamptz '2000-01-01 00:00:00+00') + interval '1 hour', now()) - m.minute)
               - m.seats_offset_us / 1000000.0)::float8
    FROM key_event_minutes AS m
    WHERE (m.pool, m.minute) >= (sqlc.arg(pool)::text, (SELECT greatest(b.split_hour, b.first_hour) FROM bounds AS b))
      AND (m.pool, m.minute) < (sqlc.arg(pool)::text, (SELECT b.split_minute FROM bounds AS b))
    UNION ALL
    SELECT c.pool, date_bin('1 hour', c.at, timestamptz '2000-01-01 00:00:00+00'), c.keys, c.held,
           c.keys * date_part('epoch', greatest(least(date_bin('1 hour', c.at, timestamptz '2000-01-01 00:00:00+00') + interval '1 hour', now()) - c.at, interval '0')),
           c.held * date_part('epoch', greatest(least(date_bin('1 hour', c.at, timestamptz '2000-01-01 00:00:00+00') + interval '1 hour', now()) - c.at, interval '0')),
           c.seats,
           c.seats * date_part('epoch', greatest(least(date_bin('1 hour', c.at, timestamptz '2000-01-01 00:00:00+00') + interval '1 hour', now()) - c.at, interval '0'))
    FROM (
        SELECT e.pool, e.at,
               CASE WHEN e.event = 'created' THEN 1
                    WHEN e.event IN ('deleted', 'expired') AND coalesce(e.seat, 0) = 0 THEN -1
                    ELSE 0 END AS keys,
               CASE WHEN e.event = 'assigned' THEN 1
                    WHEN e.event IN ('released', 'lease_expired') THEN -1
                    WHEN e.event IN ('deleted', 'expired') AND e.lease_token IS NOT NULL THEN -1
                    ELSE 0 END AS held,
               CASE WHEN e.event = 'created' THEN coalesce(e.seats, 1)
                    WHEN e.event IN ('deleted', 'expired') AND coalesce(e.seat, 0) = 0 THEN -coalesce(e.seats, 1)
                    ELSE 0 END AS seats
        FROM key_events AS e
        WHERE (e.pool, e.at) >= (sqlc.arg(pool)::text, (SELECT greatest(b.split_minute, b.first_hour) FROM bounds AS b))
      AND (e.pool, e.at) < (sqlc.arg(pool)::text, (SELECT b.open_end FROM bounds AS b))
    ) AS c
), hourly AS (
    SELECT changes.pool, changes.hour, sum(changes.net_keys) AS net_keys, sum(changes.net_held) AS net_held,
           sum(changes.keys_added) AS keys_added, sum(changes.held_added) AS held_added,
           sum(changes.net_seats) AS net_seats, sum(changes.seats_added) AS seats_added
    FROM changes
    GROUP BY changes.pool, changes.hour
), later AS (
    -- The change per pool after the last hour of the range.
    SELECT hourly.pool, sum(hourly.net_keys) AS keys, sum(hourly.net_held) AS held, sum(hourly.net_seats) AS seats
    FROM hourly
    WHERE hourly.hour > (SELECT max(cells.hour) FROM cells)
    GROUP BY hourly.pool
), current AS (
    SELECT sqlc.arg(pool)::text AS pool, sum(p.keys) AS keys, sum(p.blocked) AS held, sum(p.seats) AS seats
    FROM pool_counts AS p
    WHERE p.pool = sqlc.arg(pool)::text
), starts AS (
    -- Keys and held seats at the start of each hour, counted back from now.
    SELECT cells.pool, cells.hour, cells.hour_end,
           coalesce(hourly.keys_added, 0) AS keys_added, coalesce(hourly.held_added, 0) AS held_added,
           coalesce(hourly.seats_added, 0) AS seats_added,
           coalesce(current.keys, 0) - coalesce(later.keys, 0)
               - sum(coalesce(hourly.net_keys, 0)) OVER back AS keys_at_start,
           coalesce(current.held, 0) - coalesce(later.held, 0)
               - sum(coalesce(hourly.net_held, 0)) OVER back AS held_at_start,
           coalesce(current.seats, 0) - coalesce(later.seats, 0)
               - sum(coalesce(hourly.net_seats, 0)) OVER back AS seats_at_start
    FROM cells
    LEFT JOIN hourly ON hourly.pool = cells.pool AND hourly.hour = cells.hour
    LEFT JOIN later ON later.pool = cells.pool
    LEFT JOIN current ON current.pool = cells.pool
    WINDOW back AS (PARTITION BY cells.pool ORDER BY cells.hour DESC)
), seconds AS (
    SELECT starts.pool, starts.hour,
           (starts.keys_at_start * date_part('epoch', starts.hour_end - starts.hour) + starts.keys_added)::float8 AS key_seconds,
           (starts.held_at_start * date_part('epoch', starts.hour_end - starts.hour) + starts.held_added)::float8 AS held_seconds,
           (starts.seats_at_start * date_part('epoch', starts.hour_end - starts.hour) + starts.seats_added)::float8 AS seat_seconds
    FROM starts
)
SELECT seconds.pool::text AS pool, seconds.hour::timestamptz AS hour, seconds.key_seconds, seconds.seat_seconds, seconds.held_seconds,
       (seconds.held_seconds / seconds.seat_seconds)::float8 AS utilisation
FROM seconds
WHERE seconds.seat_seconds > 0
ORDER BY seconds.pool, seconds.hour;

-- name: PoolUtilisationListAllPools :many
-- PoolUtilisationList of every pool with history. A pool's utilisation in
-- the range is other than zero only if it had keys then: it has a change
-- from the range's first hour on (hourly, which the statement reads
-- anyway), or it has keys now. So the pools are those of hourly, and those
-- with keys now (their counts, totals and changes not folded yet, read
-- once for every pool) that have history (one probe each, as
-- PoolUtilisationList makes it), and only the latter are probed. A loose
-- index scan of the hourly rollup, one probe per pool with history, cost
-- 6,000 buffers at 2,000 pools, and the counts of pool_counts, the
-- changes searched once per pool, up to 108,000.
WITH bounds AS (
    -- One row, whatever the statistics of the one-row table say: scalar
    -- subqueries, not a join.
    SELECT date_bin('1 hour', sqlc.arg(range_from)::timestamptz, timestamptz '2000-01-01 00:00:00+00') AS first_hour,
           f.folded_to,
           date_bin('1 hour', least(f.folded_to, now()), timestamptz '2000-01-01 00:00:00+00') AS split_hour,
           date_bin('1 minute', least(f.folded_to, now()), timestamptz '2000-01-01 00:00:00+00') AS split_minute,
           (SELECT o.at FROM key_events AS o ORDER BY o.at LIMIT 1) AS oldest,
           -- The end of the ranges that run to the newest event, a value
           -- the planner does not see: it then prices such a range as the
           -- short one it is, not as a third of the table.
           'infinity'::timestamptz AS open_end
    FROM (SELECT (SELECT s.folded_to FROM key_event_rollup_state AS s) AS folded_to) AS f
), changes (pool, hour, net_keys, net_held, keys_added, held_added, net_seats, seats_added) AS (
    -- The change of each hour from the range's first hour on to the pool's
    -- keys, held seats and seats, and the seconds it adds to the hour's.
    SELECT h.pool, h.hour,
           h.created - h.deleted - h.expired,
           h.assigned - h.released - h.lease_expired - h.deleted_leased - h.expired_leased,
           ((h.created - h.deleted - h.expired) * 3600 - h.keys_offset_us / 1000000.0)::float8,
           ((h.assigned - h.released - h.lease_expired - h.deleted_leased - h.expired_leased) * 3600 - h.held_offset_us / 1000000.0)::float8,
           h.seats,
           (h.seats * 3600 - h.seats_offset_us / 1000000.0)::float8
    FROM key_event_hours AS h
    WHERE h.hour >= (SELECT b.first_hour FROM bounds AS b) AND h.hour < (SELECT b.split_hour FROM bounds AS b)
    UNION ALL
    SELECT m.pool, date_bin('1 hour', m.minute, timestamptz '2000-01-01 00:00:00+00'),
           m.created - m.deleted - m.expired,
           m.assigned - m.released - m.lease_expired - m.deleted_leased - m.expired_leased,
           ((m.created - m.deleted - m.expired)
               * extract(epoch FROM least(date_bin('1 hour', m.minute, timestamptz '2000-01-01 00:00:00+00') + interval '1 hour', now()) - m.minute)
               - m.keys_offset_us / 1000000.0)::float8,
           ((m.assigned - m.released - m.lease_expired - m.deleted_leased - m.expired_leased)
               * extract(epoch FROM least(date_bin('1 hour', m.minute, timestamptz '2000-01-01 00:00:00+00') + interval '1 hour', now()) - m.minute)
               - m.held_offset_us / 1000000.0)::float8,
           m.seats,
           (m.seats
               * extract(epoch FROM least(date_bin('1 hour', m.minute, timestamptz '2000-01-01 00:00:00+00') + interval '1 hour', now()) - m.minute)
               - m.seats_offset_us / 1000000.0)::float8
    FROM key_event_minutes AS m
    WHERE m.minute >= (SELECT greatest(b.split_hour, b.first_hour) FROM bounds AS b)
      AND m.minute < (SELECT b.split_minute FROM bounds AS b) AND m.pool <> ''
    UNION ALL
    SELECT c.pool, date_bin('1 hour', c.at, timestamptz '2000-01-01 00:00:00+00'), c.keys, c.held,
           c.keys * date_part('epoch', greatest(least(date_bin('1 hour', c.at, timestamptz '2000-01-01 00:00:00+00') + interval '1 hour', now()) - c.at, interval '0')),
           c.held * date_part('epoch', greatest(least(date_bin('1 hour', c.at, timestamptz '2000-01-01 00:00:00+00') + interval '1 hour', now()) - c.at, interval '0')),
           c.seats,
           c.seats * date_part('epoch', greatest(least(date_bin('1 hour', c.at, timestamptz '2000-01-01 00:00:00+00') + interval '1 hour', now()) - c.at, interval '0'))
    FROM (
        SELECT e.pool, e.at,
               CASE WHEN e.event = 'created' THEN 1
                    WHEN e.event IN ('deleted', 'expired') AND coalesce(e.seat, 0) = 0 THEN -1
                    ELSE 0 END AS keys,
               CASE WHEN e.event = 'assigned' THEN 1
                    WHEN e.event IN ('released', 'lease_expired') THEN -1
                    WHEN e.event IN ('deleted', 'expired') AND e.lease_token IS NOT NULL THEN -1
                    ELSE 0 END AS held,
               CASE WHEN e.event = 'created' THEN coalesce(e.seats, 1)
                    WHEN e.event IN ('deleted', 'expired') AND coalesce(e.seat, 0) = 0 THEN -coalesce(e.seats, 1)
                    ELSE 0 END AS seats
        FROM key_events AS e
        WHERE e.at >= (SELECT greatest(b.split_minute, b.first_hour) FROM bounds AS b)
          AND e.at < (SELECT b.open_end FROM bounds AS b)
    ) AS c
), hourly AS (
    SELECT changes.pool, changes.hour, sum(changes.net_keys) AS net_keys, sum(changes.net_held) AS net_held,
           sum(changes.keys_added) AS keys_added, sum(changes.held_added) AS held_added,
           sum(changes.net_seats) AS net_seats, sum(changes.seats_added) AS seats_added
    FROM changes
    GROUP BY changes.pool, changes.hour
), current AS (
    -- Every pool's counts now, as pool_counts adds them up: its totals and
    -- the changes not folded into them yet, in one join (the view's
    -- lateral searches the changes once per pool).
    SELECT t.pool, t.keys + coalesce(sum(c.keys), 0) AS keys, t.blocked + coalesce(sum(c.blocked), 0) AS held,
           t.seats + coalesce(sum(coalesce(c.seats, c.keys)), 0) AS seats
    FROM pool_count_totals AS t
    LEFT JOIN pool_count_changes AS c ON c.pool = t.pool AND c.xid >= t.horizon
    GROUP BY t.pool, t.keys, t.blocked, t.seats
), unchanged AS MATERIALIZED (
    -- The pools with keys now and no change since the range's first hour:
    -- found before any of them is probed (MATERIALIZED: as one query, the
    -- planner probed every pool with keys, then left those of hourly out).
    SELECT current.pool FROM current
    WHERE current.keys > 0
      AND NOT EXISTS (SELECT 1 FROM hourly WHERE hourly.pool = current.pool)
), pools AS (
    SELECT DISTINCT hourly.pool FROM hourly
    UNION ALL
    SELECT u.pool FROM unchanged AS u
    -- history_hours lists the pool while it has history: the first entry
    -- of its range on each (pool, time) index.
    WHERE (SELECT f.hour FROM key_event_hours AS f
           WHERE (f.pool, f.hour) >= (u.pool, '-infinity'::timestamptz)
             AND (f.pool, f.hour) < (u.pool, 'infinity'::timestamptz)
           ORDER BY f.pool, f.hour
           LIMIT 1) IS NOT NULL
       OR (SELECT t.at FROM key_events AS t
           WHERE (t.pool, t.at) >= (u.pool, (SELECT b.folded_to FROM bounds AS b))
             AND (t.pool, t.at) < (u.pool, (SELECT b.open_end FROM bounds AS b))
           ORDER BY t.pool, t.at
           LIMIT 1) IS NOT NULL
), cells AS (
    -- history_hours: every pool with history, every hour from the oldest
    -- event's to now; those that overlap the range.
    SELECT pools.pool, hours.hour, least(hours.hour + interval '1 hour', now()) AS hour_end
    FROM bounds AS b
    CROSS JOIN pools
    CROSS JOIN generate_series(greatest(date_bin('1 hour', b.oldest, timestamptz '2000-01-01 00:00:00+00'), b.first_hour), now(), interval '1 hour') AS hours (hour)
    WHERE hours.hour < sqlc.arg(range_to)::timestamptz
), later AS (
    -- The change per pool after the last hour of the range.
    SELECT hourly.pool, sum(hourly.net_keys) AS keys, sum(hourly.net_held) AS held, sum(hourly.net_seats) AS seats
    FROM hourly
    WHERE hourly.hour > (SELECT max(cells.hour) FROM cells)
    GROUP BY hourly.pool
), starts AS (
    -- Keys and held seats at the start of each hour, counted back from now.
    SELECT cells.pool, cells.hour, cells.hour_end,
           coalesce(hourly.keys_added, 0) AS keys_added, coalesce(hourly.held_added, 0) AS held_added,
           coalesce(hourly.seats_added, 0) AS seats_added,
           coalesce(current.keys, 0) - coalesce(later.keys, 0)
               - sum(coalesce(hourly.net_keys, 0)) OVER back AS keys_at_start,
           coalesce(current.held, 0) - coalesce(later.held, 0)
               - sum(coalesce(hourly.net_held, 0)) OVER back AS held_at_start,
           coalesce(current.seats, 0) - coalesce(later.seats, 0)
               - sum(coalesce(hourly.net_seats, 0)) OVER back AS seats_at_start
    FROM cells
    LEFT JOIN hourly ON hourly.pool = cells.pool AND hourly.hour = cells.hour
    LEFT JOIN later ON later.pool = cells.pool
    LEFT JOIN current ON current.pool = cells.pool
    WINDOW back AS (PARTITION BY cells.pool ORDER BY cells.hour DESC)
), seconds AS (
    SELECT starts.pool, starts.hour,
           (starts.keys_at_start * date_part('epoch', starts.hour_end - starts.hour) + starts.keys_added)::float8 AS key_seconds,
           (starts.held_at_start * date_part('epoch', starts.hour_end - starts.hour) + starts.held_added)::float8 AS held_seconds,
           (starts.seats_at_start * date_part('epoch', starts.hour_end - starts.hour) + starts.seats_added)::float8 AS seat_seconds
    FROM starts
)
SELECT seconds.pool::text AS pool, seconds.hour::timestamptz AS hour, seconds.key_seconds, seconds.seat_seconds, seconds.held_seconds,
       (seconds.held_seconds / seconds.seat_seconds)::float8 AS utilisation
FROM seconds
WHERE seconds.seat_seconds > 0
ORDER BY seconds.pool, seconds.hour;

-- name: KeyLeasesDurationHistogram :many
-- The leases of the pool that started in the last minutes minutes, counted
-- by duration as key_leases tells them: bucket b (lease_duration_bucket,
-- migration 00015) the ended ones, bucket -1 those still held. Those that
-- started in the range's whole minutes before folded_to are the rollups'
-- (lease_duration_minutes the ended, the rest of the minute's assigned
-- events held), with the ends written since folded_to moving them from held
-- to their bucket; those of the part minute at the range's start and those
-- from folded_to on are read from key_events, with the end of each one step
-- along its key's events.
WITH bounds AS (
    -- open_end: as in PoolUtilisationList.
    SELECT r.start, r.first_minute, r.folded_to, greatest(r.folded_to, r.first_minute) AS raw_from,
           'infinity'::timestamptz AS open_end
    FROM (
        SELECT now() - sqlc.arg(minutes)::int * interval '1 minute' AS start,
               -- The first whole minute of the range.
               date_bin('1 minute', now() - sqlc.arg(minutes)::int * interval '1 minute' - interval '1 microsecond', timestamptz '2000-01-01 00:00:00+00')
                   + interval '1 minute' AS first_minute,
               (SELECT s.folded_to FROM key_event_rollup_state AS s) AS folded_to
    ) AS r
), folded_ended AS (
    SELECT d.bucket, sum(d.leases) AS leases
    FROM lease_duration_minutes AS d
    WHERE (d.pool, d.minute) >= (sqlc.arg(pool)::text, (SELECT b.first_minute FROM bounds AS b)) AND (d.pool, d.minute) < (sqlc.arg(pool)::text, (SELECT b.open_end FROM bounds AS b))
    GROUP BY d.bucket
), folded_started AS (
    SELECT coalesce(sum(m.assigned), 0) AS leases
    FROM key_event_minutes AS m
    WHERE (m.pool, m.minute) >= (sqlc.arg(pool)::text, (SELECT b.first_minute FROM bounds AS b)) AND (m.pool, m.minute) < (sqlc.arg(pool)::text, (SELECT b.open_end FROM bounds AS b))
), late_ends AS (
    -- Ends since folded_to of leases that the rollups count as held.
    SELECT lease_duration_bucket(date_part('epoch', ended.at - lease.started_at)::float8) AS bucket
    FROM key_events AS ended
    -- The lease this end ends, if any (migrations 00017, 00018).
    CROSS JOIN LATERAL lease_start(ended.key_id, ended.seat, ended.at, ended.lease_token) AS lease (pool, started_at)
    WHERE (ended.pool, ended.at) >= (sqlc.arg(pool)::text, (SELECT b.folded_to FROM bounds AS b)) AND (ended.pool, ended.at) < (sqlc.arg(pool)::text, (SELECT b.open_end FROM bounds AS b))
      AND ended.event IN ('released', 'lease_expired', 'deleted', 'expired') AND ended.lease_token IS NOT NULL
      AND lease.started_at >= (SELECT b.first_minute FROM bounds AS b) AND lease.started_at < (SELECT b.folded_to FROM bounds AS b)
), raw_started AS (
    -- Leases of the part minute at the range's start, and from folded_to on.
    -- The part minute's bounds are plain conditions: a (pool, time) row as
    -- the upper bound does not end the range (PostgreSQL ends it only where
    -- the row's first column, the pool, passes it), which then read the
    -- pool's index entries of the whole range, 203 buffers at 1,000,000
    -- keys with 5% of them claimed in the hour.
    SELECT p.key_id, p.seat, p.at, p.lease_token
    FROM key_events AS p
    WHERE p.pool = sqlc.arg(pool)::text
      AND p.at >= (SELECT b.start FROM bounds AS b) AND p.at < (SELECT b.first_minute FROM bounds AS b)
      AND p.event = 'assigned'
    UNION ALL
    SELECT r.key_id, r.seat, r.at, r.lease_token
    FROM key_events AS r
    WHERE (r.pool, r.at) >= (sqlc.arg(pool)::text, (SELECT b.raw_from FROM bounds AS b)) AND (r.pool, r.at) < (sqlc.arg(pool)::text, (SELECT b.open_end FROM bounds AS b))
      AND r.event = 'assigned'
), raw_leases AS (
    SELECT coalesce(lease_duration_bucket(date_part('epoch', ended.at - raw_started.at)::float8), -1) AS bucket
    FROM raw_started
    LEFT JOIN LATERAL (
        SELECT e.at, e.lease_token FROM key_events AS e
        -- The end of the lease's own seat; a CASE, as in key_leases
        -- (migration 00018).
        WHERE e.key_id = raw_started.key_id AND e.at > raw_started.at
          AND CASE WHEN e.event IN ('released', 'lease_expired', 'deleted', 'expired') THEN coalesce(e.seat, 0) = coalesce(raw_started.seat, 0) ELSE false END
        ORDER BY e.at
        LIMIT 1
    ) AS ended ON ended.lease_token = raw_started.lease_token
), buckets (bucket, leases) AS (
    SELECT folded_ended.bucket, folded_ended.leases FROM folded_ended
    UNION ALL
    SELECT -1, (SELECT folded_started.leases FROM folded_started) - coalesce((SELECT sum(folded_ended.leases) FROM folded_ended), 0)
    UNION ALL
    SELECT late_ends.bucket, 1 FROM late_ends
    UNION ALL
    SELECT -1, -count(*) FROM late_ends
    UNION ALL
    SELECT raw_leases.bucket, 1 FROM raw_leases
)
SELECT buckets.bucket::int AS bucket, sum(buckets.leases)::bigint AS leases
FROM buckets
GROUP BY buckets.bucket
HAVING sum(buckets.leases) <> 0
ORDER BY buckets.bucket;

-- name: KeyLeasesDurationHistogramAllPools :many
-- KeyLeasesDurationHistogram of every pool: the rollups' rows of the
-- empty pool name (the sum of every pool), and ranges on key_events_at_idx.
WITH bounds AS (
    -- open_end: as in PoolUtilisationList.
    SELECT r.start, r.first_minute, r.folded_to, greatest(r.folded_to, r.first_minute) AS raw_from,
           'infinity'::timestamptz AS open_end
    FROM (
        SELECT now() - sqlc.arg(minutes)::int * interval '1 minute' AS start,
               -- The first whole minute of the range.
               date_bin('1 minute', now() - sqlc.arg(minutes)::int * interval '1 minute' - interval '1 microsecond', timestamptz '2000-01-01 00:00:00+00')
                   + interval '1 minute' AS first_minute,
               (SELECT s.folded_to FROM key_event_rollup_state AS s) AS folded_to
    ) AS r
), folded_ended AS (
    SELECT d.bucket, sum(d.leases) AS leases
    FROM lease_duration_minutes AS d
    WHERE (d.pool, d.minute) >= ('', (SELECT b.first_minute FROM bounds AS b)) AND (d.pool, d.minute) < ('', (SELECT b.open_end FROM bounds AS b))
    GROUP BY d.bucket
), folded_started AS (
    SELECT coalesce(sum(m.assigned), 0) AS leases
    FROM key_event_minutes AS m
    WHERE (m.pool, m.minute) >= ('', (SELECT b.first_minute FROM bounds AS b)) AND (m.pool, m.minute) < ('', (SELECT b.open_end FROM bounds AS b))
), late_ends AS (
    -- Ends since folded_to of leases that the rollups count as held.
    SELECT lease_duration_bucket(date_part('epoch', ended.at - lease.started_at)::float8) AS bucket
    FROM key_events AS ended
    -- The lease this end ends, if any (migrations 00017, 00018).
    CROSS JOIN LATERAL lease_start(ended.key_id, ended.seat, ended.at, ended.lease_token) AS lease (pool, started_at)
    WHERE ended.at >= (SELECT b.folded_to FROM bounds AS b) AND ended.at < (SELECT b.open_end FROM bounds AS b)
      AND ended.event IN ('released', 'lease_expired', 'deleted', 'expired') AND ended.lease_token IS NOT NULL
      AND lease.started_at >= (SELECT b.first_minute FROM bounds AS b) AND lease.started_at < (SELECT b.folded_to FROM bounds AS b)
), raw_started AS (
    -- Leases of the part minute at the range's start, and from folded_to on.
    SELECT r.key_id, r.seat, r.at, r.lease_token
    FROM key_events AS r
    WHERE r.at >= (SELECT b.start FROM bounds AS b) AND r.at < (SELECT b.first_minute FROM bounds AS b)
      AND r.event = 'assigned'
    UNION ALL
    SELECT r.key_id, r.seat, r.at, r.lease_token
    FROM key_events AS r
    WHERE r.at >= (SELECT b.raw_from FROM bounds AS b) AND r.at < (SELECT b.open_end FROM bounds AS b)
      AND r.event = 'assigned'
), raw_leases AS (
    SELECT coalesce(lease_duration_bucket(date_part('epoch', ended.at - raw_started.at)::float8), -1) AS bucket
    FROM raw_started
    LEFT JOIN LATERAL (
        SELECT e.at, e.lease_token FROM key_events AS e
        -- The end of the lease's own seat; a CASE, as in key_leases
        -- (migration 00018).
        WHERE e.key_id = raw_started.key_id AND e.at > raw_started.at
          AND CASE WHEN e.event IN ('released', 'lease_expired', 'deleted', 'expired') THEN coalesce(e.seat, 0) = coalesce(raw_started.seat, 0) ELSE false END
        ORDER BY e.at
        LIMIT 1
    ) AS ended ON ended.lease_token = raw_started.lease_token
), buckets (bucket, leases) AS (
    SELECT folded_ended.bucket, folded_ended.leases FROM folded_ended
    UNION ALL
    SELECT -1, (SELECT folded_started.leases FROM folded_started) - coalesce((SELECT sum(folded_ended.leases) FROM folded_ended), 0)
    UNION ALL
    SELECT late_ends.bucket, 1 FROM late_ends
    UNION ALL
    SELECT -1, -count(*) FROM late_ends
    UNION ALL
    SELECT raw_leases.bucket, 1 FROM raw_leases
)
SELECT buckets.bucket::int AS bucket, sum(buckets.leases)::bigint AS leases
FROM buckets
GROUP BY buckets.bucket
HAVING sum(buckets.leases) <> 0
ORDER BY buckets.bucket;

