-- +goose Up

-- pool_waiters is read by every release (the counting trigger asks whether
-- to announce the freed key). The column below needs a short exclusive lock
-- on it: rather than queue every release behind a long transaction that
-- holds the table, the migration gives up and is retried.
SET LOCAL lock_timeout = '5s';

-- Every registration a replica sends carries a number one higher than its
-- last. A registration never overwrites a newer one, and a withdrawal
-- deletes only the registration it withdraws or an older one: a withdrawal
-- that reaches the database after the replica has registered again (its
-- waiters left, and new ones came at once) leaves the new registration in
-- place, so the replica is never left believing that freed keys of the pool
-- are announced to it when they are not. Rows written before this column
-- existed read 0, older than any.
ALTER TABLE pool_waiters ADD COLUMN generation bigint NOT NULL DEFAULT 0;

COMMENT ON COLUMN pool_waiters.generation IS 'Number of the registration that wrote the row, growing per replica; a withdrawal deletes only its own or older ones.';

-- +goose Down
ALTER TABLE pool_waiters DROP COLUMN generation;
