-- +goose Up

-- Seats: a key (one credential) may be held by up to N leases at once, each
-- with its own token, deadline, keep-alives and history. Each seat is a row
-- of key_state, so a claim still walks one partial index of claimable rows
-- (key_state_claimable_position_idx) from a random point with FOR UPDATE
-- SKIP LOCKED, and two seats of a key are claimed, released and expired
-- independently, as two keys were. A key of one seat is exactly a key as
-- before: one key_state row, seat 0. The primary keys gain the seat in
-- migration 00014, built concurrently.
ALTER TABLE keys ADD COLUMN seats integer NOT NULL DEFAULT 1;
ALTER TABLE keys ADD CONSTRAINT keys_seats CHECK (seats BETWEEN 1 AND 1000) NOT VALID;
ALTER TABLE keys VALIDATE CONSTRAINT keys_seats;

COMMENT ON COLUMN keys.seats IS 'How many leases may hold the key at once: one key_state row per seat (0 .. seats-1).';

-- last_lease_token is the seat's most recently ended lease: a release or a
-- cooldown that names an ended lease is told apart from one that names a
-- lease older than the seat's latest without reading history. A release
-- sets it from the lease it ends, in the update it makes anyway.
ALTER TABLE key_state
    ADD COLUMN seat             smallint NOT NULL DEFAULT 0,
    ADD COLUMN last_lease_token bigint;
ALTER TABLE key_state ADD CONSTRAINT key_state_seat CHECK (seat BETWEEN 0 AND 999) NOT VALID;
ALTER TABLE key_state VALIDATE CONSTRAINT key_state_seat;

COMMENT ON TABLE key_state IS 'Lease state of each seat of each key (keys.seats rows per key, seat 0 .. seats-1): position for the random pick, the current lease (token, blocked_at, lease_expires_at; all NULL when free), the most recently ended lease (last_lease_token) and times_assigned.';
COMMENT ON COLUMN key_state.last_lease_token IS 'The seat''s most recently ended lease (NULL before the first one ended).';

-- Label rows are kept per seat: a seat is claimable by label while it is
-- claimable, whatever the key's other seats do.
ALTER TABLE key_labels ADD COLUMN seat smallint NOT NULL DEFAULT 0;

COMMENT ON TABLE key_labels IS 'Labels of keys ("name=value"), one row per label and seat; position is set while the seat is claimable and NULL otherwise. The labels as the API shows them are keys.labels.';

-- The seat a lease held, on its events (assigned, released, lease_expired,
-- kept_alive with a token, cooled_down, and deleted or expired while held);
-- NULL on events of the key as a whole.
ALTER TABLE key_events ADD COLUMN seat smallint;

COMMENT ON COLUMN key_events.seat IS 'The seat of the lease the event is about (with lease_token); NULL for events of the key as a whole.';

-- Default seats of the pool's new keys; NULL: 1.
ALTER TABLE pools ADD COLUMN seats integer CONSTRAINT pools_seats CHECK (seats BETWEEN 1 AND 1000);

COMMENT ON COLUMN pools.seats IS 'Seats of the pool''s new keys unless a key names its own; NULL: 1.';

-- Counts of seats beside counts of keys; blocked counts held seats. A
-- change row written without seats (NULL) is one of keys of one seat each,
-- so a replica that knows nothing of seats still counts right.
ALTER TABLE pool_count_totals ADD COLUMN seats bigint;
UPDATE pool_count_totals SET seats = keys;
ALTER TABLE pool_count_totals ALTER COLUMN seats SET DEFAULT 0, ALTER COLUMN seats SET NOT NULL;
ALTER TABLE pool_count_changes ADD COLUMN seats bigint;

CREATE OR REPLACE VIEW pool_counts AS
SELECT t.pool, (t.keys + c.keys)::bigint AS keys, (t.blocked + c.blocked)::bigint AS blocked,
       (t.seats + c.seats)::bigint AS seats
FROM pool_count_totals AS t
CROSS JOIN LATERAL (
    SELECT coalesce(sum(c.keys), 0)::bigint AS keys, coalesce(sum(c.blocked), 0)::bigint AS blocked,
           coalesce(sum(coalesce(c.seats, c.keys)), 0)::bigint AS seats
    FROM pool_count_changes AS c
    WHERE c.pool = t.pool AND c.xid >= t.horizon
) AS c;

COMMENT ON VIEW pool_counts IS 'Per-pool counts: keys, seats (of those keys) and blocked (held seats), exact at the reader''s snapshot. Keys whose life has ended count until the background job deletes them.';

-- A key ends with one deleted or expired event per seat it had held (each
-- lease needs its end), and the one of seat 0 (seat NULL, or 0 when held):
-- the key itself counts once, by that one.
CREATE OR REPLACE VIEW key_activity_hourly AS
SELECT c.pool,
       c.hour,
       n.created,
       n.deleted,
       n.expired
FROM history_hours AS c
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE e.event = 'created') AS created,
           count(*) FILTER (WHERE e.event = 'deleted' AND coalesce(e.seat, 0) = 0) AS deleted,
           count(*) FILTER (WHERE e.event = 'expired' AND coalesce(e.seat, 0) = 0) AS expired
    FROM key_events AS e
    WHERE e.pool = c.pool AND e.at >= c.hour AND e.at < c.hour + interval '1 hour'
      AND e.event IN ('created', 'deleted', 'expired')
) AS n
WHERE n.created + n.deleted + n.expired > 0;

CREATE OR REPLACE VIEW key_event_changes AS
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

-- +goose Down
CREATE OR REPLACE VIEW key_activity_hourly AS
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
CREATE OR REPLACE VIEW key_event_changes AS
SELECT e.id, e.at, e.key_id, e.pool, e.event, e.lease_token,
       CASE WHEN e.event = 'created' THEN 1
            WHEN e.event IN ('deleted', 'expired') THEN -1
            ELSE 0 END AS keys,
       CASE WHEN e.event = 'assigned' THEN 1
            WHEN e.event IN ('released', 'lease_expired') THEN -1
            WHEN e.event IN ('deleted', 'expired') AND e.lease_token IS NOT NULL THEN -1
            ELSE 0 END AS blocked
FROM key_events AS e;
DROP VIEW pool_counts;
CREATE VIEW pool_counts AS
SELECT t.pool, (t.keys + c.keys)::bigint AS keys, (t.blocked + c.blocked)::bigint AS blocked
FROM pool_count_totals AS t
CROSS JOIN LATERAL (
    SELECT coalesce(sum(c.keys), 0)::bigint AS keys, coalesce(sum(c.blocked), 0)::bigint AS blocked
    FROM pool_count_changes AS c
    WHERE c.pool = t.pool AND c.xid >= t.horizon
) AS c;
ALTER TABLE pool_count_changes DROP COLUMN seats;
ALTER TABLE pool_count_totals DROP COLUMN seats;
ALTER TABLE pools DROP COLUMN seats;
ALTER TABLE key_events DROP COLUMN seat;
DELETE FROM key_labels WHERE seat <> 0;
ALTER TABLE key_labels DROP COLUMN seat;
DELETE FROM key_state WHERE seat <> 0;
ALTER TABLE key_state DROP CONSTRAINT key_state_seat, DROP COLUMN seat, DROP COLUMN last_lease_token;
ALTER TABLE keys DROP CONSTRAINT keys_seats, DROP COLUMN seats;
