-- Queries on key_events, the append-only history.

-- name: KeyEventsOverlappingLeases :many
-- Pairs of leases of the same key that overlap in time: a second lease that
-- began before the first had ended. The service guarantees there are none;
-- a lease ends with the first released, lease_expired, deleted or expired
-- event that carries its token.
WITH leases AS (
    SELECT a.key_id, a.lease_token, a.at AS started_at,
           coalesce((
               SELECT min(e.at) FROM key_events AS e
               WHERE e.key_id = a.key_id AND e.lease_token = a.lease_token
                 AND e.event IN ('released', 'lease_expired', 'deleted', 'expired')
           ), 'infinity'::timestamptz) AS ended_at
    FROM key_events AS a
    WHERE a.event = 'assigned'
      AND a.at >= sqlc.arg(since)::timestamptz
)
SELECT first.key_id, first.lease_token AS first_lease_token, second.lease_token AS second_lease_token
FROM leases AS first
JOIN leases AS second
  ON second.key_id = first.key_id
 AND second.lease_token <> first.lease_token
 AND second.started_at >= first.started_at
 AND second.started_at < first.ended_at;

-- name: KeyEventsCountByEvent :many
SELECT event, count(*) AS events
FROM key_events
WHERE at >= sqlc.arg(since)::timestamptz
GROUP BY event
ORDER BY event;

-- name: KeyEventsDeleteOlderThan :one
-- One batch of history retention: deletes up to max events older than the
-- retention, oldest first. It walks key_events_at_idx from its start and
-- never reads the keys table. SKIP LOCKED lets replicas that run the job at
-- the same time share the work instead of queueing on the same rows. now
-- pins the clock for tests; NULL is the database's now().
WITH old AS (
    SELECT o.id FROM key_events AS o
    WHERE o.at < coalesce(sqlc.narg(now)::timestamptz, now()) - sqlc.arg(retention_seconds)::float8 * interval '1 second'
    ORDER BY o.at
    LIMIT sqlc.arg(max)::int
    FOR UPDATE SKIP LOCKED
), deleted AS (
    DELETE FROM key_events AS e
    -- An array, not a join: see KeyClaim.
    WHERE e.id = ANY (ARRAY(SELECT old.id FROM old))
    RETURNING e.id
)
SELECT count(*) FROM deleted;
