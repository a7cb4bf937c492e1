-- +goose Up

-- Leader election for the background job, when it is turned on: the replica
-- named in a row leads until expires_at, by the database clock, and renews
-- well before then. A replica that dies stops renewing, and another takes
-- over once the row has expired.
CREATE TABLE leader (
    name       text        PRIMARY KEY,
    leader_id  text        NOT NULL,
    elected_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);

COMMENT ON TABLE leader IS 'Who leads each elected job (name), until expires_at by the database clock.';

-- +goose Down
DROP TABLE leader;
