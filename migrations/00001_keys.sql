-- +goose Up

-- Every lease gets a fresh number from this sequence: a fencing token that
-- lets a client whose lease ran out be told apart from the current holder.
CREATE SEQUENCE lease_token_seq AS bigint;

CREATE TABLE keys (
    id                 uuid             PRIMARY KEY DEFAULT gen_random_uuid(),
    pool               text             NOT NULL,
    -- Random position on [0, 1): a claim takes the first free key at or after
    -- a random point, so the position is redrawn every time a key is freed to
    -- give every key its fair share over many claims.
    position           double precision NOT NULL DEFAULT random(),
    created_at         timestamptz      NOT NULL DEFAULT now(),
    -- The key is gone once this passes, whether or not it has been deleted yet.
    expires_at         timestamptz      NOT NULL,
    last_keep_alive_at timestamptz,
    times_assigned     bigint           NOT NULL DEFAULT 0,
    -- The current lease; all three are set together or not at all.
    lease_token        bigint,
    blocked_at         timestamptz,
    lease_expires_at   timestamptz,
    CONSTRAINT keys_lease_complete CHECK (
        (lease_token IS NULL) = (blocked_at IS NULL)
        AND (lease_token IS NULL) = (lease_expires_at IS NULL)
    ),
    CONSTRAINT keys_pool_name CHECK (pool ~ '^[A-Za-z0-9._-]{1,64}$')
);

-- Claims walk this index from a random position: it holds free keys only, so
-- a claim never steps over blocked ones however busy the pool is.
CREATE INDEX keys_free_position_idx ON keys (pool, position) WHERE lease_token IS NULL;

-- The background job finds ended leases and ended lives through these.
CREATE INDEX keys_lease_expires_at_idx ON keys (lease_expires_at) WHERE lease_token IS NOT NULL;
CREATE INDEX keys_expires_at_idx ON keys (expires_at);

-- Append-only history of every state change, written in the same statement as
-- the change itself.
CREATE TABLE key_events (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- clock_timestamp(), not now(): now() is when the statement's transaction
    -- began, which can precede the moment it locked the row by as long as the
    -- backend waited for a CPU. The moment the row is written, under the row
    -- lock, puts the events of one key in their true order, so that one
    -- lease's end is always recorded before the next lease's start.
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    key_id      uuid        NOT NULL,
    pool        text        NOT NULL,
    event       text        NOT NULL CONSTRAINT key_events_event CHECK (event IN (
                    'created', 'assigned', 'released', 'lease_expired',
                    'kept_alive', 'deleted', 'expired')),
    -- The lease the event concerns, for events on a blocked key.
    lease_token bigint
);

CREATE INDEX key_events_at_idx ON key_events (at);
CREATE INDEX key_events_pool_at_idx ON key_events (pool, at);
CREATE INDEX key_events_key_id_at_idx ON key_events (key_id, at);

COMMENT ON TABLE key_events IS 'Append-only history of every key state change, with the database time and the lease token.';
COMMENT ON COLUMN key_events.event IS 'created, assigned, released (explicit unblock), lease_expired (released by the background job), kept_alive, deleted (explicit), expired (deleted by the background job).';

-- Live counts per pool, kept by the triggers below in the same transaction
-- as every change, so that gauges and availability headers never count rows.
-- The same triggers send the notification that wakes clients waiting for a
-- key (GET /keys?wait=).
-- Each change adds to one of 16 rows per pool picked at random: concurrent
-- claims rarely wait on each other's counter row.
CREATE TABLE pool_counts (
    pool    text    NOT NULL,
    shard   integer NOT NULL,
    keys    bigint  NOT NULL DEFAULT 0,
    blocked bigint  NOT NULL DEFAULT 0,
    PRIMARY KEY (pool, shard)
);

COMMENT ON TABLE pool_counts IS 'Per-pool key counts, split over shards; sum keys and blocked per pool. Keys whose life has ended count until the background job deletes them.';

-- Which replicas have clients waiting for a key of a pool (GET /keys?wait=).
-- The counting trigger announces a pool's freed keys only while a replica
-- waits for them: a NOTIFY on every release would serialise commits on the
-- notification queue's lock. A replica registers before it first claims for
-- its waiters, so a key freed after that claim always wakes it; rows of a
-- replica that died expire by themselves.
CREATE TABLE pool_waiters (
    pool       text        NOT NULL,
    replica    text        NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (pool, replica)
);

COMMENT ON TABLE pool_waiters IS 'Replicas with clients waiting for a key of the pool, until expires_at (database clock).';

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

-- +goose Down
DROP TABLE key_events;
DROP TABLE keys;
DROP FUNCTION pool_counts_add();
DROP FUNCTION pool_counts_apply(text, bigint, bigint, bigint);
DROP TABLE pool_counts;
DROP TABLE pool_waiters;
DROP SEQUENCE lease_token_seq;
