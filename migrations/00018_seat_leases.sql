-- +goose Up

-- A lease ends with the first end of its own seat. key_leases and
-- lease_start matched a lease with the first end of its key (released,
-- lease_expired, deleted or expired), whatever its seat: on a key of
-- several seats, a lease that another seat's lease had begun and ended
-- within showed as held for ever, and the lease-duration reports and
-- rollups left it out. Seats were added in 00013; the events before carry
-- no seat, which counts as seat 0 (a key of one seat), as elsewhere.
CREATE OR REPLACE VIEW key_leases AS
SELECT a.pool,
       a.key_id,
       a.lease_token,
       a.at AS started_at,
       ended.at AS ended_at,
       ended.event AS ended_by,
       kept.keep_alives,
       date_part('epoch', ended.at - a.at)::float8 AS duration_seconds
FROM key_events AS a
LEFT JOIN LATERAL (
    SELECT e.at, e.event, e.lease_token
    FROM key_events AS e
    WHERE e.key_id = a.key_id AND e.at > a.at
      AND CASE WHEN e.event IN ('released', 'lease_expired', 'deleted', 'expired') THEN coalesce(e.seat, 0) = coalesce(a.seat, 0) ELSE false END
    ORDER BY e.at
    LIMIT 1
) AS ended ON ended.lease_token = a.lease_token
CROSS JOIN LATERAL (
    SELECT count(*) AS keep_alives
    FROM key_events AS e
    WHERE e.key_id = a.key_id AND e.at > a.at AND e.at < coalesce(ended.at, 'infinity')
      AND e.lease_token = a.lease_token AND e.event = 'kept_alive'
) AS kept
WHERE a.event = 'assigned';

COMMENT ON VIEW key_leases IS 'One row per lease: pool, key, token, started_at, ended_at and ended_by (released, lease_expired, deleted, expired: the first of the lease''s seat after its start, if it carries the lease''s token; NULL while held), keep_alives during the lease, duration_seconds (NULL while held).';

-- lease_start as in 00017, the walk stopping at an end of the lease's own
-- seat only: another seat's end on the way is stepped over.
--
-- Both here and in the view, the seat is tested inside a CASE: as a plain
-- condition (AND coalesce(seat, 0) = ...), the planner, on tables never
-- analysed, took it for a selective one (0.5% of the rows), priced the
-- walk as long, and read all of the key's earlier events through a bitmap
-- and sorted them, in the fold and in every lease-duration report (the
-- plans test fails on it). It prices a CASE at half the rows, so the walk
-- stays a walk.
DROP FUNCTION lease_start(uuid, timestamptz, bigint);

-- +goose StatementBegin
CREATE FUNCTION lease_start(end_key_id uuid, end_seat smallint, end_at timestamptz, end_lease_token bigint)
RETURNS TABLE (pool text, started_at timestamptz)
LANGUAGE sql STABLE
AS $$
    SELECT s.pool, s.at
    FROM (
        SELECT a.pool, a.at, a.event
        FROM key_events AS a
        WHERE a.key_id = end_key_id AND a.at < end_at
          AND CASE WHEN a.event IN ('released', 'lease_expired', 'deleted', 'expired') THEN coalesce(a.seat, 0) = coalesce(end_seat, 0)
                   WHEN a.event = 'assigned' THEN a.lease_token = end_lease_token
                   ELSE false END
        ORDER BY a.at DESC
        LIMIT 1
    ) AS s
    WHERE s.event = 'assigned' OR EXISTS (
        SELECT 1 FROM key_events AS t
        WHERE t.key_id = end_key_id AND t.at = s.at AND t.event = 'assigned' AND t.lease_token = end_lease_token
    )
$$;
-- +goose StatementEnd

COMMENT ON FUNCTION lease_start(uuid, smallint, timestamptz, bigint) IS 'The pool and start time of the lease that the end of seat end_seat of key end_key_id at end_at under end_lease_token ends, as key_leases matches them; no row if none.';

-- The rollups were folded with the old matching: the job folds the history
-- again.
SELECT key_event_rollups_reset();

-- +goose Down
CREATE OR REPLACE VIEW key_leases AS
SELECT a.pool,
       a.key_id,
       a.lease_token,
       a.at AS started_at,
       ended.at AS ended_at,
       ended.event AS ended_by,
       kept.keep_alives,
       date_part('epoch', ended.at - a.at)::float8 AS duration_seconds
FROM key_events AS a
LEFT JOIN LATERAL (
    SELECT e.at, e.event, e.lease_token
    FROM key_events AS e
    WHERE e.key_id = a.key_id AND e.at > a.at
      AND e.event IN ('released', 'lease_expired', 'deleted', 'expired')
    ORDER BY e.at
    LIMIT 1
) AS ended ON ended.lease_token = a.lease_token
CROSS JOIN LATERAL (
    SELECT count(*) AS keep_alives
    FROM key_events AS e
    WHERE e.key_id = a.key_id AND e.at > a.at AND e.at < coalesce(ended.at, 'infinity')
      AND e.lease_token = a.lease_token AND e.event = 'kept_alive'
) AS kept
WHERE a.event = 'assigned';

COMMENT ON VIEW key_leases IS 'One row per lease: pool, key, token, started_at, ended_at and ended_by (released, lease_expired, deleted, expired; NULL while held), keep_alives during the lease, duration_seconds (NULL while held).';

DROP FUNCTION lease_start(uuid, smallint, timestamptz, bigint);

-- +goose StatementBegin
CREATE FUNCTION lease_start(end_key_id uuid, end_at timestamptz, end_lease_token bigint)
RETURNS TABLE (pool text, started_at timestamptz)
LANGUAGE sql STABLE
AS $$
    SELECT s.pool, s.at
    FROM (
        SELECT a.pool, a.at, a.event
        FROM key_events AS a
        WHERE a.key_id = end_key_id AND a.at < end_at
          AND (a.event IN ('released', 'lease_expired', 'deleted', 'expired')
               OR a.event = 'assigned' AND a.lease_token = end_lease_token)
        ORDER BY a.at DESC
        LIMIT 1
    ) AS s
    WHERE s.event = 'assigned' OR EXISTS (
        SELECT 1 FROM key_events AS t
        WHERE t.key_id = end_key_id AND t.at = s.at AND t.event = 'assigned' AND t.lease_token = end_lease_token
    )
$$;
-- +goose StatementEnd

COMMENT ON FUNCTION lease_start(uuid, timestamptz, bigint) IS 'The pool and start time of the lease that the end of key end_key_id at end_at under end_lease_token ends, as key_leases matches them; no row if none.';

SELECT key_event_rollups_reset();
