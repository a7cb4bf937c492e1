-- +goose Up

-- The lease durations per hour (the lease-durations report) count every
-- lease that started in an hour and give the mean, median, 95th percentile
-- and longest duration of those that ended. Read from key_leases, that
-- meant every lease of the range, held ones included, each with a step
-- along its key's events to find its end (none, for a held one): at
-- 1,000,000 keys of which 5% were held, 160,000 buffers for one pool's
-- day. The percentiles need each ended lease's duration, so the background
-- job's fold, which already pairs every end with its lease for
-- lease_duration_minutes (migration 00015), now also keeps a row per ended
-- lease here, for the whole history kept. The report then reads the
-- pool's hours from key_event_hours (the leases that started), the ended
-- leases of its range from this table, and the ends since the table's
-- horizon from key_events: what it reads grows with the leases that ended
-- in its range, never with those still held.
--
-- ended_leases holds exactly the leases of key_leases whose end is before
-- key_event_rollup_state.ended_leases_to. That horizon is kept apart from
-- folded_to so that a fold of the previous version (a replica not yet
-- upgraded), which advances folded_to without writing this table, leaves
-- the table exact: the job catches it up to folded_to a batch at a time
-- (the whole history kept, after this upgrade), and readers read the ends
-- from ended_leases_to on from key_events meanwhile.
CREATE TABLE ended_leases (
    pool        text        NOT NULL,
    -- The lease's start: its assigned event's at, key and token.
    started_at  timestamptz NOT NULL,
    key_id      uuid        NOT NULL,
    lease_token bigint      NOT NULL,
    -- As key_leases.duration_seconds computes it.
    seconds     float8      NOT NULL
);

-- One pool's leases of a range, and retention's by the pools of its
-- batch, by pool and time; every pool's by the hour of their start, an
-- expression that only a statement of every pool names: a statement of
-- one pool cannot be planned on that index, whatever the statistics say of
-- its pool's share of the leases.
CREATE INDEX ended_leases_pool_started_at_idx ON ended_leases (pool, started_at);
CREATE INDEX ended_leases_hour_idx ON ended_leases (date_bin('1 hour', started_at, timestamptz '2000-01-01 00:00:00+00'));

COMMENT ON TABLE ended_leases IS 'The leases of key_leases that have ended before key_event_rollup_state.ended_leases_to, one row each: pool, start (started_at, key_id, lease_token) and duration_seconds (seconds). Kept as long as the history.';

-- The column takes a short lock on the one-row table that every report
-- reads: rather than wait long for it behind a long report, the migration
-- gives up and is retried.
SET LOCAL lock_timeout = '5s';

ALTER TABLE key_event_rollup_state
    ADD COLUMN ended_leases_to timestamptz NOT NULL DEFAULT '-infinity';

COMMENT ON COLUMN key_event_rollup_state.ended_leases_to IS 'How far ended_leases has been folded: every lease of key_leases whose end is before it, and none other, has its row there. At most folded_to.';

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION key_event_rollups_reset() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    -- The lock every fold and retention batch takes ("tokenrol").
    PERFORM pg_advisory_xact_lock(8390042714203385708);
    DELETE FROM key_event_minutes;
    DELETE FROM key_event_hours;
    DELETE FROM lease_duration_minutes;
    DELETE FROM key_cooldown_hours;
    DELETE FROM ended_leases;
    UPDATE key_event_rollup_state SET folded_to = '-infinity', ended_leases_to = '-infinity';
END;
$$;
-- +goose StatementEnd

-- Retention keeps ended_leases in step from this version on and says so
-- with a value of its own: the retention of the previous version, which
-- does not, says 'on', and empties the rollups as any other deletion does.
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

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION key_events_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('tokenorchestrator.history_retention', true) IS DISTINCT FROM 'on' THEN
        PERFORM key_event_rollups_reset();
    END IF;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION key_event_rollups_reset() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(8390042714203385708);
    DELETE FROM key_event_minutes;
    DELETE FROM key_event_hours;
    DELETE FROM lease_duration_minutes;
    DELETE FROM key_cooldown_hours;
    UPDATE key_event_rollup_state SET folded_to = '-infinity';
END;
$$;
-- +goose StatementEnd

ALTER TABLE key_event_rollup_state DROP COLUMN ended_leases_to;
DROP TABLE ended_leases;
