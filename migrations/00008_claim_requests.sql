-- +goose Up

-- Claims made under an Idempotency-Key (GET /keys with the header): the
-- lease each one got, so that a repeat of the request, sent to any replica
-- after its answer was lost, answers the same lease instead of claiming
-- another key. A record is written in the same transaction as its claim,
-- so a lease claimed under a key is never without its record; it lives as
-- long as the lease it recorded would without keep-alives (LEASE_TTL), and
-- the background job deletes it after that.
--
-- No foreign key to keys: a record must outlive its key, so that a repeat
-- after the key was deleted is told that the lease has ended rather than
-- claiming anew; and deleting a key need not visit this table.
CREATE TABLE claim_requests (
    pool            text        NOT NULL,
    idempotency_key text        NOT NULL CONSTRAINT claim_requests_idempotency_key CHECK (idempotency_key ~ '^[ -~]{1,255}$'),
    key_id          uuid        NOT NULL,
    lease_token     bigint      NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    PRIMARY KEY (pool, idempotency_key)
);

-- The background job deletes expired records through this index.
CREATE INDEX claim_requests_expires_at_idx ON claim_requests (expires_at);

COMMENT ON TABLE claim_requests IS 'The lease (key_id, lease_token) claimed under each Idempotency-Key of a pool, until expires_at (database clock): a repeat of the claim answers that lease while it lasts, and 409 once it has ended.';

-- +goose Down
DROP TABLE claim_requests;
