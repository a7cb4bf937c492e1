-- Queries that keep the rollups of key_events (migration 00015): the
-- background job's fold, and what retention needs. The readers of the
-- rollups are in reports.sql and key_events.sql.
--
-- One fold or retention batch at a time, across every replica: each takes
-- the transaction-scoped advisory lock 8390042714203385708 ("tokenrol")
-- before its statements read anything.

-- name: KeyEventRollupsHorizon :one
-- The first statement of a fold: takes the lock (a replica that does not
-- get it skips this fold) and returns the fold's horizon, before which
-- every event has been written and committed or rolled back. An event's at
-- is the clock when its row was made (key_events.at defaults to
-- clock_timestamp()), after its transaction began and after the statement
-- that wrote it began. So the horizon is the earliest of: the start of each
-- transaction still running that has written (backend_xid); the start of
-- each statement still running in a transaction that has not written yet
-- (backend_xmin, query_start, in any state but idle in transaction), which
-- may be making an event's row now; and this statement's own start. A session between statements that has
-- written nothing (idle in transaction, however old its snapshot: a backup,
-- a long report, an idle REPEATABLE READ transaction) writes its next event
-- after this read, and does not hold the fold back; one not in a
-- transaction neither. The fold's next statement takes its snapshot after
-- this read, so it sees every event before the horizon. Autovacuum and
-- replication senders write no history (autovacuum shows no role to those
-- who may not see its start). A session whose times are hidden (another
-- role's, without pg_read_all_stats) or a prepared transaction gives no
-- horizon ('-infinity', before any fold): the fold waits for them to end.
WITH sessions AS (
    SELECT CASE WHEN a.backend_xid IS NOT NULL THEN a.xact_start ELSE a.query_start END AS since
    FROM pg_catalog.pg_stat_activity AS a
    WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
      AND (a.backend_xid IS NOT NULL OR a.backend_xmin IS NOT NULL)
      -- Hidden sessions show no state: kept, with no time.
      AND (a.backend_xid IS NOT NULL OR a.state IS DISTINCT FROM 'idle in transaction')
      AND (a.usesysid IS NOT NULL OR a.xact_start IS NOT NULL)
      AND coalesce(a.backend_type, '') NOT IN ('autovacuum worker', 'walsender')
)
SELECT pg_try_advisory_xact_lock(8390042714203385708) AS held,
       (CASE WHEN EXISTS (SELECT 1 FROM sessions WHERE sessions.since IS NULL)
                  OR EXISTS (SELECT 1 FROM pg_catalog.pg_prepared_xacts AS p WHERE p.database = current_database())
             THEN '-infinity'
             ELSE least(statement_timestamp(), (SELECT min(sessions.since) FROM sessions))
        END)::timestamptz AS horizon;

-- name: KeyEventRollupsFold :one
-- Folds the events from folded_to up to the horizon that
-- KeyEventRollupsHorizon returned, in the same transaction, into the
-- rollups; at most about max events (all those of one microsecond at
-- least), so that a backlog (after an outage, or the whole history after a
-- reset) is worked off over several statements. Returns the events it
-- folded, the new folded_to, and whether that is the horizon (the rollups
-- have caught up). One range on key_events_at_idx; the lease
-- whose end an event is, one step back along the key's events. Minute rows
-- are written and kept from two days ago on, or from the hour of folded_to
-- should the job have fallen further behind (readers need the minutes of
-- that hour); older ones are dropped, max at a time.
WITH state AS (
    -- One row, whatever the statistics of the one-row table say.
    SELECT (SELECT s.folded_to FROM key_event_rollup_state AS s) AS folded_to,
           (SELECT s.ended_leases_to FROM key_event_rollup_state AS s) AS ended_leases_to
), batch_end AS MATERIALIZED (
    -- MATERIALIZED: inlined, the lateral below is pulled up into bounds and
    -- its expression, this scan included, ran once per use of upper.
    SELECT e.at FROM key_events AS e
    WHERE e.at >= (SELECT state.folded_to FROM state)
    ORDER BY e.at
    OFFSET sqlc.arg(max)::int
    LIMIT 1
), bounds AS (
    SELECT state.folded_to AS lower, u.upper,
           least(now() - interval '2 days', date_bin('1 hour', u.upper, timestamptz '2000-01-01 00:00:00+00')) AS keep_from
    FROM state
    CROSS JOIN LATERAL (
        SELECT greatest(state.folded_to, least(
                   sqlc.arg(horizon)::timestamptz,
                   coalesce((SELECT greatest(batch_end.at, state.folded_to + interval '1 microsecond') FROM batch_end), 'infinity'))) AS upper
    ) AS u
), events AS (
    SELECT e.at, e.key_id, e.seat, e.pool, e.event, e.lease_token, e.cooldown,
           date_bin('1 minute', e.at, timestamptz '2000-01-01 00:00:00+00') AS minute,
           date_bin('1 hour', e.at, timestamptz '2000-01-01 00:00:00+00') AS hour,
           -- A key of several seats ends with an event per held seat; the
           -- key itself ends once, with seat 0's (seat NULL or 0), as
           -- key_event_changes and key_activity_hourly count it.
           e.event IN ('deleted', 'expired') AND coalesce(e.seat, 0) = 0 AS key_ended,
           CASE WHEN e.event = 'created' THEN 1
                WHEN e.event IN ('deleted', 'expired') AND coalesce(e.seat, 0) = 0 THEN -1
                ELSE 0 END AS keys,
           CASE WHEN e.event = 'assigned' THEN 1
                WHEN e.event IN ('released', 'lease_expired') THEN -1
                WHEN e.event IN ('deleted', 'expired') AND e.lease_token IS NOT NULL THEN -1
                ELSE 0 END AS held,
           -- A key's seats come with its created event and go with its end.
           CASE WHEN e.event = 'created' THEN coalesce(e.seats, 1)
                WHEN e.event IN ('deleted', 'expired') AND coalesce(e.seat, 0) = 0 THEN -coalesce(e.seats, 1)
                ELSE 0 END AS seats
    FROM key_events AS e
    WHERE e.at >= (SELECT bounds.lower FROM bounds) AND e.at < (SELECT bounds.upper FROM bounds)
), minute_counts AS (
    SELECT coalesce(events.pool, '') AS pool, events.minute,
           count(*) FILTER (WHERE events.event = 'created') AS created,
           count(*) FILTER (WHERE events.event = 'assigned') AS assigned,
           count(*) FILTER (WHERE events.event = 'released') AS released,
           count(*) FILTER (WHERE events.event = 'lease_expired') AS lease_expired,
           count(*) FILTER (WHERE events.event = 'kept_alive') AS kept_alive,
           count(*) FILTER (WHERE events.event = 'kept_alive' AND events.lease_token IS NOT NULL) AS kept_alive_leased,
           count(*) FILTER (WHERE events.event = 'deleted' AND events.key_ended) AS deleted,
           count(*) FILTER (WHERE events.event = 'deleted' AND events.lease_token IS NOT NULL) AS deleted_leased,
           count(*) FILTER (WHERE events.event = 'expired' AND events.key_ended) AS expired,
           count(*) FILTER (WHERE events.event = 'expired' AND events.lease_token IS NOT NULL) AS expired_leased,
           count(*) FILTER (WHERE events.event = 'cooled_down') AS cooled_down,
           coalesce(sum(events.keys * extract(epoch FROM events.at - events.minute) * 1000000), 0)::bigint AS keys_offset_us,
           coalesce(sum(events.held * extract(epoch FROM events.at - events.minute) * 1000000), 0)::bigint AS held_offset_us,
           coalesce(sum(events.seats), 0)::bigint AS seats,
           coalesce(sum(events.seats * extract(epoch FROM events.at - events.minute) * 1000000), 0)::bigint AS seats_offset_us
    FROM events
    WHERE events.minute >= (SELECT bounds.keep_from FROM bounds)
    GROUP BY GROUPING SETS ((events.pool, events.minute), (events.minute))
), minutes_added AS (
    INSERT INTO key_event_minutes AS m (
        pool, minute, created, assigned, released, lease_expired, kept_alive, kept_alive_leased,
        deleted, deleted_leased, expired, expired_leased, cooled_down, keys_offset_us, held_offset_us,
        seats, seats_offset_us)
    SELECT c.pool, c.minute, c.created, c.assigned, c.released, c.lease_expired, c.kept_alive, c.kept_alive_leased,
           c.deleted, c.deleted_leased, c.expired, c.expired_leased, c.cooled_down, c.keys_offset_us, c.held_offset_us,
           c.seats, c.seats_offset_us
    FROM minute_counts AS c
    ON CONFLICT (pool, minute) DO UPDATE
    SET created = m.created + excluded.created,
        assigned = m.assigned + excluded.assigned,
        released = m.released + excluded.released,
        lease_expired = m.lease_expired + excluded.lease_expired,
        kept_alive = m.kept_alive + excluded.kept_alive,
        kept_alive_leased = m.kept_alive_leased + excluded.kept_alive_leased,
        deleted = m.deleted + excluded.deleted,
        deleted_leased = m.deleted_leased + excluded.deleted_leased,
        expired = m.expired + excluded.expired,
        expired_leased = m.expired_leased + excluded.expired_leased,
        cooled_down = m.cooled_down + excluded.cooled_down,
        keys_offset_us = m.keys_offset_us + excluded.keys_offset_us,
        held_offset_us = m.held_offset_us + excluded.held_offset_us,
        seats = m.seats + excluded.seats,
        seats_offset_us = m.seats_offset_us + excluded.seats_offset_us
), hour_counts AS (
    SELECT events.pool, events.hour,
           count(*) FILTER (WHERE events.event = 'created') AS created,
           count(*) FILTER (WHERE events.event = 'assigned') AS assigned,
           count(*) FILTER (WHERE events.event = 'released') AS released,
           count(*) FILTER (WHERE events.event = 'lease_expired') AS lease_expired,
           count(*) FILTER (WHERE events.event = 'kept_alive') AS kept_alive,
           count(*) FILTER (WHERE events.event = 'kept_alive' AND events.lease_token IS NOT NULL) AS kept_alive_leased,
           count(*) FILTER (WHERE events.event = 'deleted' AND events.key_ended) AS deleted,
           count(*) FILTER (WHERE events.event = 'deleted' AND events.lease_token IS NOT NULL) AS deleted_leased,
           count(*) FILTER (WHERE events.event = 'expired' AND events.key_ended) AS expired,
           count(*) FILTER (WHERE events.event = 'expired' AND events.lease_token IS NOT NULL) AS expired_leased,
           count(*) FILTER (WHERE events.event = 'cooled_down') AS cooled_down,
           coalesce(sum(events.keys * extract(epoch FROM events.at - events.hour) * 1000000), 0)::bigint AS keys_offset_us,
           coalesce(sum(events.held * extract(epoch FROM events.at - events.hour) * 1000000), 0)::bigint AS held_offset_us,
           coalesce(sum(events.seats), 0)::bigint AS seats,
           coalesce(sum(events.seats * extract(epoch FROM events.at - events.hour) * 1000000), 0)::bigint AS seats_offset_us
    FROM events
    GROUP BY events.pool, events.hour
), hours_added AS (
    INSERT INTO key_event_hours AS h (
        pool, hour, created, assigned, released, lease_expired, kept_alive, kept_alive_leased,
        deleted, deleted_leased, expired, expired_leased, cooled_down, keys_offset_us, held_offset_us,
        seats, seats_offset_us)
    SELECT c.pool, c.hour, c.created, c.assigned, c.released, c.lease_expired, c.kept_alive, c.kept_alive_leased,
           c.deleted, c.deleted_leased, c.expired, c.expired_leased, c.cooled_down, c.keys_offset_us, c.held_offset_us,
           c.seats, c.seats_offset_us
    FROM hour_counts AS c
    ON CONFLICT (pool, hour) DO UPDATE
    SET created = h.created + excluded.created,
        assigned = h.assigned + excluded.assigned,
        released = h.released + excluded.released,
        lease_expired = h.lease_expired + excluded.lease_expired,
        kept_alive = h.kept_alive + excluded.kept_alive,
        kept_alive_leased = h.kept_alive_leased + excluded.kept_alive_leased,
        deleted = h.deleted + excluded.deleted,
        deleted_leased = h.deleted_leased + excluded.deleted_leased,
        expired = h.expired + excluded.expired,
        expired_leased = h.expired_leased + excluded.expired_leased,
        cooled_down = h.cooled_down + excluded.cooled_down,
        keys_offset_us = h.keys_offset_us + excluded.keys_offset_us,
        held_offset_us = h.held_offset_us + excluded.held_offset_us,
        seats = h.seats + excluded.seats,
        seats_offset_us = h.seats_offset_us + excluded.seats_offset_us
), cooldowns_added AS (
    INSERT INTO key_cooldown_hours AS c (pool, hour, key_id, cooldowns, total_cooldown, longest_cooldown)
    SELECT events.pool, events.hour, events.key_id, count(*), sum(events.cooldown), max(events.cooldown)
    FROM events
    WHERE events.event IN ('released', 'cooled_down') AND events.cooldown IS NOT NULL
    GROUP BY events.pool, events.hour, events.key_id
    ON CONFLICT (pool, hour, key_id) DO UPDATE
    SET cooldowns = c.cooldowns + excluded.cooldowns,
        total_cooldown = c.total_cooldown + excluded.total_cooldown,
        longest_cooldown = greatest(c.longest_cooldown, excluded.longest_cooldown)
), lease_ends AS (
    -- The leases that the batch's events end, as key_leases matches them:
    -- the lease of the event's token, if no other end of its seat came
    -- between its start and this event. A lease's start commits before its
    -- end is written (the end needs the token, or the held row), so it was
    -- folded by this fold or an earlier one.
    SELECT lease.pool, lease.started_at, ended.key_id, ended.lease_token,
           date_part('epoch', ended.at - lease.started_at)::float8 AS seconds,
           date_bin('1 minute', lease.started_at, timestamptz '2000-01-01 00:00:00+00') AS minute,
           lease_duration_bucket(date_part('epoch', ended.at - lease.started_at)::float8) AS bucket
    FROM events AS ended
    -- The lease this end ends, if any (migrations 00017, 00018).
    CROSS JOIN LATERAL lease_start(ended.key_id, ended.seat, ended.at, ended.lease_token) AS lease (pool, started_at)
    WHERE ended.event IN ('released', 'lease_expired', 'deleted', 'expired') AND ended.lease_token IS NOT NULL
), buckets_added AS (
    INSERT INTO lease_duration_minutes AS d (pool, minute, bucket, leases)
    SELECT coalesce(lease_ends.pool, ''), lease_ends.minute, lease_ends.bucket, count(*)
    FROM lease_ends
    WHERE lease_ends.started_at >= (SELECT bounds.keep_from FROM bounds)
    GROUP BY GROUPING SETS ((lease_ends.pool, lease_ends.minute, lease_ends.bucket), (lease_ends.minute, lease_ends.bucket))
    ON CONFLICT (pool, minute, bucket) DO UPDATE SET leases = d.leases + excluded.leases
), ended_added AS (
    -- Each ended lease, for the percentiles of the lease durations per
    -- hour: only while ended_leases has kept up with the fold (otherwise
    -- KeyEventRollupsFoldEndedLeases catches it up first, from its own
    -- horizon).
    INSERT INTO ended_leases (pool, started_at, key_id, lease_token, seconds)
    SELECT lease_ends.pool, lease_ends.started_at, lease_ends.key_id, lease_ends.lease_token, lease_ends.seconds
    FROM lease_ends
    WHERE (SELECT state.ended_leases_to = state.folded_to FROM state)
), minutes_dropped AS (
    DELETE FROM key_event_minutes AS m
    WHERE m.ctid = ANY (ARRAY(
        SELECT o.ctid FROM key_event_minutes AS o
        WHERE o.minute < (SELECT bounds.keep_from FROM bounds)
        ORDER BY o.minute
        LIMIT sqlc.arg(max)::int))
), buckets_dropped AS (
    DELETE FROM lease_duration_minutes AS d
    WHERE d.ctid = ANY (ARRAY(
        SELECT o.ctid FROM lease_duration_minutes AS o
        WHERE o.minute < (SELECT bounds.keep_from FROM bounds)
        ORDER BY o.minute
        LIMIT sqlc.arg(max)::int))
), advanced AS (
    UPDATE key_event_rollup_state AS s
    SET folded_to = (SELECT bounds.upper FROM bounds),
        ended_leases_to = CASE WHEN s.ended_leases_to = s.folded_to THEN (SELECT bounds.upper FROM bounds) ELSE s.ended_leases_to END
)
SELECT (SELECT count(*) FROM events)::bigint AS events,
       (SELECT bounds.upper FROM bounds)::timestamptz AS folded_to,
       (SELECT bounds.upper >= sqlc.arg(horizon)::timestamptz FROM bounds)::boolean AS caught_up;

-- name: KeyEventRollupsFoldEndedLeases :one
-- Catches ended_leases up with the other rollups: while its horizon
-- (ended_leases_to) is behind folded_to (after the upgrade that added it,
-- or after folds of a replica of the previous version, which do not write
-- it), adds the leases that the events from ended_leases_to on end, about
-- max events at most and never past folded_to, and moves ended_leases_to
-- on. Runs in the transaction of KeyEventRollupsHorizon, before
-- KeyEventRollupsFold, which writes ended_leases only once it has caught
-- up. Returns the events read and whether it has caught up; reads nothing
-- when it has (the conditions on state are one-time filters). One range on
-- key_events_at_idx; each lease one step back along its key's events, as
-- the fold matches them.
WITH state AS (
    -- One row, whatever the statistics of the one-row table say.
    SELECT (SELECT s.folded_to FROM key_event_rollup_state AS s) AS folded_to,
           (SELECT s.ended_leases_to FROM key_event_rollup_state AS s) AS ended_leases_to
), batch_end AS (
    SELECT e.at FROM key_events AS e
    WHERE e.at >= (SELECT state.ended_leases_to FROM state)
      AND (SELECT state.ended_leases_to < state.folded_to FROM state)
    ORDER BY e.at
    OFFSET sqlc.arg(max)::int
    LIMIT 1
), bounds AS (
    SELECT state.ended_leases_to AS lower,
           least(state.folded_to,
                 coalesce((SELECT greatest(batch_end.at, state.ended_leases_to + interval '1 microsecond') FROM batch_end), 'infinity')) AS upper
    FROM state
    WHERE state.ended_leases_to < state.folded_to
), events AS (
    SELECT e.at, e.key_id, e.seat, e.event, e.lease_token
    FROM key_events AS e
    WHERE e.at >= (SELECT bounds.lower FROM bounds) AND e.at < (SELECT bounds.upper FROM bounds)
), lease_ends AS (
    -- As in KeyEventRollupsFold.
    SELECT lease.pool, lease.started_at, ended.key_id, ended.lease_token,
           date_part('epoch', ended.at - lease.started_at)::float8 AS seconds
    FROM events AS ended
    -- The lease this end ends, if any (migrations 00017, 00018).
    CROSS JOIN LATERAL lease_start(ended.key_id, ended.seat, ended.at, ended.lease_token) AS lease (pool, started_at)
    WHERE ended.event IN ('released', 'lease_expired', 'deleted', 'expired') AND ended.lease_token IS NOT NULL
), ended_added AS (
    INSERT INTO ended_leases (pool, started_at, key_id, lease_token, seconds)
    SELECT lease_ends.pool, lease_ends.started_at, lease_ends.key_id, lease_ends.lease_token, lease_ends.seconds
    FROM lease_ends
), advanced AS (
    UPDATE key_event_rollup_state AS s SET ended_leases_to = (SELECT bounds.upper FROM bounds)
    WHERE EXISTS (SELECT 1 FROM bounds)
)
SELECT (SELECT count(*) FROM events)::bigint AS events,
       coalesce((SELECT bounds.upper >= state.folded_to FROM bounds, state), true)::boolean AS caught_up;

-- name: KeyEventRollupsLockForRetention :exec
-- The first statement of a retention batch: waits for the lock, so that a
-- fold never counts events that the batch deletes nor misses a subtraction,
-- and says, for the rest of the transaction, that the deletion is
-- retention's, which keeps the rollups in step itself (the trigger of
-- migration 00015 would reset them otherwise).
SELECT pg_advisory_xact_lock(8390042714203385708),
       set_config('tokenorchestrator.history_retention', 'keeps seats', true);

-- name: KeyEventRollupsDeleteEmpty :exec
-- The last statement of a retention batch: drops the rollup rows that the
-- batch emptied, so that a pool whose history is gone is no longer listed.
-- Retention deletes in time order, so they lie at or before the hour of the
-- oldest event kept: one range from the start of each table's time index.
WITH oldest AS (
    SELECT coalesce((SELECT e.at FROM key_events AS e ORDER BY e.at LIMIT 1), 'infinity') AS at
), hours_dropped AS (
    DELETE FROM key_event_hours AS h
    WHERE h.hour <= (SELECT oldest.at FROM oldest)
      AND h.created = 0 AND h.assigned = 0 AND h.released = 0 AND h.lease_expired = 0 AND h.kept_alive = 0
      AND h.deleted = 0 AND h.deleted_leased = 0 AND h.expired = 0 AND h.expired_leased = 0 AND h.cooled_down = 0
), minutes_dropped AS (
    DELETE FROM key_event_minutes AS m
    WHERE m.minute <= (SELECT oldest.at FROM oldest)
      AND m.created = 0 AND m.assigned = 0 AND m.released = 0 AND m.lease_expired = 0 AND m.kept_alive = 0
      AND m.deleted = 0 AND m.deleted_leased = 0 AND m.expired = 0 AND m.expired_leased = 0 AND m.cooled_down = 0
), buckets_dropped AS (
    DELETE FROM lease_duration_minutes AS d
    WHERE d.minute <= (SELECT oldest.at FROM oldest) AND d.leases = 0
)
DELETE FROM key_cooldown_hours AS c
WHERE c.hour <= (SELECT oldest.at FROM oldest) AND c.cooldowns = 0;
