-- +goose Up

-- Keys may carry the credential they stand for, labels, and a cooldown.
--
-- The secret lives in keys, never in the hot table key_state: keys is read
-- by a claim anyway (by primary key, for the key's life), so a secret costs a
-- claim only its own bytes, and a key without one costs nothing. It is
-- stored sealed (AES-256-GCM; the nonce precedes the ciphertext), with the
-- id of the encryption key that sealed it and a keyed digest (HMAC-SHA256
-- under a key derived from that encryption key) that finds duplicates in a
-- pool without revealing the secret. The three are set together or not at
-- all. Deleting a key deletes its row, and with it the only copy: history
-- and claim records never hold a secret.
ALTER TABLE keys
    ADD COLUMN labels            jsonb,
    ADD COLUMN secret_key_id     text,
    ADD COLUMN secret_ciphertext bytea,
    ADD COLUMN secret_digest     bytea,
    ADD CONSTRAINT keys_secret_complete CHECK (
        (secret_ciphertext IS NULL) = (secret_key_id IS NULL)
        AND (secret_ciphertext IS NULL) = (secret_digest IS NULL)
    );

COMMENT ON COLUMN keys.labels IS 'Labels as a JSON object of name to value; NULL for a key without labels.';
COMMENT ON COLUMN keys.secret_key_id IS 'Id of the encryption key that sealed secret_ciphertext and keyed secret_digest (derived from the key; see internal/secrets).';
COMMENT ON COLUMN keys.secret_ciphertext IS 'The credential, sealed with AES-256-GCM: a 12-byte nonce, then the ciphertext and tag. The additional data binds it to secret_key_id and to the row''s id.';
COMMENT ON COLUMN keys.secret_digest IS 'HMAC-SHA256 of the credential under a key derived from the encryption key secret_key_id: unique per pool.';

-- A cooling key is free of any lease but may not be claimed before
-- cooling_until; the background job ends the cooldown (sets it back to
-- NULL) and wakes waiting clients. labelled tells the statements that keep
-- key_labels in step whether the key has rows there: a key without labels
-- skips that work entirely.
ALTER TABLE key_state
    ADD COLUMN cooling_until timestamptz,
    ADD COLUMN labelled      boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT key_state_cooling_free CHECK (cooling_until IS NULL OR lease_token IS NULL);

COMMENT ON COLUMN key_state.cooling_until IS 'Set while the key cools down after a release with a cooldown: no claim takes it before then. NULL otherwise.';
COMMENT ON COLUMN key_state.labelled IS 'Whether the key has labels (rows in key_labels).';

-- One row per label of a key, "name=value", for claims that ask for a
-- label. position is set while the key is claimable (free and not cooling)
-- and NULL otherwise, so that the partial index below holds claimable keys
-- only: a labelled claim walks it from a random position, as KeyClaim walks
-- key_state_claimable_position_idx, and never steps over held keys. Keys
-- without labels have no rows here.
CREATE TABLE key_labels (
    key_id   uuid             NOT NULL,
    pool     text             NOT NULL,
    label    text             NOT NULL,
    position double precision DEFAULT random(),
    PRIMARY KEY (key_id, label)
);

COMMENT ON TABLE key_labels IS 'Labels of keys ("name=value"), one row per label; position is set while the key is claimable and NULL otherwise. The labels as the API shows them are keys.labels.';

CREATE INDEX key_labels_claimable_idx ON key_labels (pool, label, position) WHERE position IS NOT NULL;

-- The length of a release's cooldown ('released' events only; NULL for a
-- release without one).
ALTER TABLE key_events ADD COLUMN cooldown interval;

COMMENT ON COLUMN key_events.cooldown IS 'On a released event: the cooldown the holder asked for (the key was not claimable before at + cooldown). NULL otherwise.';

-- Which keys cool down most: per pool, UTC hour and key, the releases with
-- a cooldown, their total and longest cooldown. A key that is rate limited
-- more than the others shows up at the top of its hour. As the other hourly
-- views (migration 00002), one index range on the pool's events per hour.
CREATE VIEW key_cooldowns_hourly AS
SELECT c.pool,
       c.hour,
       n.key_id,
       n.cooldowns,
       n.total_seconds,
       n.max_seconds
FROM history_hours AS c
CROSS JOIN LATERAL (
    SELECT e.key_id,
           count(*) AS cooldowns,
           date_part('epoch', sum(e.cooldown))::float8 AS total_seconds,
           date_part('epoch', max(e.cooldown))::float8 AS max_seconds
    FROM key_events AS e
    WHERE e.pool = c.pool AND e.at >= c.hour AND e.at < c.hour + interval '1 hour'
      AND e.event = 'released' AND e.cooldown IS NOT NULL
    GROUP BY e.key_id
) AS n;

COMMENT ON VIEW key_cooldowns_hourly IS 'Per pool, UTC hour and key: releases with a cooldown (cooldowns), their total and longest cooldown in seconds.';

-- +goose Down
DROP VIEW key_cooldowns_hourly;
ALTER TABLE key_events DROP COLUMN cooldown;
DROP TABLE key_labels;
ALTER TABLE key_state DROP CONSTRAINT key_state_cooling_free, DROP COLUMN cooling_until, DROP COLUMN labelled;
ALTER TABLE keys DROP CONSTRAINT keys_secret_complete, DROP COLUMN labels, DROP COLUMN secret_key_id,
    DROP COLUMN secret_ciphertext, DROP COLUMN secret_digest;
