-- Queries on leader, the election of the background job's leader.

-- name: LeaderAttemptElect :one
-- Takes the lead when nobody holds it or the holder's term has expired, and
-- renews it when the caller already holds it; returns no row otherwise.
INSERT INTO leader AS l (name, leader_id, elected_at, expires_at)
VALUES (sqlc.arg(name)::text, sqlc.arg(leader_id)::text, now(), now() + sqlc.arg(ttl_seconds)::float8 * interval '1 second')
ON CONFLICT (name) DO UPDATE
SET leader_id = excluded.leader_id,
    elected_at = CASE WHEN l.leader_id = excluded.leader_id THEN l.elected_at ELSE now() END,
    expires_at = excluded.expires_at
WHERE l.expires_at < now() OR l.leader_id = excluded.leader_id
RETURNING l.leader_id, l.elected_at, l.expires_at;

-- name: LeaderResign :exec
-- Gives the lead up at once, so that another replica need not wait for the
-- term to expire.
DELETE FROM leader
WHERE name = sqlc.arg(name)::text AND leader_id = sqlc.arg(leader_id)::text;
