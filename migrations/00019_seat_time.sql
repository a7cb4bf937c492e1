-- +goose Up

-- Utilisation as the share of seat-time held. The utilisation report
-- divided held seat-seconds by key-seconds, so a pool of keys of several
-- seats showed the held seats per key, above 1 when more than one seat of
-- a key was held. History now records a key's seats where it begins and
-- ends: on its created event, and on the event that ends it (deleted or
-- expired of seat 0, seat NULL or 0); NULL is one seat, so the events
-- written before, and those of keys of one seat, need nothing.
--
-- Live keys of several seats get their seats on their created event. A key
-- of several seats deleted before this migration has none on either event,
-- so it counts one seat throughout: its seat-time before is not exact, and
-- nothing else is off.
SET LOCAL lock_timeout = '5s';

ALTER TABLE key_events ADD COLUMN seats smallint;

COMMENT ON COLUMN key_events.seats IS 'On a created event, and on the deleted or expired event that ends the key (seat NULL or 0): the key''s seats; NULL: 1.';

-- The UPDATE empties the rollups (trigger key_events_rollups_reset), which
-- the background job then folds again, seats included.
UPDATE key_events AS e SET seats = k.seats
FROM keys AS k
WHERE k.seats > 1 AND e.key_id = k.id AND e.event = 'created';

-- The rollups' new columns have no default: a fold of the previous
-- version, which does not write them, fails (and its transaction with it)
-- rather than fold events without their seats, while replicas of both
-- versions run. The job of this version folds them.
ALTER TABLE key_event_minutes
    ADD COLUMN seats           bigint NOT NULL DEFAULT 0,
    ADD COLUMN seats_offset_us bigint NOT NULL DEFAULT 0;
ALTER TABLE key_event_minutes ALTER COLUMN seats DROP DEFAULT, ALTER COLUMN seats_offset_us DROP DEFAULT;
ALTER TABLE key_event_hours
    ADD COLUMN seats           bigint NOT NULL DEFAULT 0,
    ADD COLUMN seats_offset_us bigint NOT NULL DEFAULT 0;
ALTER TABLE key_event_hours ALTER COLUMN seats DROP DEFAULT, ALTER COLUMN seats_offset_us DROP DEFAULT;

COMMENT ON COLUMN key_event_minutes.seats IS 'The net change of the minute''s events to the pool''s seats (a created key adds its seats, a deleted or expired one takes them away).';
COMMENT ON COLUMN key_event_minutes.seats_offset_us IS 'The change of each event to the pool''s seats times the microseconds from the minute''s start to it (as keys_offset_us).';
COMMENT ON COLUMN key_event_hours.seats IS 'As key_event_minutes.seats, per hour.';
COMMENT ON COLUMN key_event_hours.seats_offset_us IS 'As key_event_minutes.seats_offset_us, per hour.';

SELECT key_event_rollups_reset();

-- Retention keeps the seats in step from this version on and says so with
-- a value of its own: the retention of the previous version, which does
-- not, says 'keeps ended_leases', and empties the rollups as any other
-- deletion does.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION key_events_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('tokenorchestrator.history_retention', true) IS DISTINCT FROM 'keeps seats' THEN
        PERFORM key_event_rollups_reset();
    END IF;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

CREATE OR REPLACE VIEW key_event_changes AS
SELECT e.id, e.at, e.key_id, e.pool, e.event, e.lease_token,
       CASE WHEN e.event = 'created' THEN 1
            WHEN e.event IN ('deleted', 'expired') AND coalesce(e.seat, 0) = 0 THEN -1
            ELSE 0 END AS keys,
       CASE WHEN e.event = 'assigned' THEN 1
            WHEN e.event IN ('released', 'lease_expired') THEN -1
            WHEN e.event IN ('deleted', 'expired') AND e.lease_token IS NOT NULL THEN -1
            ELSE 0 END AS blocked,
       CASE WHEN e.event = 'created' THEN coalesce(e.seats, 1)
            WHEN e.event IN ('deleted', 'expired') AND coalesce(e.seat, 0) = 0 THEN -coalesce(e.seats, 1)
            ELSE 0 END AS seats
FROM key_events AS e;

COMMENT ON VIEW key_event_changes IS 'Every event with the change it makes to its pool''s count of keys (keys: +1, -1, 0; a key of several seats counts once), of held seats (blocked) and of seats (seats: a key''s seats when it is created, minus them when it ends).';

DROP VIEW pool_utilisation_hourly;
DROP FUNCTION pool_utilisation(timestamptz, timestamptz, text);

-- +goose StatementBegin
CREATE FUNCTION pool_utilisation(range_from timestamptz, range_to timestamptz, only_pool text DEFAULT NULL)
RETURNS TABLE (pool text, hour timestamptz, key_seconds float8, seat_seconds float8, blocked_seconds float8, utilisation float8)
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
               coalesce(sum(e.seats), 0) AS net_seats,
               coalesce(sum(e.blocked), 0) AS net_blocked,
               coalesce(sum(e.keys * date_part('epoch', greatest(cells.hour_end - e.at, interval '0'))), 0) AS keys_seconds_added,
               coalesce(sum(e.seats * date_part('epoch', greatest(cells.hour_end - e.at, interval '0'))), 0) AS seats_seconds_added,
               coalesce(sum(e.blocked * date_part('epoch', greatest(cells.hour_end - e.at, interval '0'))), 0) AS blocked_seconds_added
        FROM key_event_changes AS e
        WHERE e.pool = cells.pool AND e.at >= cells.hour AND e.at < cells.hour + interval '1 hour'
    ) AS s
), later AS (
    -- The net change per pool after the last hour of the range.
    SELECT e.pool, sum(e.keys) AS keys, sum(e.seats) AS seats, sum(e.blocked) AS blocked
    FROM key_event_changes AS e
    WHERE e.at >= (SELECT max(changes.hour) FROM changes) + interval '1 hour'
      AND (only_pool IS NULL OR e.pool = only_pool)
    GROUP BY e.pool
), current AS (
    SELECT p.pool, sum(p.keys) AS keys, sum(p.seats) AS seats, sum(p.blocked) AS blocked
    FROM pool_counts AS p
    WHERE only_pool IS NULL OR p.pool = only_pool
    GROUP BY p.pool
), starts AS (
    -- Keys, seats and held seats at the start of each hour, counted back
    -- from now.
    SELECT changes.*,
           coalesce(current.keys, 0) - coalesce(later.keys, 0)
               - sum(changes.net_keys) OVER back AS keys_at_start,
           coalesce(current.seats, 0) - coalesce(later.seats, 0)
               - sum(changes.net_seats) OVER back AS seats_at_start,
           coalesce(current.blocked, 0) - coalesce(later.blocked, 0)
               - sum(changes.net_blocked) OVER back AS blocked_at_start
    FROM changes
    LEFT JOIN later ON later.pool = changes.pool
    LEFT JOIN current ON current.pool = changes.pool
    WINDOW back AS (PARTITION BY changes.pool ORDER BY changes.hour DESC)
), seconds AS (
    SELECT starts.pool, starts.hour,
           (starts.keys_at_start * date_part('epoch', starts.hour_end - starts.hour) + starts.keys_seconds_added)::float8 AS key_seconds,
           (starts.seats_at_start * date_part('epoch', starts.hour_end - starts.hour) + starts.seats_seconds_added)::float8 AS seat_seconds,
           (starts.blocked_at_start * date_part('epoch', starts.hour_end - starts.hour) + starts.blocked_seconds_added)::float8 AS blocked_seconds
    FROM starts
)
SELECT seconds.pool, seconds.hour, seconds.key_seconds, seconds.seat_seconds, seconds.blocked_seconds,
       seconds.blocked_seconds / seconds.seat_seconds AS utilisation
FROM seconds
-- Hours without seats are left out (a key has at least one).
WHERE seconds.seat_seconds > 0
ORDER BY seconds.pool, seconds.hour
$$;
-- +goose StatementEnd

COMMENT ON FUNCTION pool_utilisation(timestamptz, timestamptz, text) IS 'Per pool and UTC hour overlapping [range_from, range_to): key_seconds (keys existing), seat_seconds (their seats), blocked_seconds (seats held) and utilisation (blocked_seconds / seat_seconds, the share of seat-time held). only_pool NULL: every pool.';

CREATE VIEW pool_utilisation_hourly AS
SELECT u.pool::text AS pool, u.hour::timestamptz AS hour, u.key_seconds::float8 AS key_seconds,
       u.seat_seconds::float8 AS seat_seconds, u.blocked_seconds::float8 AS blocked_seconds,
       u.utilisation::float8 AS utilisation
FROM pool_utilisation('-infinity', 'infinity') AS u;

COMMENT ON VIEW pool_utilisation_hourly IS 'pool_utilisation over the whole history. For a range call pool_utilisation(from, to, pool): it reads only the events from the range on.';

-- +goose Down
SET LOCAL lock_timeout = '5s';

DROP VIEW pool_utilisation_hourly;
DROP FUNCTION pool_utilisation(timestamptz, timestamptz, text);
DROP VIEW key_event_changes;
CREATE VIEW key_event_changes AS
SELECT e.id, e.at, e.key_id, e.pool, e.event, e.lease_token,
       CASE WHEN e.event = 'created' THEN 1
            WHEN e.event IN ('deleted', 'expired') AND coalesce(e.seat, 0) = 0 THEN -1
            ELSE 0 END AS keys,
       CASE WHEN e.event = 'assigned' THEN 1
            WHEN e.event IN ('released', 'lease_expired') THEN -1
            WHEN e.event IN ('deleted', 'expired') AND e.lease_token IS NOT NULL THEN -1
            ELSE 0 END AS blocked
FROM key_events AS e;
COMMENT ON VIEW key_event_changes IS 'Every event with the change it makes to its pool''s count of keys (keys: +1, -1, 0; a key of several seats counts once) and of blocked seats (blocked). The utilisation report divides held seats by keys: a pool of keys of several seats may show more than 1.';

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

CREATE VIEW pool_utilisation_hourly AS
SELECT u.pool::text AS pool, u.hour::timestamptz AS hour, u.key_seconds::float8 AS key_seconds,
       u.blocked_seconds::float8 AS blocked_seconds, u.utilisation::float8 AS utilisation
FROM pool_utilisation('-infinity', 'infinity') AS u;

COMMENT ON FUNCTION pool_utilisation(timestamptz, timestamptz, text) IS 'Per pool and UTC hour overlapping [range_from, range_to): key_seconds, blocked_seconds and utilisation (their ratio). only_pool NULL: every pool.';
COMMENT ON VIEW pool_utilisation_hourly IS 'pool_utilisation over the whole history. For a range call pool_utilisation(from, to, pool): it reads only the events from the range on.';

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION key_events_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('tokenorchestrator.history_retention', true) IS DISTINCT FROM 'keeps ended_leases' THEN
        PERFORM key_event_rollups_reset();
    END IF;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

SELECT key_event_rollups_reset();
ALTER TABLE key_event_hours DROP COLUMN seats, DROP COLUMN seats_offset_us;
ALTER TABLE key_event_minutes DROP COLUMN seats, DROP COLUMN seats_offset_us;
ALTER TABLE key_events DROP COLUMN seats;
