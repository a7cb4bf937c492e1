-- Read by sqlc only, after the migrations: the system columns that
-- statements in db/queries use, which sqlc's catalog does not know.
-- PostgreSQL has them on every table; nothing here is ever run.
ALTER TABLE key_state ADD COLUMN ctid tid;
ALTER TABLE key_events ADD COLUMN ctid tid;
ALTER TABLE key_event_minutes ADD COLUMN ctid tid;
ALTER TABLE lease_duration_minutes ADD COLUMN ctid tid;
ALTER TABLE key_event_hours ADD COLUMN ctid tid;
ALTER TABLE key_cooldown_hours ADD COLUMN ctid tid;
ALTER TABLE ended_leases ADD COLUMN ctid tid;
