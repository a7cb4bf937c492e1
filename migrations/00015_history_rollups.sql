-- +goose Up

-- Rollups of the history: counts of key_events per pool and minute, per
-- pool and hour, the durations of leases per minute of their start, and the
-- cooldowns of each key per hour. The dashboard's charts and the reports
-- read them instead of the events, so that what they read grows with the
-- minutes and hours asked for, not with the rate of events. key_events and
-- its views (migration 00002) stay the operators' interface and the truth:
-- a rollup holds exactly what those views count, and the statements of the
-- hot path never write one. The background job folds new events into them.
--
-- Events commit out of order: a claim that began before another may commit
-- after it, with the earlier time. A fold therefore first reads the sessions
-- of the database (pg_stat_activity) and takes as its horizon the start of
-- the oldest transaction still running that has written or holds a
-- snapshot, or the start of that read if none is older. An event's at is
-- the clock when it was written, which is never before its transaction
-- began; so every event before the horizon belongs to a transaction that
-- had ended by then, and the fold's next statement, with a newer snapshot,
-- sees all of them. It adds the events from the last fold's horizon up to
-- the new one (folded_to) to the rollups. A reader adds the rollups, which
-- hold exactly the events before folded_to, to the events from folded_to
-- on: one index range over the few seconds or minutes the job has not
-- folded yet. Retention subtracts the events it deletes from the rollups in
-- the same transaction, so the rollups follow it exactly.
--
-- Whoever writes key_events other than through the service (an UPDATE,
-- DELETE or TRUNCATE by hand, or an INSERT of events with earlier times)
-- calls key_event_rollups_reset(), and the job folds the whole history again;
-- UPDATE, DELETE and TRUNCATE call it by themselves (trigger below).

-- One row: how far the history has been folded.
CREATE TABLE key_event_rollup_state (
    id        boolean     PRIMARY KEY DEFAULT true CONSTRAINT key_event_rollup_state_one_row CHECK (id),
    folded_to timestamptz NOT NULL DEFAULT '-infinity'
);

INSERT INTO key_event_rollup_state DEFAULT VALUES;

COMMENT ON TABLE key_event_rollup_state IS 'How far the history has been folded into the rollups: every event with at < folded_to, and none after, is counted in key_event_minutes, key_event_hours, lease_duration_minutes and key_cooldown_hours.';

-- Events per pool and UTC minute, by kind: *_leased count the events that
-- carry a lease token (a keep-alive that extended a lease; the end of a
-- held seat's lease by the key's deletion or expiry). deleted and expired
-- count keys, as key_activity_hourly does: a key of several seats ends with
-- an event per held seat, and counts once, by seat 0's (seat NULL or 0).
-- keys_offset_us and held_offset_us are, over the minute's events, the
-- change each makes to its pool's count of keys (+1 created, -1 deleted or
-- expired, as key_event_changes counts it) or of held seats (+1 assigned,
-- -1 released, lease_expired, or deleted or expired while held), times the
-- microseconds from the start of the minute to the event: with the net
-- changes they give the key-seconds and held-seconds the minute's events
-- add or take away up to any later moment, exactly (see the utilisation
-- report). Rows of the empty pool name hold the sum of every pool, which the dashboard's chart
-- of every pool reads. Rows are kept for two days, as long as the
-- dashboard's longest chart (a day) needs them.
CREATE TABLE key_event_minutes (
    pool              text        NOT NULL,
    minute            timestamptz NOT NULL,
    created           bigint      NOT NULL DEFAULT 0,
    assigned          bigint      NOT NULL DEFAULT 0,
    released          bigint      NOT NULL DEFAULT 0,
    lease_expired     bigint      NOT NULL DEFAULT 0,
    kept_alive        bigint      NOT NULL DEFAULT 0,
    kept_alive_leased bigint      NOT NULL DEFAULT 0,
    deleted           bigint      NOT NULL DEFAULT 0,
    deleted_leased    bigint      NOT NULL DEFAULT 0,
    expired           bigint      NOT NULL DEFAULT 0,
    expired_leased    bigint      NOT NULL DEFAULT 0,
    cooled_down       bigint      NOT NULL DEFAULT 0,
    keys_offset_us    bigint      NOT NULL DEFAULT 0,
    held_offset_us    bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (pool, minute)
);

-- The job drops rows older than two days through this one.
CREATE INDEX key_event_minutes_minute_idx ON key_event_minutes (minute);

COMMENT ON TABLE key_event_minutes IS 'Events of key_events before key_event_rollup_state.folded_to per pool and UTC minute, by kind (*_leased: those with a lease token); the empty pool name is every pool. keys_offset_us and held_offset_us: the change of each event to the pool''s keys or held seats times the microseconds from the minute''s start to it. Kept two days.';

-- The same per pool and UTC hour, for the whole history kept. No row for
-- every pool: the hourly reports list pools one by one.
CREATE TABLE key_event_hours (
    pool              text        NOT NULL,
    hour              timestamptz NOT NULL,
    created           bigint      NOT NULL DEFAULT 0,
    assigned          bigint      NOT NULL DEFAULT 0,
    released          bigint      NOT NULL DEFAULT 0,
    lease_expired     bigint      NOT NULL DEFAULT 0,
    kept_alive        bigint      NOT NULL DEFAULT 0,
    kept_alive_leased bigint      NOT NULL DEFAULT 0,
    deleted           bigint      NOT NULL DEFAULT 0,
    deleted_leased    bigint      NOT NULL DEFAULT 0,
    expired           bigint      NOT NULL DEFAULT 0,
    expired_leased    bigint      NOT NULL DEFAULT 0,
    cooled_down       bigint      NOT NULL DEFAULT 0,
    keys_offset_us    bigint      NOT NULL DEFAULT 0,
    held_offset_us    bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (pool, hour)
);

-- Reports of every pool read a range of hours through this one.
CREATE INDEX key_event_hours_hour_idx ON key_event_hours (hour);

COMMENT ON TABLE key_event_hours IS 'key_event_minutes per pool and UTC hour, over the whole history kept (no row for every pool).';

-- The bounds of the dashboard's lease durations, in seconds: bucket 0 holds
-- the leases shorter than the first, bucket i those from the i-th bound up
-- to the next, bucket 8 those of 900 s or more.
-- +goose StatementBegin
CREATE FUNCTION lease_duration_bucket(seconds float8) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT width_bucket(seconds, ARRAY[1, 5, 15, 30, 60, 120, 300, 900]::float8[])
$$;
-- +goose StatementEnd

COMMENT ON FUNCTION lease_duration_bucket(float8) IS 'The bucket of the dashboard''s lease durations that a duration in seconds falls in: width_bucket over the bounds 1, 5, 15, 30, 60, 120, 300 and 900 s.';

-- Leases that ended, per pool, UTC minute of their start and bucket of
-- their duration, as key_leases tells them (a lease ends with the first
-- released, lease_expired, deleted or expired event of its key after its
-- start, when that event carries its token). The leases of a minute are
-- its assigned events in key_event_minutes; those not counted here are
-- held. The empty pool name is every pool; kept two days, as key_event_minutes.
CREATE TABLE lease_duration_minutes (
    pool   text        NOT NULL,
    minute timestamptz NOT NULL,
    bucket integer     NOT NULL,
    leases bigint      NOT NULL,
    PRIMARY KEY (pool, minute, bucket)
);

CREATE INDEX lease_duration_minutes_minute_idx ON lease_duration_minutes (minute);

COMMENT ON TABLE lease_duration_minutes IS 'Leases of key_leases that started in the UTC minute and have ended (both before key_event_rollup_state.folded_to), per pool (the empty name: every pool) and bucket of duration (lease_duration_bucket). Kept two days.';

-- Cooldowns per pool, UTC hour and key: the rows of key_cooldowns_hourly.
CREATE TABLE key_cooldown_hours (
    pool             text        NOT NULL,
    hour             timestamptz NOT NULL,
    key_id           uuid        NOT NULL,
    cooldowns        bigint      NOT NULL,
    total_cooldown   interval    NOT NULL,
    longest_cooldown interval    NOT NULL,
    PRIMARY KEY (pool, hour, key_id)
);

CREATE INDEX key_cooldown_hours_hour_idx ON key_cooldown_hours (hour);

COMMENT ON TABLE key_cooldown_hours IS 'Cooldowns (released and cooled_down events with one) before key_event_rollup_state.folded_to per pool, UTC hour and key: how many, their sum and the longest.';

-- Empties the rollups: the background job folds the whole history again,
-- a batch at a time, and until it has, reports read the events. For
-- history written by hand. It waits for a fold or a retention batch that
-- runs, and keeps them waiting until the caller's transaction ends.
-- +goose StatementBegin
CREATE FUNCTION key_event_rollups_reset() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    -- The lock every fold and retention batch takes ("tokenrol").
    PERFORM pg_advisory_xact_lock(8390042714203385708);
    DELETE FROM key_event_minutes;
    DELETE FROM key_event_hours;
    DELETE FROM lease_duration_minutes;
    DELETE FROM key_cooldown_hours;
    UPDATE key_event_rollup_state SET folded_to = '-infinity';
END;
$$;
-- +goose StatementEnd

COMMENT ON FUNCTION key_event_rollups_reset() IS 'Empties the rollups of key_events, which the background job then builds again from the whole history. Call it after writing history by hand (an UPDATE, DELETE or TRUNCATE of key_events calls it by itself).';

-- History is append-only: the service never updates an event, and deletes
-- only through retention, which keeps the rollups in step itself and says
-- so in its transaction. Any other change resets the rollups. A statement
-- trigger on these three only: inserts, the hot path's, fire nothing.
-- +goose StatementBegin
CREATE FUNCTION key_events_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('tokenorchestrator.history_retention', true) IS DISTINCT FROM 'on' THEN
        PERFORM key_event_rollups_reset();
    END IF;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

-- The trigger needs a short lock on key_events that claims queue behind:
-- rather than wait long for it behind a long transaction, the migration
-- gives up and is retried.
SET LOCAL lock_timeout = '5s';

CREATE TRIGGER key_events_rollups_reset
    AFTER UPDATE OR DELETE OR TRUNCATE ON key_events
    FOR EACH STATEMENT EXECUTE FUNCTION key_events_changed();

-- +goose Down
DROP TRIGGER key_events_rollups_reset ON key_events;
DROP FUNCTION key_events_changed();
DROP FUNCTION key_event_rollups_reset();
DROP TABLE key_cooldown_hours;
DROP TABLE lease_duration_minutes;
DROP FUNCTION lease_duration_bucket(float8);
DROP TABLE key_event_hours;
DROP TABLE key_event_minutes;
DROP TABLE key_event_rollup_state;
