-- +goose NO TRANSACTION
-- +goose Up

-- The primary keys of key_state and key_labels gain the seat (migration
-- 00013). Each new key is built concurrently (claims go on meanwhile),
-- checked, and then takes the place of the old one in one short ALTER.
DROP INDEX CONCURRENTLY IF EXISTS key_state_key_seat_idx;
CREATE UNIQUE INDEX CONCURRENTLY key_state_key_seat_idx ON key_state (key_id, seat);
DROP INDEX CONCURRENTLY IF EXISTS key_labels_key_seat_label_idx;
CREATE UNIQUE INDEX CONCURRENTLY key_labels_key_seat_label_idx ON key_labels (key_id, seat, label);

-- +goose StatementBegin
DO $$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['key_state_key_seat_idx', 'key_labels_key_seat_label_idx'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_index WHERE indexrelid = name::regclass AND indisvalid) THEN
            RAISE EXCEPTION 'index % is invalid after CREATE INDEX CONCURRENTLY; the migration is not recorded and runs again at the next start', name;
        END IF;
    END LOOP;
END;
$$;
-- +goose StatementEnd

ALTER TABLE key_state DROP CONSTRAINT key_state_pkey,
    ADD CONSTRAINT key_state_pkey PRIMARY KEY USING INDEX key_state_key_seat_idx;
ALTER TABLE key_labels DROP CONSTRAINT key_labels_pkey,
    ADD CONSTRAINT key_labels_pkey PRIMARY KEY USING INDEX key_labels_key_seat_label_idx;

-- +goose Down
ALTER TABLE key_state DROP CONSTRAINT key_state_pkey;
DELETE FROM key_state WHERE seat <> 0;
ALTER TABLE key_state ADD PRIMARY KEY (key_id);
ALTER TABLE key_labels DROP CONSTRAINT key_labels_pkey;
DELETE FROM key_labels WHERE seat <> 0;
ALTER TABLE key_labels ADD PRIMARY KEY (key_id, label);
