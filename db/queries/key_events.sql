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
 -- A lease written before seats (no seat) is one of seat 0.
 AND coalesce(second.seat, 0) = coalesce(first.seat, 0)
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
--
-- It takes the deleted events that a fold had counted (those before
-- folded_to) out of the rollups (migration 00015), in the transaction that
-- KeyEventRollupsLockForRetention began: counts are subtracted; a lease
-- whose start goes takes its duration out of its minute's bucket (its end,
-- later, is never deleted first) and its row out of ended_leases; a key's
-- cooldowns of an hour are counted again from the events of that hour that
-- stay.
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
    RETURNING e.ctid AS row, e.at, e.key_id, e.pool, e.event, e.lease_token, e.cooldown, e.seat, e.seats
), folded AS (
    SELECT deleted.row, deleted.at, deleted.key_id, deleted.seat, deleted.pool, deleted.event, deleted.lease_token, deleted.cooldown,
           date_bin('1 minute', deleted.at, timestamptz '2000-01-01 00:00:00+00') AS minute,
           date_bin('1 hour', deleted.at, timestamptz '2000-01-01 00:00:00+00') AS hour,
           deleted.event IN ('deleted', 'expired') AND coalesce(deleted.seat, 0) = 0 AS key_ended,
           CASE WHEN deleted.event = 'created' THEN 1
                WHEN deleted.event IN ('deleted', 'expired') AND coalesce(deleted.seat, 0) = 0 THEN -1
                ELSE 0 END AS keys,
           CASE WHEN deleted.event = 'assigned' THEN 1
                WHEN deleted.event IN ('released', 'lease_expired') THEN -1
                WHEN deleted.event IN ('deleted', 'expired') AND deleted.lease_token IS NOT NULL THEN -1
                ELSE 0 END AS held,
           CASE WHEN deleted.event = 'created' THEN coalesce(deleted.seats, 1)
                WHEN deleted.event IN ('deleted', 'expired') AND coalesce(deleted.seat, 0) = 0 THEN -coalesce(deleted.seats, 1)
                ELSE 0 END AS seats
    FROM deleted
    WHERE deleted.at < (SELECT s.folded_to FROM key_event_rollup_state AS s)
), minute_counts AS (
    SELECT coalesce(folded.pool, '') AS pool, folded.minute,
           count(*) FILTER (WHERE folded.event = 'created') AS created,
           count(*) FILTER (WHERE folded.event = 'assigned') AS assigned,
           count(*) FILTER (WHERE folded.event = 'released') AS released,
           count(*) FILTER (WHERE folded.event = 'lease_expired') AS lease_expired,
           count(*) FILTER (WHERE folded.event = 'kept_alive') AS kept_alive,
           count(*) FILTER (WHERE folded.event = 'kept_alive' AND folded.lease_token IS NOT NULL) AS kept_alive_leased,
           count(*) FILTER (WHERE folded.event = 'deleted' AND folded.key_ended) AS deleted,
           count(*) FILTER (WHERE folded.event = 'deleted' AND folded.lease_token IS NOT NULL) AS deleted_leased,
           count(*) FILTER (WHERE folded.event = 'expired' AND folded.key_ended) AS expired,
           count(*) FILTER (WHERE folded.event = 'expired' AND folded.lease_token IS NOT NULL) AS expired_leased,
           count(*) FILTER (WHERE folded.event = 'cooled_down') AS cooled_down,
           coalesce(sum(folded.keys * extract(epoch FROM folded.at - folded.minute) * 1000000), 0)::bigint AS keys_offset_us,
           coalesce(sum(folded.held * extract(epoch FROM folded.at - folded.minute) * 1000000), 0)::bigint AS held_offset_us,
           coalesce(sum(folded.seats), 0)::bigint AS seats,
           coalesce(sum(folded.seats * extract(epoch FROM folded.at - folded.minute) * 1000000), 0)::bigint AS seats_offset_us
    FROM folded
    GROUP BY GROUPING SETS ((folded.pool, folded.minute), (folded.minute))
), minute_rows AS (
    -- Each rollup row by primary key, then updated by its address: an
    -- UPDATE ... FROM would let the planner join by a scan of the rollup.
    SELECT c.*, (SELECT t.ctid FROM key_event_minutes AS t WHERE t.pool = c.pool AND t.minute = c.minute) AS row
    FROM minute_counts AS c
), minutes_subtracted AS (
    UPDATE key_event_minutes AS m
    SET created = m.created - c.created,
        assigned = m.assigned - c.assigned,
        released = m.released - c.released,
        lease_expired = m.lease_expired - c.lease_expired,
        kept_alive = m.kept_alive - c.kept_alive,
        kept_alive_leased = m.kept_alive_leased - c.kept_alive_leased,
        deleted = m.deleted - c.deleted,
        deleted_leased = m.deleted_leased - c.deleted_leased,
        expired = m.expired - c.expired,
        expired_leased = m.expired_leased - c.expired_leased,
        cooled_down = m.cooled_down - c.cooled_down,
        keys_offset_us = m.keys_offset_us - c.keys_offset_us,
        held_offset_us = m.held_offset_us - c.held_offset_us,
        seats = m.seats - c.seats,
        seats_offset_us = m.seats_offset_us - c.seats_offset_us
    FROM minute_rows AS c
    WHERE m.ctid = ANY (ARRAY(SELECT minute_rows.row FROM minute_rows)) AND m.ctid = c.row
), hour_counts AS (
    SELECT folded.pool, folded.hour,
           count(*) FILTER (WHERE folded.event = 'created') AS created,
           count(*) FILTER (WHERE folded.event = 'assigned') AS assigned,
           count(*) FILTER (WHERE folded.event = 'released') AS released,
           count(*) FILTER (WHERE folded.event = 'lease_expired') AS lease_expired,
           count(*) FILTER (WHERE folded.event = 'kept_alive') AS kept_alive,
           count(*) FILTER (WHERE folded.event = 'kept_alive' AND folded.lease_token IS NOT NULL) AS kept_alive_leased,
           count(*) FILTER (WHERE folded.event = 'deleted' AND folded.key_ended) AS deleted,
           count(*) FILTER (WHERE folded.event = 'deleted' AND folded.lease_token IS NOT NULL) AS deleted_leased,
           count(*) FILTER (WHERE folded.event = 'expired' AND folded.key_ended) AS expired,
           count(*) FILTER (WHERE folded.event = 'expired' AND folded.lease_token IS NOT NULL) AS expired_leased,
           count(*) FILTER (WHERE folded.event = 'cooled_down') AS cooled_down,
           coalesce(sum(folded.keys * extract(epoch FROM folded.at - folded.hour) * 1000000), 0)::bigint AS keys_offset_us,
           coalesce(sum(folded.held * extract(epoch FROM folded.at - folded.hour) * 1000000), 0)::bigint AS held_offset_us,
           coalesce(sum(folded.seats), 0)::bigint AS seats,
           coalesce(sum(folded.seats * extract(epoch FROM folded.at - folded.hour) * 1000000), 0)::bigint AS seats_offset_us
    FROM folded
    GROUP BY folded.pool, folded.hour
), hour_rows AS (
    SELECT c.*, (SELECT t.ctid FROM key_event_hours AS t WHERE t.pool = c.pool AND t.hour = c.hour) AS row
    FROM hour_counts AS c
), hours_subtracted AS (
    UPDATE key_event_hours AS h
    SET created = h.created - c.created,
        assigned = h.assigned - c.assigned,
        released = h.released - c.released,
        lease_expired = h.lease_expired - c.lease_expired,
        kept_alive = h.kept_alive - c.kept_alive,
        kept_alive_leased = h.kept_alive_leased - c.kept_alive_leased,
        deleted = h.deleted - c.deleted,
        deleted_leased = h.deleted_leased - c.deleted_leased,
        expired = h.expired - c.expired,
        expired_leased = h.expired_leased - c.expired_leased,
        cooled_down = h.cooled_down - c.cooled_down,
        keys_offset_us = h.keys_offset_us - c.keys_offset_us,
        held_offset_us = h.held_offset_us - c.held_offset_us,
        seats = h.seats - c.seats,
        seats_offset_us = h.seats_offset_us - c.seats_offset_us
    FROM hour_rows AS c
    WHERE h.ctid = ANY (ARRAY(SELECT hour_rows.row FROM hour_rows)) AND h.ctid = c.row
), lease_ends AS (
    -- The ended leases among the deleted starts, matched as the fold
    -- matched them, on this statement's snapshot (deleted rows included).
    SELECT folded.pool, folded.minute,
           lease_duration_bucket(date_part('epoch', ended.at - folded.at)::float8) AS bucket
    FROM folded
    CROSS JOIN LATERAL (
        SELECT n.at, n.lease_token FROM key_events AS n
        WHERE n.key_id = folded.key_id AND n.at > folded.at
          -- The end of the lease's own seat; a CASE, as in key_leases
          -- (migration 00018).
          AND CASE WHEN n.event IN ('released', 'lease_expired', 'deleted', 'expired') THEN coalesce(n.seat, 0) = coalesce(folded.seat, 0) ELSE false END
        ORDER BY n.at
        LIMIT 1
    ) AS ended
    WHERE folded.event = 'assigned' AND ended.lease_token = folded.lease_token
      AND ended.at < (SELECT s.folded_to FROM key_event_rollup_state AS s)
), bucket_counts AS (
    SELECT coalesce(lease_ends.pool, '') AS pool, lease_ends.minute, lease_ends.bucket, count(*) AS leases
    FROM lease_ends
    GROUP BY GROUPING SETS ((lease_ends.pool, lease_ends.minute, lease_ends.bucket), (lease_ends.minute, lease_ends.bucket))
), bucket_rows AS (
    SELECT c.*, (SELECT t.ctid FROM lease_duration_minutes AS t
                 WHERE t.pool = c.pool AND t.minute = c.minute AND t.bucket = c.bucket) AS row
    FROM bucket_counts AS c
), buckets_subtracted AS (
    UPDATE lease_duration_minutes AS d
    SET leases = d.leases - c.leases
    FROM bucket_rows AS c
    WHERE d.ctid = ANY (ARRAY(SELECT bucket_rows.row FROM bucket_rows)) AND d.ctid = c.row
), ended_dropped AS (
    -- A lease whose start goes leaves ended_leases (migration 00016), which
    -- has its row if its end was folded: per pool of the batch, the rows
    -- of its span of starts (retention deletes in time order, so all of
    -- them but those of its last microsecond go) that the deleted starts
    -- match, at most one per start (the limit also keeps the planner from
    -- making the lateral a join, which it did with a scan of the table);
    -- by address.
    DELETE FROM ended_leases AS l
    WHERE l.ctid = ANY (ARRAY(
        SELECT t.row
        FROM (
            SELECT deleted.pool, min(deleted.at) AS first_at, max(deleted.at) AS last_at, count(*) AS starts
            FROM deleted
            WHERE deleted.event = 'assigned'
            GROUP BY deleted.pool
        ) AS starts
        CROSS JOIN LATERAL (
            SELECT t.ctid AS row FROM ended_leases AS t
            WHERE t.pool = starts.pool AND t.started_at >= starts.first_at AND t.started_at <= starts.last_at
              AND (t.started_at, t.key_id, t.lease_token) IN (
                  SELECT deleted.at, deleted.key_id, deleted.lease_token FROM deleted WHERE deleted.event = 'assigned')
            LIMIT starts.starts
        ) AS t))
), cooldown_cells AS (
    SELECT DISTINCT folded.pool, folded.hour, folded.key_id
    FROM folded
    WHERE folded.event IN ('released', 'cooled_down') AND folded.cooldown IS NOT NULL
), cooldown_rows AS (
    SELECT cell.*, (SELECT t.ctid FROM key_cooldown_hours AS t
                    WHERE t.pool = cell.pool AND t.hour = cell.hour AND t.key_id = cell.key_id) AS row
    FROM cooldown_cells AS cell
), cooldowns_recounted AS (
    UPDATE key_cooldown_hours AS c
    SET cooldowns = r.cooldowns, total_cooldown = r.total_cooldown, longest_cooldown = r.longest_cooldown
    FROM cooldown_rows AS cell
    CROSS JOIN LATERAL (
        SELECT count(*) AS cooldowns, coalesce(sum(x.cooldown), interval '0') AS total_cooldown,
               coalesce(max(x.cooldown), interval '0') AS longest_cooldown
        FROM key_events AS x
        WHERE x.key_id = cell.key_id AND x.at >= cell.hour
          AND x.at < least(cell.hour + interval '1 hour', (SELECT s.folded_to FROM key_event_rollup_state AS s))
          AND x.event IN ('released', 'cooled_down') AND x.cooldown IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM deleted WHERE deleted.row = x.ctid)
    ) AS r
    WHERE c.ctid = ANY (ARRAY(SELECT cooldown_rows.row FROM cooldown_rows)) AND c.ctid = cell.row
)
SELECT count(*) FROM deleted;

-- name: KeyEventsPerMinute :many
-- Events of the pool per UTC minute of the database clock over the last
-- minutes minutes, the current one included; minutes without events are
-- there with zeros. The rollup key_event_minutes holds the events before
-- folded_to (migration 00015); the events from folded_to on, the last
-- moments, are counted from key_events: a range on each table's (pool,
-- time) index over just those minutes of the pool, whatever the
-- statistics say. The bounds are written as (pool, time) rows, which only
-- those indexes can search: the planner cannot read every pool's rows of
-- those minutes through a time index instead (it did, in a generic plan,
-- when the pools were few), and the scan starts at the lower row, not at
-- the pool's oldest. Every pool's chart is KeyEventsPerMinuteAllPools.
WITH bounds AS (
    SELECT date_bin('1 minute', now(), timestamptz '2000-01-01 00:00:00+00') - (sqlc.arg(minutes)::int - 1) * interval '1 minute' AS first_minute,
           date_bin('1 minute', now(), timestamptz '2000-01-01 00:00:00+00') + interval '1 minute' AS end_minute,
           (SELECT s.folded_to FROM key_event_rollup_state AS s) AS folded_to
), counts AS (
    SELECT m.minute, m.created, m.assigned, m.released, m.lease_expired, m.kept_alive, m.deleted, m.expired
    FROM key_event_minutes AS m
    WHERE (m.pool, m.minute) >= (sqlc.arg(pool)::text, (SELECT b.first_minute FROM bounds AS b))
      AND (m.pool, m.minute) < (sqlc.arg(pool)::text, (SELECT b.end_minute FROM bounds AS b))
    UNION ALL
    SELECT date_bin('1 minute', e.at, timestamptz '2000-01-01 00:00:00+00'),
           count(*) FILTER (WHERE e.event = 'created'),
           count(*) FILTER (WHERE e.event = 'assigned'),
           count(*) FILTER (WHERE e.event = 'released'),
           count(*) FILTER (WHERE e.event = 'lease_expired'),
           count(*) FILTER (WHERE e.event = 'kept_alive'),
           -- A key of several seats ends with one event per held seat;
           -- the key itself is counted once, by seat 0's (seat NULL or 0).
           count(*) FILTER (WHERE e.event = 'deleted' AND coalesce(e.seat, 0) = 0),
           count(*) FILTER (WHERE e.event = 'expired' AND coalesce(e.seat, 0) = 0)
    FROM key_events AS e
    WHERE (e.pool, e.at) >= (sqlc.arg(pool)::text, (SELECT greatest(b.first_minute, b.folded_to) FROM bounds AS b))
      AND (e.pool, e.at) < (sqlc.arg(pool)::text, (SELECT b.end_minute FROM bounds AS b))
    GROUP BY 1
)
SELECT m.minute::timestamptz AS minute,
       coalesce(sum(c.created), 0)::bigint AS created,
       coalesce(sum(c.assigned), 0)::bigint AS claimed,
       coalesce(sum(c.released), 0)::bigint AS released,
       coalesce(sum(c.lease_expired), 0)::bigint AS lease_expired,
       coalesce(sum(c.kept_alive), 0)::bigint AS kept_alive,
       coalesce(sum(c.deleted), 0)::bigint AS deleted,
       coalesce(sum(c.expired), 0)::bigint AS expired
FROM bounds AS b
CROSS JOIN generate_series(b.first_minute, b.end_minute - interval '1 minute', interval '1 minute') AS m (minute)
LEFT JOIN counts AS c ON c.minute = m.minute
GROUP BY m.minute
ORDER BY m.minute;

-- name: KeyEventsPerMinuteAllPools :many
-- KeyEventsPerMinute of every pool: the rollup's rows of pool '' (the sum
-- of every pool), and one range on key_events_at_idx.
WITH bounds AS (
    SELECT date_bin('1 minute', now(), timestamptz '2000-01-01 00:00:00+00') - (sqlc.arg(minutes)::int - 1) * interval '1 minute' AS first_minute,
           date_bin('1 minute', now(), timestamptz '2000-01-01 00:00:00+00') + interval '1 minute' AS end_minute,
           (SELECT s.folded_to FROM key_event_rollup_state AS s) AS folded_to
), counts AS (
    SELECT m.minute, m.created, m.assigned, m.released, m.lease_expired, m.kept_alive, m.deleted, m.expired
    FROM key_event_minutes AS m
    WHERE (m.pool, m.minute) >= ('', (SELECT b.first_minute FROM bounds AS b))
      AND (m.pool, m.minute) < ('', (SELECT b.end_minute FROM bounds AS b))
    UNION ALL
    SELECT date_bin('1 minute', e.at, timestamptz '2000-01-01 00:00:00+00'),
           count(*) FILTER (WHERE e.event = 'created'),
           count(*) FILTER (WHERE e.event = 'assigned'),
           count(*) FILTER (WHERE e.event = 'released'),
           count(*) FILTER (WHERE e.event = 'lease_expired'),
           count(*) FILTER (WHERE e.event = 'kept_alive'),
           -- A key of several seats ends with one event per held seat;
           -- the key itself is counted once, by seat 0's (seat NULL or 0).
           count(*) FILTER (WHERE e.event = 'deleted' AND coalesce(e.seat, 0) = 0),
           count(*) FILTER (WHERE e.event = 'expired' AND coalesce(e.seat, 0) = 0)
    FROM key_events AS e
    WHERE e.at >= (SELECT greatest(b.first_minute, b.folded_to) FROM bounds AS b)
      AND e.at < (SELECT b.end_minute FROM bounds AS b)
    GROUP BY 1
)
SELECT m.minute::timestamptz AS minute,
       coalesce(sum(c.created), 0)::bigint AS created,
       coalesce(sum(c.assigned), 0)::bigint AS claimed,
       coalesce(sum(c.released), 0)::bigint AS released,
       coalesce(sum(c.lease_expired), 0)::bigint AS lease_expired,
       coalesce(sum(c.kept_alive), 0)::bigint AS kept_alive,
       coalesce(sum(c.deleted), 0)::bigint AS deleted,
       coalesce(sum(c.expired), 0)::bigint AS expired
FROM bounds AS b
CROSS JOIN generate_series(b.first_minute, b.end_minute - interval '1 minute', interval '1 minute') AS m (minute)
LEFT JOIN counts AS c ON c.minute = m.minute
GROUP BY m.minute
ORDER BY m.minute;
