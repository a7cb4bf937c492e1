-- +goose NO TRANSACTION
-- +goose Up

-- The dashboard lists a pool's keys a page at a time, in id order, from the
-- last id of the previous page (GET /pools/{pool}/keys?after=). This index
-- makes each page one range of a pool's entries, whatever the size of the
-- other pools. Built concurrently: replicas keep assigning keys meanwhile.

-- This migration runs only while it is not recorded as applied, so an index
-- of this name is what an earlier attempt left: an invalid one if that build
-- was cancelled (a timeout behind a long transaction, a restart of the
-- database), which the planner never uses and CREATE INDEX IF NOT EXISTS
-- would take for done; or a valid one if the program stopped before the
-- version was recorded. Either way it is dropped and built again. Dropped
-- concurrently rather than by a DROP INDEX in a DO block that looks at
-- pg_index.indisvalid first: that one would lock every claim out of keys
-- while it waits for the transactions in progress.
DROP INDEX CONCURRENTLY IF EXISTS keys_pool_id_idx;

CREATE INDEX CONCURRENTLY keys_pool_id_idx ON keys (pool, id);

-- A build that fails stops the migration with its error; this makes sure
-- that no invalid index is ever recorded as applied.
-- +goose StatementBegin
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_index WHERE indexrelid = 'keys_pool_id_idx'::regclass AND indisvalid) THEN
        RAISE EXCEPTION 'index keys_pool_id_idx is invalid after CREATE INDEX CONCURRENTLY; the migration is not recorded and runs again at the next start';
    END IF;
END;
$$;
-- +goose StatementEnd

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS keys_pool_id_idx;
