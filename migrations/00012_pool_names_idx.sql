-- +goose NO TRANSACTION
-- +goose Up

-- A key's name is unique in its pool, and finds the key (GET and DELETE
-- /pools/{pool}/keys/{name}). Built concurrently, dropped first and checked
-- afterwards, as in migration 00004.
DROP INDEX CONCURRENTLY IF EXISTS keys_pool_name_idx;
CREATE UNIQUE INDEX CONCURRENTLY keys_pool_name_idx ON keys (pool, name) WHERE name IS NOT NULL;

-- +goose StatementBegin
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_index WHERE indexrelid = 'keys_pool_name_idx'::regclass AND indisvalid) THEN
        RAISE EXCEPTION 'index keys_pool_name_idx is invalid after CREATE INDEX CONCURRENTLY; the migration is not recorded and runs again at the next start';
    END IF;
END;
$$;
-- +goose StatementEnd

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS keys_pool_name_idx;
