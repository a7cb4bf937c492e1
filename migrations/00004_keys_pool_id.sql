-- +goose NO TRANSACTION
-- +goose Up

-- The dashboard lists a pool's keys a page at a time, in id order, from the
-- last id of the previous page (GET /pools/{pool}/keys?after=). This index
-- makes each page one range of a pool's entries, whatever the size of the
-- other pools. Built concurrently: replicas keep assigning keys meanwhile.
CREATE INDEX CONCURRENTLY IF NOT EXISTS keys_pool_id_idx ON keys (pool, id);

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS keys_pool_id_idx;
