-- +goose NO TRANSACTION
-- +goose Up

-- The indexes of migration 00009's columns, built concurrently (replicas keep
-- claiming meanwhile); see migration 00004 for why each is dropped first and
-- checked afterwards.
--
-- Claims walk key_state_claimable_position_idx: free keys that are not
-- cooling down. It replaces key_state_free_position_idx, which held cooling
-- keys too, so that a claim never steps over them.
DROP INDEX CONCURRENTLY IF EXISTS key_state_claimable_position_idx;
CREATE INDEX CONCURRENTLY key_state_claimable_position_idx ON key_state (pool, position)
    WHERE lease_token IS NULL AND cooling_until IS NULL;

-- The background job ends cooldowns through this one.
DROP INDEX CONCURRENTLY IF EXISTS key_state_cooling_until_idx;
CREATE INDEX CONCURRENTLY key_state_cooling_until_idx ON key_state (cooling_until) WHERE cooling_until IS NOT NULL;

-- Two keys of a pool never carry the same secret (digests under one
-- encryption key; during a rotation the check of KeyCreateWithSecrets also
-- compares the digests under the older keys).
DROP INDEX CONCURRENTLY IF EXISTS keys_pool_secret_digest_idx;
CREATE UNIQUE INDEX CONCURRENTLY keys_pool_secret_digest_idx ON keys (pool, secret_digest) WHERE secret_digest IS NOT NULL;

-- `secrets rotate` finds the rows sealed under an older key through this one.
DROP INDEX CONCURRENTLY IF EXISTS keys_secret_key_id_idx;
CREATE INDEX CONCURRENTLY keys_secret_key_id_idx ON keys (secret_key_id, id) WHERE secret_key_id IS NOT NULL;

-- +goose StatementBegin
DO $$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['key_state_claimable_position_idx', 'key_state_cooling_until_idx',
                                'keys_pool_secret_digest_idx', 'keys_secret_key_id_idx'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_index WHERE indexrelid = name::regclass AND indisvalid) THEN
            RAISE EXCEPTION 'index % is invalid after CREATE INDEX CONCURRENTLY; the migration is not recorded and runs again at the next start', name;
        END IF;
    END LOOP;
END;
$$;
-- +goose StatementEnd

DROP INDEX CONCURRENTLY IF EXISTS key_state_free_position_idx;

-- +goose Down
CREATE INDEX CONCURRENTLY IF NOT EXISTS key_state_free_position_idx ON key_state (pool, position) WHERE lease_token IS NULL;
DROP INDEX CONCURRENTLY IF EXISTS keys_secret_key_id_idx;
DROP INDEX CONCURRENTLY IF EXISTS keys_pool_secret_digest_idx;
DROP INDEX CONCURRENTLY IF EXISTS key_state_cooling_until_idx;
DROP INDEX CONCURRENTLY IF EXISTS key_state_claimable_position_idx;
