-- +goose Up

-- The hot path, a claim and a release, rewrites a key's lease state twice per
-- cycle. Such an update cannot be HOT (it changes the columns of the partial
-- indexes), so PostgreSQL adds an entry to every index of the table for each
-- new row version, and nothing may remove the old versions while some
-- snapshot older than them is open (a long report, a backup, a standby with
-- hot_standby_feedback). The lease state therefore moves to a narrow table
-- of its own that carries only the indexes a claim, a release and the
-- background job need; a key's identity and life (keys, with its indexes on
-- expiry and on pool and id) are written only on creation, keep-alive and
-- deletion.
CREATE TABLE key_state (
    key_id           uuid             PRIMARY KEY,
    pool             text             NOT NULL,
    -- Random position on [0, 1): a claim takes the first free key at or after
    -- a random point, so the position is redrawn every time a key is freed to
    -- give every key its fair share over many claims.
    position         double precision NOT NULL DEFAULT random(),
    times_assigned   bigint           NOT NULL DEFAULT 0,
    -- The current lease; all three are set together or not at all.
    lease_token      bigint,
    blocked_at       timestamptz,
    lease_expires_at timestamptz,
    CONSTRAINT key_state_lease_complete CHECK (
        (lease_token IS NULL) = (blocked_at IS NULL)
        AND (lease_token IS NULL) = (lease_expires_at IS NULL)
    )
);

COMMENT ON TABLE key_state IS 'Lease state of each key (one row per row of keys, same id): position for the random pick, the current lease (token, blocked_at, lease_expires_at; all NULL when free) and times_assigned.';

INSERT INTO key_state (key_id, pool, position, times_assigned, lease_token, blocked_at, lease_expires_at)
SELECT id, pool, position, times_assigned, lease_token, blocked_at, lease_expires_at FROM keys;

-- Claims walk this index from a random position: it holds free keys only, so
-- a claim never steps over blocked ones however busy the pool is.
CREATE INDEX key_state_free_position_idx ON key_state (pool, position) WHERE lease_token IS NULL;
-- The background job finds ended leases through this one.
CREATE INDEX key_state_lease_expires_at_idx ON key_state (lease_expires_at) WHERE lease_token IS NOT NULL;

DROP TRIGGER keys_count_insert ON keys;
DROP TRIGGER keys_count_update ON keys;
DROP TRIGGER keys_count_delete ON keys;
DROP FUNCTION pool_counts_add();
DROP FUNCTION pool_counts_apply(text, bigint, bigint, bigint);

ALTER TABLE keys
    DROP CONSTRAINT keys_lease_complete,
    DROP COLUMN position,
    DROP COLUMN times_assigned,
    DROP COLUMN lease_token,
    DROP COLUMN blocked_at,
    DROP COLUMN lease_expires_at;

-- History is append-only and nothing looks an event up by its id: the
-- primary key was one more index entry for every event, two per claim and
-- release cycle. The id stays, as the order of insertion; retention deletes
-- the rows it has locked by their physical address (ctid), which never
-- changes since no event is ever updated.
ALTER TABLE key_events DROP CONSTRAINT key_events_pkey;

COMMENT ON COLUMN key_events.event IS 'created, assigned, released (explicit unblock), lease_expired (released by the background job), kept_alive (the key''s life reset; lease_token set when the keep-alive presented it and extended that lease), deleted (explicit), expired (deleted by the background job).';

COMMENT ON TABLE keys IS 'Every live key: its pool, creation, life (expires_at, last_keep_alive_at). Its lease state is in key_state.';

-- Per-pool counts without a row that every statement updates. A counter row
-- updated by every claim and release is a queue for row locks, and under a
-- held snapshot it grows a chain of versions that every later update and
-- every read walks (the sum of 16 such rows read 209 buffers after 3,000
-- cycles). Instead, each statement that changes counts appends one row of
-- changes per pool, and the background job folds the changes into the
-- totals. A change row is written once and never updated.
CREATE TABLE pool_count_totals (
    pool    text   PRIMARY KEY,
    keys    bigint NOT NULL DEFAULT 0,
    blocked bigint NOT NULL DEFAULT 0,
    -- Every change of the pool made by a transaction older than this has
    -- been folded into the totals: it is the oldest transaction still
    -- running when the last fold looked (pg_snapshot_xmin). A reader adds
    -- the changes from this transaction on, an index range that a fold
    -- keeps short even while an old snapshot prevents cleanup.
    horizon xid8   NOT NULL DEFAULT '0'
);

CREATE TABLE pool_count_changes (
    pool    text   NOT NULL,
    xid     xid8   NOT NULL DEFAULT pg_current_xact_id(),
    keys    bigint NOT NULL,
    blocked bigint NOT NULL
);

CREATE INDEX pool_count_changes_pool_xid_idx ON pool_count_changes (pool, xid);

INSERT INTO pool_count_totals (pool, keys, blocked)
SELECT pool, count(*), count(lease_token) FROM key_state GROUP BY pool;

DROP TABLE pool_counts;

-- +goose StatementBegin
-- Wakes the replicas whose clients wait for a key of the pool (GET
-- /keys?wait=) when a statement frees keys of it, and returns how many it
-- freed. Only while a replica has registered waiters for the pool
-- (pool_waiters): a NOTIFY on every release would serialise commits on the
-- notification queue's lock. The payload is "<freed> <pool>".
CREATE FUNCTION announce_freed(freed_pool text, freed bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    IF freed > 0 AND EXISTS (
        SELECT 1 FROM pool_waiters AS w WHERE w.pool = freed_pool AND w.expires_at > now()
    ) THEN
        PERFORM pg_notify('tokenorchestrator_keys_freed', freed || ' ' || freed_pool);
    END IF;
    RETURN freed;
END;
$$;
-- +goose StatementEnd

-- The counts of each pool as every statement sees them: the totals plus the
-- changes not yet folded. Keys whose life has ended count until the
-- background job deletes them. Exact: a change row is written in the same
-- statement as the change itself, and a fold moves rows into the totals in
-- one transaction.
CREATE VIEW pool_counts AS
SELECT t.pool, (t.keys + c.keys)::bigint AS keys, (t.blocked + c.blocked)::bigint AS blocked
FROM pool_count_totals AS t
CROSS JOIN LATERAL (
    SELECT coalesce(sum(c.keys), 0)::bigint AS keys, coalesce(sum(c.blocked), 0)::bigint AS blocked
    FROM pool_count_changes AS c
    WHERE c.pool = t.pool AND c.xid >= t.horizon
) AS c;

COMMENT ON VIEW pool_counts IS 'Per-pool key counts (keys, blocked), exact at the reader''s snapshot. Keys whose life has ended count until the background job deletes them.';

-- +goose Down
ALTER TABLE key_events ADD PRIMARY KEY (id);
DROP FUNCTION announce_freed(text, bigint);
DROP VIEW pool_counts;
CREATE TABLE pool_counts (
    pool    text    NOT NULL,
    shard   integer NOT NULL,
    keys    bigint  NOT NULL DEFAULT 0,
    blocked bigint  NOT NULL DEFAULT 0,
    PRIMARY KEY (pool, shard)
);
INSERT INTO pool_counts (pool, shard, keys, blocked)
SELECT pool, 0, count(*), count(lease_token) FROM key_state GROUP BY pool;
DROP TABLE pool_count_changes;
DROP TABLE pool_count_totals;
ALTER TABLE keys
    ADD COLUMN position double precision NOT NULL DEFAULT random(),
    ADD COLUMN times_assigned bigint NOT NULL DEFAULT 0,
    ADD COLUMN lease_token bigint,
    ADD COLUMN blocked_at timestamptz,
    ADD COLUMN lease_expires_at timestamptz;
UPDATE keys AS k
SET position = s.position, times_assigned = s.times_assigned, lease_token = s.lease_token,
    blocked_at = s.blocked_at, lease_expires_at = s.lease_expires_at
FROM key_state AS s WHERE s.key_id = k.id;
ALTER TABLE keys ADD CONSTRAINT keys_lease_complete CHECK (
    (lease_token IS NULL) = (blocked_at IS NULL)
    AND (lease_token IS NULL) = (lease_expires_at IS NULL)
);
CREATE INDEX keys_free_position_idx ON keys (pool, position) WHERE lease_token IS NULL;
CREATE INDEX keys_lease_expires_at_idx ON keys (lease_expires_at) WHERE lease_token IS NOT NULL;
DROP TABLE key_state;

-- The counting triggers of migration 00001, as they were.
-- +goose StatementBegin
-- Adds one statement's changes to a pool's counts: keys that came (or, when
-- negative, went), keys that became blocked (or free), and keys that became
-- free by creation or release.
CREATE FUNCTION pool_counts_apply(change_pool text, keys_delta bigint, blocked_delta bigint, freed bigint)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO pool_counts AS p (pool, shard, keys, blocked)
    VALUES (change_pool, floor(random() * 16)::int, keys_delta, blocked_delta)
    ON CONFLICT (pool, shard) DO UPDATE
    SET keys = p.keys + excluded.keys, blocked = p.blocked + excluded.blocked;

    -- Wake the replicas whose clients wait for a key of this pool. The
    -- payload is "<freed> <pool>".
    IF freed > 0 AND EXISTS (
        SELECT 1 FROM pool_waiters AS w WHERE w.pool = change_pool AND w.expires_at > now()
    ) THEN
        PERFORM pg_notify('tokenorchestrator_keys_freed', freed || ' ' || change_pool);
    END IF;
END;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION pool_counts_add() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    change record;
BEGIN
    IF TG_OP = 'INSERT' THEN
        FOR change IN
            SELECT n.pool, count(*) AS keys, count(n.lease_token) AS blocked,
                   count(*) - count(n.lease_token) AS freed
            FROM new_rows AS n GROUP BY n.pool
        LOOP
            PERFORM pool_counts_apply(change.pool, change.keys, change.blocked, change.freed);
        END LOOP;
    ELSIF TG_OP = 'DELETE' THEN
        FOR change IN
            SELECT o.pool, count(*) AS keys, count(o.lease_token) AS blocked
            FROM old_rows AS o GROUP BY o.pool
        LOOP
            PERFORM pool_counts_apply(change.pool, -change.keys, -change.blocked, 0);
        END LOOP;
    ELSE
        -- Only a change of lease state moves a count: keep-alives add nothing.
        FOR change IN
            SELECT n.pool,
                   count(n.lease_token) - count(*) FILTER (WHERE n.lease_token IS NULL) AS blocked,
                   count(*) FILTER (WHERE n.lease_token IS NULL) AS freed
            FROM new_rows AS n JOIN old_rows AS o ON o.id = n.id
            WHERE (n.lease_token IS NULL) <> (o.lease_token IS NULL)
            GROUP BY n.pool
        LOOP
            PERFORM pool_counts_apply(change.pool, 0, change.blocked, change.freed);
        END LOOP;
    END IF;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER keys_count_insert AFTER INSERT ON keys
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pool_counts_add();
CREATE TRIGGER keys_count_update AFTER UPDATE ON keys
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pool_counts_add();
CREATE TRIGGER keys_count_delete AFTER DELETE ON keys
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pool_counts_add();
