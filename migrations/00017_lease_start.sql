-- +goose Up

-- The start of the lease that an end (a released, lease_expired, deleted or
-- expired event with a lease token) ends, as key_leases matches them: the
-- lease of the end's token, if no other end of the key came between its
-- start and this end; a start at the very moment of the previous end
-- counts. No row when there is no such lease.
--
-- The background job's fold and the lease-duration reports each look this
-- up once per end, so it must stay a few index steps whatever the
-- statistics say: one walk back along key_events_key_id_at_idx, in the
-- index's own order, to the first event that is the token's start or
-- another end, and one more look at that moment for a start that ties with
-- the end found. Ordering by the tie as well let the planner sort all the
-- key's earlier events under the walk; a lower bound on the walk let it,
-- on tables never analysed, read every event of the key in the range
-- through a bitmap and sort them. Without a bound, what the walk reads is
-- the key's events between the end and the event it stops at: for a lease,
-- its keep-alives (and other seats' starts), which the fold reads once for
-- every lease anyway.
--
-- A plain SQL function, STABLE and not STRICT: PostgreSQL inlines it into
-- the statement that calls it in FROM, so each caller's plan holds the walk
-- itself (the plans test checks it there).
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

-- +goose Down
DROP FUNCTION lease_start(uuid, timestamptz, bigint);
