-- +goose Up

-- A pool is a name until someone gives it a policy; then it has a row here.
-- Every column but the name may be left unset (NULL), and the server's own
-- setting applies: a pool without a row behaves exactly as one whose row
-- sets nothing. Statements read a pool's row by primary key, in the same
-- statement as the change it governs, so every replica applies a policy
-- from the moment it commits.
CREATE TABLE pools (
    name                text        PRIMARY KEY CONSTRAINT pools_name CHECK (name ~ '^[A-Za-z0-9._-]{1,64}$'),
    -- A key's life after its creation or last keep-alive; NULL: KEY_TTL.
    key_ttl             interval    CONSTRAINT pools_key_ttl CHECK (key_ttl > interval '0'),
    -- Keys live until deleted: they get no deadline (expires_at NULL), and
    -- keep-alives keep them so.
    keys_stay           boolean     NOT NULL DEFAULT false,
    -- A lease's length after its claim or last keep-alive; NULL: LEASE_TTL.
    lease_ttl           interval    CONSTRAINT pools_lease_ttl CHECK (lease_ttl > interval '0'),
    -- The longest a lease may last from its claim, keep-alives included;
    -- NULL: no bound.
    max_lease_ttl       interval    CONSTRAINT pools_max_lease_ttl CHECK (max_lease_ttl > interval '0'),
    -- Release and keep-alive must name the lease (428 without a token).
    require_lease_token boolean     NOT NULL DEFAULT false,
    -- The longest a claim may wait for a free key; NULL: the server's
    -- bound (60 s).
    max_wait            interval    CONSTRAINT pools_max_wait CHECK (max_wait >= interval '0'),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pools_key_life CHECK (NOT (keys_stay AND key_ttl IS NOT NULL))
);

COMMENT ON TABLE pools IS 'Policies of pools: key_ttl (NULL: the server''s KEY_TTL), keys_stay (keys live until deleted), lease_ttl (NULL: LEASE_TTL), max_lease_ttl (NULL: no bound), require_lease_token, max_wait (NULL: 60 s). A pool without a row uses the server''s settings.';

-- Names and hints. A key may have a name, unique in its pool (index in
-- migration 00012), to be found and deleted by. A key with a secret keeps
-- its last four characters in clear, the only part of it ever shown, so
-- that an operator can tell keys apart.
ALTER TABLE keys
    ADD COLUMN name        text CONSTRAINT keys_name CHECK (name ~ '^[A-Za-z0-9._~:@+-]{1,128}$'),
    ADD COLUMN secret_hint text;

COMMENT ON COLUMN keys.name IS 'Optional name of the key, unique in its pool.';
COMMENT ON COLUMN keys.secret_hint IS 'The last four characters of the secret (NULL without one, or when the secret is too short to show any of it).';
-- A key of a pool whose keys stay has no end of life. The background job
-- looks for ended lives with expires_at <= now(), which a NULL never meets.
ALTER TABLE keys ALTER COLUMN expires_at DROP NOT NULL;

COMMENT ON COLUMN keys.expires_at IS 'End of the key''s life; NULL: the key lives until deleted (its pool''s keys stay).';

-- A cooldown that the holder of the key's most recent lease sent after that
-- lease had ended (it ran out, or was released): the key was free, and no
-- claim took it before at + cooldown. Added as NOT VALID, then validated:
-- validation reads the history without blocking its writers.
ALTER TABLE key_events DROP CONSTRAINT key_events_event;
ALTER TABLE key_events ADD CONSTRAINT key_events_event CHECK (event IN (
    'created', 'assigned', 'released', 'lease_expired', 'kept_alive', 'deleted', 'expired', 'cooled_down')) NOT VALID;
ALTER TABLE key_events VALIDATE CONSTRAINT key_events_event;

COMMENT ON COLUMN key_events.event IS 'created, assigned, released (explicit unblock), lease_expired (released by the background job), kept_alive (the key''s life reset; lease_token set when the keep-alive presented it and extended that lease), deleted (explicit), expired (deleted by the background job), cooled_down (a cooldown sent with the token of the key''s most recent lease after it had ended).';
COMMENT ON COLUMN key_events.cooldown IS 'On a released or cooled_down event: the cooldown the holder asked for (the key was not claimable before at + cooldown). NULL otherwise.';

CREATE OR REPLACE VIEW key_cooldowns_hourly AS
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
      AND e.event IN ('released', 'cooled_down') AND e.cooldown IS NOT NULL
    GROUP BY e.key_id
) AS n;

COMMENT ON VIEW key_cooldowns_hourly IS 'Per pool, UTC hour and key: cooldowns (releases with one, and cooldowns sent after the lease ended), their total and longest in seconds.';

-- +goose Down
CREATE OR REPLACE VIEW key_cooldowns_hourly AS
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
DELETE FROM key_events WHERE event = 'cooled_down';
ALTER TABLE key_events DROP CONSTRAINT key_events_event;
ALTER TABLE key_events ADD CONSTRAINT key_events_event CHECK (event IN (
    'created', 'assigned', 'released', 'lease_expired', 'kept_alive', 'deleted', 'expired'));
ALTER TABLE keys DROP COLUMN name, DROP COLUMN secret_hint;
UPDATE keys SET expires_at = 'infinity' WHERE expires_at IS NULL;
ALTER TABLE keys ALTER COLUMN expires_at SET NOT NULL;
DROP TABLE pools;
