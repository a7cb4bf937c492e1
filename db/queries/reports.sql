-- Queries on the report views and functions over key_events, defined and
-- explained in migrations/00002_reports.sql. pool NULL means every pool.
--
-- Hourly reports cover the UTC hours that overlap [range_from, range_to): an
-- hour belongs when it starts after range_from - 1 hour and before range_to.
-- Written that way, the condition filters the generated hours before any
-- event is read.

-- name: KeyLeasesList :many
-- Leases that started in [range_from, range_to), oldest first, at most max.
SELECT pool, key_id, lease_token, started_at, ended_at, ended_by, keep_alives, duration_seconds
FROM key_leases
WHERE started_at >= sqlc.arg(range_from)::timestamptz AND started_at < sqlc.arg(range_to)::timestamptz
  AND (sqlc.narg(pool)::text IS NULL OR pool = sqlc.narg(pool)::text)
ORDER BY started_at, lease_token
LIMIT sqlc.arg(max)::int;

-- name: LeaseActivityHourlyList :many
SELECT pool, hour, assigned AS claimed, released, lease_expired, ended_by_deletion, keep_alives
FROM lease_activity_hourly
WHERE hour > sqlc.arg(range_from)::timestamptz - interval '1 hour' AND hour < sqlc.arg(range_to)::timestamptz
  AND (sqlc.narg(pool)::text IS NULL OR pool = sqlc.narg(pool)::text)
ORDER BY pool, hour;

-- name: LeaseDurationsHourlyList :many
SELECT pool, hour, leases, ended, mean_seconds, p50_seconds, p95_seconds, max_seconds
FROM lease_durations_hourly
WHERE hour > sqlc.arg(range_from)::timestamptz - interval '1 hour' AND hour < sqlc.arg(range_to)::timestamptz
  AND (sqlc.narg(pool)::text IS NULL OR pool = sqlc.narg(pool)::text)
ORDER BY pool, hour;

-- name: KeyActivityHourlyList :many
SELECT pool, hour, created, deleted, expired
FROM key_activity_hourly
WHERE hour > sqlc.arg(range_from)::timestamptz - interval '1 hour' AND hour < sqlc.arg(range_to)::timestamptz
  AND (sqlc.narg(pool)::text IS NULL OR pool = sqlc.narg(pool)::text)
ORDER BY pool, hour;

-- name: PoolUtilisationList :many
-- A function rather than a view: see the migration.
SELECT u.pool::text AS pool, u.hour::timestamptz AS hour, u.key_seconds::float8 AS key_seconds,
       u.blocked_seconds::float8 AS held_seconds, u.utilisation::float8 AS utilisation
FROM pool_utilisation(sqlc.arg(range_from)::timestamptz, sqlc.arg(range_to)::timestamptz, sqlc.narg(pool)::text) AS u;

-- name: KeyLeasesDurationHistogram :many
-- Leases that started in the last minutes minutes, counted by duration in
-- seconds: bucket 0 holds those shorter than the first bound, bucket i those
-- from the i-th bound up to the next, the last bucket those from the last
-- bound on, and bucket -1 the leases still held. The leases are found by a range on the
-- history's time, as in KeyLeasesList.
SELECT coalesce(width_bucket(l.duration_seconds, sqlc.arg(bounds)::float8[]), -1)::int AS bucket,
       count(*) AS leases
FROM key_leases AS l
WHERE l.started_at >= now() - sqlc.arg(minutes)::int * interval '1 minute'
  AND (sqlc.narg(pool)::text IS NULL OR l.pool = sqlc.narg(pool)::text)
GROUP BY 1
ORDER BY 1;

-- name: KeyCooldownsHourlyList :many
-- The keys that cool down most: per pool and hour, the keys released with
-- a cooldown, most cooldowns first.
SELECT pool, hour, key_id, cooldowns, total_seconds, max_seconds
FROM key_cooldowns_hourly
WHERE hour > sqlc.arg(range_from)::timestamptz - interval '1 hour' AND hour < sqlc.arg(range_to)::timestamptz
  AND (sqlc.narg(pool)::text IS NULL OR pool = sqlc.narg(pool)::text)
ORDER BY pool, hour, cooldowns DESC, total_seconds DESC, key_id;
