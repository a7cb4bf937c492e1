-- +goose Up

-- Registrations of a replica that died are never withdrawn; the background
-- job deletes them once expired, oldest first, through this index.
CREATE INDEX pool_waiters_expires_at_idx ON pool_waiters (expires_at);

-- +goose Down
DROP INDEX pool_waiters_expires_at_idx;
