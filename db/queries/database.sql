-- Queries on the database server itself.

-- name: CleanupHorizonGet :one
-- What holds back the removal of dead row versions in every table of the
-- cluster: the oldest snapshot of any other session (backend_xmin) and the
-- oldest xmin of a replication slot. While one is old, each claim and
-- release leaves versions that nothing may remove, and the hot tables'
-- indexes fill with them (see the runbook in docs/operations.md). Reads the server's
-- activity view, one row per session; seeing other roles' sessions needs
-- pg_read_all_stats (or pg_monitor).
WITH holders AS (
    SELECT a.pid, a.application_name, a.state, a.backend_xmin,
           now() - coalesce(a.xact_start, a.query_start, a.backend_start) AS held_for
    FROM pg_catalog.pg_stat_activity AS a
    WHERE a.backend_xmin IS NOT NULL AND a.pid <> pg_backend_pid()
), oldest AS (
    SELECT * FROM holders ORDER BY holders.held_for DESC LIMIT 1
)
SELECT
    coalesce((SELECT date_part('epoch', oldest.held_for) FROM oldest), 0)::float8 AS snapshot_age_seconds,
    coalesce((SELECT oldest.pid FROM oldest), 0)::int AS holder_pid,
    coalesce((SELECT oldest.application_name FROM oldest), '')::text AS holder_application,
    coalesce((SELECT oldest.state FROM oldest), '')::text AS holder_state,
    greatest(
        coalesce((SELECT max(age(holders.backend_xmin)) FROM holders), 0),
        coalesce((SELECT max(age(s.xmin)) FROM pg_catalog.pg_replication_slots AS s), 0)
    )::bigint AS xmin_age_transactions;

-- name: StandbyStatusGet :one
-- How far a streaming standby's replay is behind, read on the standby. While
-- everything received has been replayed the lag is zero, however long ago the
-- last transaction was (an idle primary sends nothing to replay); otherwise it
-- is the age of the last transaction replayed, and -1 while none has been
-- replayed since the standby started. in_recovery is false on a server that
-- is not a standby.
SELECT pg_is_in_recovery() AS in_recovery,
       coalesce(CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
                     ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END, -1)::float8 AS replay_lag_seconds;

-- name: ReportStatementTimeoutSet :exec
-- Bounds every statement of a report read from the primary, for the rest of
-- its transaction only: a report that runs away is cancelled by the server
-- itself, and the snapshot it holds back cleanup with is let go.
SELECT set_config('statement_timeout', sqlc.arg(milliseconds)::int::text, true);

-- name: ReplicationStateGet :one
-- What the server's commits wait for before they are acknowledged: its
-- synchronous_commit and synchronous_standby_names, and its standbys by
-- pg_stat_replication.sync_state (sync and quorum standbys confirm commits;
-- potential ones would if a sync one left; async ones never do). Seeing the
-- standbys' sync_state needs pg_read_all_stats (or pg_monitor); without it
-- they count as unknown. in_recovery is true on a standby, whose settings
-- say nothing about the service's commits.
SELECT current_setting('synchronous_commit') AS synchronous_commit,
       current_setting('synchronous_standby_names') AS synchronous_standby_names,
       pg_is_in_recovery() AS in_recovery,
       count(*) FILTER (WHERE r.sync_state IN ('sync', 'quorum')) AS sync_standbys,
       count(*) FILTER (WHERE r.sync_state = 'potential') AS potential_standbys,
       count(*) FILTER (WHERE r.sync_state = 'async') AS async_standbys,
       count(*) FILTER (WHERE r.sync_state IS NULL) AS unknown_standbys
FROM pg_catalog.pg_stat_replication AS r;
