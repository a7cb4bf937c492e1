-- +goose Up

-- Which replicas have clients waiting for a key of a pool (GET /keys?wait=).
-- The counting trigger notifies a pool's freed keys only while a replica
-- waits for them: a NOTIFY on every release would serialise commits on the
-- notification queue's lock. A replica registers before it first claims
-- for its waiters, so a key freed after that claim always wakes it; rows of
-- a replica that died expire by themselves.
CREATE TABLE pool_waiters (
    pool       text        NOT NULL,
    replica    text        NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (pool, replica)
);

COMMENT ON TABLE pool_waiters IS 'Replicas with clients waiting for a key of the pool, until expires_at (database clock).';

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION pool_counts_apply(change_pool text, keys_delta bigint, blocked_delta bigint, freed bigint)
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

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION pool_counts_apply(change_pool text, keys_delta bigint, blocked_delta bigint, freed bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    free_now bigint;
BEGIN
    INSERT INTO pool_counts AS p (pool, shard, keys, blocked)
    VALUES (change_pool, floor(random() * 16)::int, keys_delta, blocked_delta)
    ON CONFLICT (pool, shard) DO UPDATE
    SET keys = p.keys + excluded.keys, blocked = p.blocked + excluded.blocked;
    IF freed > 0 THEN
        SELECT sum(c.keys - c.blocked) INTO free_now FROM pool_counts AS c WHERE c.pool = change_pool;
        IF free_now - freed <= 0 THEN
            PERFORM pg_notify('tokenorchestrator_keys_freed', freed || ' ' || change_pool);
        END IF;
    END IF;
END;
$$;
-- +goose StatementEnd
DROP TABLE pool_waiters;
