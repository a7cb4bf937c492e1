package dbsqlc

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }

// TestQueryPlansUseIndexes checks the access path of every statement the
// service runs. The service runs generic plans
// (plan_cache_mode=force_generic_plan), and in its generic plan each
// statement must read each table through the index named for it,
// searching the index (an Index Cond) rather than walking all of it or
// scanning the table: a statement that acts on keys it was given finds
// them by primary key, a claim walks its claimable index.
//
// The planner picks a generic plan from the statistics alone, and a plan
// that is right on fresh statistics can be wrong on others: under a held
// snapshot, a release of 2 keys walked the partial index of held keys,
// full of dead entries, in 31,281 buffers, because an ANALYZE had seen few
// held keys. So every plan is checked under five states of the statistics,
// one after the other, on three pools of 30,000 keys:
//   - never analysed: the tables as a large import leaves them, before any
//     ANALYZE;
//   - fresh: VACUUM ANALYZE of the loaded data (half of one pool held, a
//     third of another);
//   - bloated: every key claimed and released twice over while another
//     connection holds a snapshot, then ANALYZE while it still holds it:
//     the statistics see few held keys, the indexes are full of dead
//     entries;
//   - most held: all but 1% of the keys held, ANALYZE;
//   - none held: every key free, VACUUM ANALYZE.
//
// Then again on pools of 1,000 keys, where the planner is tempted to scan
// a table (a scan in a statement that locks rows makes concurrent claims
// queue), in every state but the first (no large import there).
//
// Besides the pools: 300,000 history rows over 28 days in four pools and
// 20,000 leases of the last two days, folded into the rollups,
// the counts of 2,000 more pools and 20,000 count changes not yet folded,
// 20,000 registrations of waiting clients and records of idempotent
// claims. With UPDATE_PLANS=1 it writes the generic plans on fresh
// statistics of the large pools to docs/query-plans.md. With -short the
// large pools are of 10,000 keys and the bloat one round.
func TestQueryPlansUseIndexes(t *testing.T) {
	t.Parallel()
	perPools := []int32{30000, 1000}
	if testing.Short() {
		perPools = []int32{10000, 1000}
	}
	for _, perPool := range perPools {
		large := perPool == perPools[0]
		t.Run(fmt.Sprint(3*perPool), func(t *testing.T) {
			t.Parallel()
			checkPlans(t, perPool, large, large && !testing.Short() && os.Getenv("UPDATE_PLANS") != "")
		})
	}
}

// statement is one statement of db/queries with arguments for EXPLAIN
// EXECUTE and the access path of each table it reads.
type statement struct {
	name  string
	sql   string
	args  []any
	paths paths
}

// paths gives, for each table a statement reads, the access path it must
// take: a regular expression matched against the whole of a scan's path,
// such as "Index Scan using key_state_pkey" (see scansOf). The table is
// named "relation", "relation alias", "cte:relation" or "cte:relation
// alias" (cte: the WITH query the scan is part of, as EXPLAIN names it: a
// WITH query read once is planned inside the one that reads it); the most
// specific name that has a path applies, the CTE before the alias. Every
// table the plan reads must have a path, and every path must be taken at
// least once.
type paths map[string]string

// by is a search of the named index (or of one of several, a regular
// expression): an Index Cond, the rows read in the index's order or through
// a bitmap, and sorted or not.
func by(index string) string {
	return `(Index (Only )?Scan|Bitmap Heap Scan) using (` + index + `)( into a sort)?`
}

// walk is a search of the named index that reads the rows in the index's
// order and hands them on as it reads them: a claim's or a batch's walk
// that stops after a few rows, where a bitmap, or a sort of what the scan
// reads, would read all of them.
func walk(index string) string { return `Index (Only )?Scan using (` + index + `)` }

// seqScan reads the whole table, sorted or not: for a table of a row or a
// few, or a statement that reads all of it.
const seqScan = `Seq Scan( into a sort)?`

// firstOf is a walk that may start at the index's first entry: for a
// statement that reads one entry (min, or a step of a loose index scan).
func firstOf(index string) string { return walk(index) + `( from its first entry)?` }

// Access paths of the report statements: a range on the history's time,
// by pool and time where the statement is for one pool, and the lease's
// end one step along the key's events.
var (
	historyByTime     = by("key_events_at_idx")
	historyByPoolTime = by("key_events_pool_at_idx")
	historyOfKey      = by("key_events_key_id_at_idx")
	// A step from an event to the next or previous one of its key that
	// answers (the fold's and the reports' step back from a lease's end to
	// its start, a report's step forward to a lease's end) walks the key's
	// events and stops there: a bitmap scan and a sort would read every
	// event of the key in the range, once per lease.
	walkAlongKey = walk("key_events_key_id_at_idx")
	// The one row of the rollups' state.
	rollupState = seqScan + `|` + firstOf("key_event_rollup_state_pkey")
	// An hourly report of one pool: the rollup's rows of the pool's hours
	// and the pool's events not folded yet; of every pool, the rollup's
	// rows of the hours (all of them, over 31 days, may be a scan) and
	// the events not folded yet.
	hourlyPaths = paths{
		"key_event_hours h": by("key_event_hours_pkey"), "key_events e": historyByPoolTime, "key_event_rollup_state": rollupState,
	}
	allPoolsHourlyPaths = paths{
		"key_event_hours h": seqScan + `|` + by("key_event_hours_hour_idx"), "key_events e": historyByTime, "key_event_rollup_state": rollupState,
	}
)

// notChecked are the statements of db/queries that the test leaves out.
var notChecked = map[string]string{
	"CleanupHorizonGet":         "reads the server's activity view",
	"StandbyStatusGet":          "reads no table",
	"ReplicationStateGet":       "reads the server's settings and replication view, no table",
	"ReportStatementTimeoutSet": "reads no table",
	"SchemaInvalidIndexes":      "reads the catalog",
	"ListenKeysFreed":           "LISTEN cannot be prepared",
	"KeyEventRollupsHorizon":    "reads the server's activity view",
}

func statements() []statement {
	id := uuid.New()
	return []statement{
		{"KeyCreate", keyCreate, []any{0, "default", 3600.0, 10, 100000}, paths{"pools": by("pools_pkey")}},
		{"KeyClaim", keyClaim, []any{"default", 0.5, 1, 60.0}, claimPaths},
		{"KeyClaim (batch of 32)", keyClaim, []any{"default", 0.99, 32, 60.0}, claimPaths},
		{"KeyGet", keyGet, []any{id}, paths{"keys": by("keys_pkey"), "key_state": by("key_state_pkey")}},
		{"KeyPoolHasFree", keyPoolHasFree, []any{"default"}, paths{
			"key_state": walk("key_state_claimable_position_idx"), "keys": by("keys_pkey"),
		}},
		// Keys given by id, with and without a token (without one, the
		// array of keys whose lease to extend is empty).
		{"KeyKeepAliveMany", keyKeepAliveMany, []any{[]uuid.UUID{id, uuid.New()}, []int64{0, 7}, 60.0, 3600.0}, keepAlivePaths},
		{"KeyKeepAliveMany (no token)", keyKeepAliveMany, []any{[]uuid.UUID{id}, []int64{0}, 60.0, 3600.0}, keepAlivePaths},
		{"KeyReleaseMany", keyReleaseMany, []any{[]uuid.UUID{id, uuid.New()}, []int64{0, 7}, []float64{0, 30}}, paths{
			"key_state": by("key_state_pkey"), "keys": by("keys_pkey"), "key_labels": by("key_labels_pkey"),
		}},
		// Labels, secrets and cooldowns: a labelled claim walks the first
		// label's index of claimable keys, the others checked by primary key.
		{"KeyClaimLabelled", keyClaimLabelled, []any{"labelled", "tier=paid", 0.5, []string{}, 1, 60.0}, labelledClaimPaths},
		{"KeyClaimLabelled (two labels)", keyClaimLabelled, []any{"labelled", "tier=paid", 0.5, []string{"region=r3"}, 1, 60.0}, labelledClaimPaths},
		{"KeyClaimLabelled (batch of 32)", keyClaimLabelled, []any{"labelled", "region=r1", 0.99, []string{}, 32, 60.0}, labelledClaimPaths},
		{"KeyGetSecret", keyGetSecret, []any{7, id}, paths{"keys": by("keys_pkey"), "key_state": by("key_state_pkey")}},
		{"KeyEndCooldowns", keyEndCooldowns, []any{1000}, paths{
			"key_state c": walk("key_state_cooling_until_idx"), "by_address:key_state s": lockedRows, "by_key:key_state s": by("key_state_pkey"), "key_labels": by("key_labels_pkey"),
		}},
		{"KeyLockPoolSecrets", keyLockPoolSecrets, []any{"labelled"}, paths{}},
		{"KeyCreateWithSecrets", keyCreateWithSecrets, []any{[]uuid.UUID{uuid.New()}, []string{`{"tier": "paid"}`}, [][]byte{[]byte("x")}, [][]byte{[]byte("d")}, []string{"k1"}, []string{"abcd"}, []int32{2}, "labelled", 3600.0, "new", [][]byte{[]byte("d"), []byte("e")}, []uuid.UUID{id}, []string{"tier=paid"}}, paths{
			"keys d": by("keys_pool_secret_digest_idx"),
		}},
		// Imports, names, cooldowns after a lease, policies. The keys an
		// import brings are looked up by secret and by name, one probe each.
		{"KeyFindExisting", keyFindExisting, []any{[]int32{0, 0, 1}, [][]byte{[]byte("d"), []byte("e"), []byte("f")}, []int32{0, 1}, []string{"k1", "k2"}, "labelled"}, paths{
			"keys d": by("keys_pool_secret_digest_idx|keys_pool_name_idx"),
		}},
		{"KeyDeleteExpiredByID", keyDeleteExpiredByID, []any{[]uuid.UUID{id, uuid.New()}}, paths{
			"key_state": by("key_state_pkey"), "keys": by("keys_pkey"), "key_labels": by("key_labels_pkey"),
		}},
		{"KeyGetByName", keyGetByName, []any{"labelled", "k1"}, paths{"keys": by("keys_pool_name_idx"), "key_state": by("key_state_pkey")}},
		// The seat whose most recent lease is the one named: the key's seats.
		{"KeyCooldownAfterLease", keyCooldownAfterLease, []any{id, 30.0, 7}, paths{
			"key_state": by("key_state_pkey"), "keys": by("keys_pkey"), "key_labels": by("key_labels_pkey"),
		}},
		// The free seats of keys whose secret does not open: each key's seats.
		{"KeyCoolFreeSeats", keyCoolFreeSeats, []any{60.0, []uuid.UUID{id, uuid.New()}}, paths{
			"key_state c": by("key_state_pkey"), "cooled:key_state s": by("key_state_pkey"), "keys": by("keys_pkey"), "key_labels": by("key_labels_pkey"),
		}},
		{"KeyGetLease", keyGetLease, []any{id, 7}, paths{"keys": by("keys_pkey"), "key_state": by("key_state_pkey")}},
		{"KeyRebaseLives", keyRebaseLives, []any{"other", uuid.Nil, 1000, 3600.0}, paths{
			"page:keys": walk("keys_pool_id_idx"), "keys": by("keys_pkey"),
		}},
		{"KeyDeletePoolPage", keyDeletePoolPage, []any{"other", 1000}, paths{
			"state:keys": walk("keys_pool_id_idx"), "keys": by("keys_pkey"), "key_state": by("key_state_pkey"),
			"key_labels": by("key_labels_pkey"),
		}},
		{"PoolGet", poolGet, []any{"default"}, paths{"pools": by("pools_pkey")}},
		{"PoolList", poolList, nil, paths{"pools": seqScan + `|` + firstOf("pools_pkey")}},
		{"PoolLock", poolLock, []any{"default"}, paths{"pools": by("pools_pkey")}},
		{"PoolPut", poolPut, []any{"default", nil, true, nil, nil, false, nil, nil}, paths{}},
		{"PoolCreateIfAbsent", poolCreateIfAbsent, []any{"default", nil}, paths{}},
		// A pool's first key, one step on keys_pool_id_idx.
		{"PoolDelete", poolDelete, []any{"default"}, paths{"pools": by("pools_pkey"), "keys": walk("keys_pool_id_idx")}},
		{"PoolHasKeys", poolHasKeys, []any{"default"}, paths{"keys": walk("keys_pool_id_idx")}},
		{"KeySecretsSealedUnder", keySecretsSealedUnder, []any{"old", 500}, paths{"keys": walk("keys_secret_key_id_idx")}},
		{"KeySecretsRemainUnder", keySecretsRemainUnder, []any{"old"}, paths{"keys": walk("keys_secret_key_id_idx")}},
		// The rows of the batch, by primary key or by the old encryption
		// key's index with the ids (either searches for the ids).
		{"KeySecretsReseal", keySecretsReseal, []any{"new", []uuid.UUID{id, uuid.New()}, "old", [][]byte{[]byte("x"), []byte("y")}, [][]byte{[]byte("d"), []byte("e")}}, paths{
			"keys": by("keys_pkey|keys_secret_key_id_idx"),
		}},
		{"KeyDelete", keyDelete, []any{id}, paths{
			"key_state": by("key_state_pkey"), "keys": by("keys_pkey"), "key_labels": by("key_labels_pkey"),
		}},
		{"KeyReleaseEndedLeases", keyReleaseEndedLeases, []any{nil, 1000}, endedLeasesPaths},
		{"KeyReleaseEndedLeases (from a moment ago)", keyReleaseEndedLeases, []any{sqlExpr("now() - interval '5 seconds'"), 1000}, endedLeasesPaths},
		{"KeyDeleteExpired", keyDeleteExpired, []any{1000}, paths{
			"keys c": walk("keys_expires_at_idx"), "keys": by("keys_pkey"),
			"key_state": by("key_state_pkey"), "key_labels": by("key_labels_pkey"),
		}},
		// Idempotent claims: the lookup, the lock and the record of a first
		// claim, and the background job's cleanup.
		{"ClaimRequestGet", claimRequestGet, []any{"default", "claim-7"}, paths{
			"claim_requests": by("claim_requests_pkey"), "key_state": by("key_state_pkey"), "keys": by("keys_pkey"),
		}},
		{"ClaimRequestLock", claimRequestLock, []any{"default", "claim-7"}, paths{}},
		{"ClaimRequestRecord", claimRequestRecord, []any{"default", "claim-7", id, 7, sqlExpr("now() + interval '1 minute'")}, paths{}},
		{"ClaimRequestDeleteExpired", claimRequestDeleteExpired, []any{1000}, paths{
			"claim_requests c": walk("claim_requests_expires_at_idx"), "claim_requests": by("claim_requests_expires_at_idx"),
		}},
		// Counts: one pool's through its totals' primary key and its
		// changes' index; the fold, the list and the search for empty pools
		// read every pool's (a row each).
		{"PoolCountsGet", poolCountsGet, []any{"default"}, paths{
			"pool_count_totals": by("pool_count_totals_pkey"), "pool_count_changes": by("pool_count_changes_pool_xid_idx"),
		}},
		// Whether a claim's pool is known: its counts, or its policy.
		{"PoolCountsKnown", poolCountsKnown, []any{"default"}, paths{
			"pool_count_totals": by("pool_count_totals_pkey"), "pool_count_changes": by("pool_count_changes_pool_xid_idx"),
			"pools": by("pools_pkey"),
		}},
		{"PoolCountsFold", poolCountsFold, []any{1}, paths{"pool_count_totals": everyPool, "pool_count_changes": everyChange}},
		{"PoolCountsList", poolCountsList, nil, paths{
			"pool_count_totals": everyPool, "pool_count_changes": everyChange,
		}},
		{"PoolCountsEmpty", poolCountsEmpty, []any{100}, paths{
			"pool_count_totals": everyPool, "pool_count_changes": by("pool_count_changes_pool_xid_idx"),
		}},
		{"PoolCountsLock", poolCountsLock, []any{[]string{"default", "other"}}, paths{"pool_count_totals": by("pool_count_totals_pkey")}},
		// The changes of the empty pools: the planner may read every change
		// not yet folded, which the fold keeps few.
		{"PoolCountsDeleteEmpty", poolCountsDeleteEmpty, []any{[]string{"default", "other"}}, paths{
			"pool_count_totals": by("pool_count_totals_pkey"), "pool_count_changes": everyChange,
		}},
		{"PoolCountsTryFoldLock", poolCountsTryFoldLock, []any{1}, paths{}},
		// A walk that stops after max + 1 keys, however many are about to
		// expire; a bitmap scan would read them all.
		{"KeyCountExpiring", keyCountExpiring, []any{1000, 60.0}, paths{"keys": walk("keys_expires_at_idx")}},
		{"KeyListPage", keyListPage, []any{"default", uuid.Nil, 51}, listPagePaths},
		{"KeyListPage (later page)", keyListPage, []any{"other", id, 51}, listPagePaths},
		// Waiting clients: registrations by primary key, one poll of many
		// pools one step per pool on the free keys' index, and the job's
		// batches of expired registrations through their expiry.
		{"PoolWaitersRegister", poolWaitersRegister, []any{"pool-1", "replica-1", 120.0, 7}, paths{}},
		{"PoolWaitersUnregister", poolWaitersUnregister, []any{"pool-1", "replica-1", 7}, paths{"pool_waiters": by("pool_waiters_pkey")}},
		{"PoolWaitersFreePools", poolWaitersFreePools, []any{[]string{"default", "other", "made-up"}}, freePoolsPaths},
		{"PoolWaitersFreePools (1,000 pools)", poolWaitersFreePools, []any{manyPools}, freePoolsPaths},
		{"PoolWaitersDeleteExpired", poolWaitersDeleteExpired, []any{1000}, paths{
			"pool_waiters e": walk("pool_waiters_expires_at_idx"), "pool_waiters": by("pool_waiters_pkey"),
		}},
		// A row per election.
		{"LeaderAttemptElect", leaderAttemptElect, []any{"sweeper", "replica-1", 10.0}, paths{}},
		{"LeaderResign", leaderResign, []any{"sweeper", "replica-1"}, paths{"leader": seqScan + `|` + by("leader_pkey")}},
		// History: retention, which takes what it deletes out of the
		// rollups (their rows by primary key, a deleted lease's end and a
		// key's cooldowns of an hour along the key's events), and the
		// audit of a load test's run, which reads the whole stretch of
		// history it is given.
		{"KeyEventsDeleteOlderThan", keyEventsDeleteOlderThan, []any{nil, 30 * 86400.0, 1000}, paths{
			"key_events f": firstOf("key_events_at_idx"), "last_of_batch:key_events": walk("key_events_at_idx"),
			"key_events": by("key_events_at_idx"), "key_event_rollup_state": rollupState,
			"key_event_minutes t": by("key_event_minutes_pkey|key_event_minutes_minute_idx"), "key_event_minutes m": lockedRows,
			"key_event_hours t": by("key_event_hours_pkey|key_event_hours_hour_idx"), "key_event_hours h": lockedRows,
			"lease_duration_minutes t": by("lease_duration_minutes_pkey|lease_duration_minutes_minute_idx"), "lease_duration_minutes d": lockedRows,
			"key_cooldown_hours t": by("key_cooldown_hours_pkey|key_cooldown_hours_hour_idx"), "key_cooldown_hours c": lockedRows,
			"key_events n": historyOfKey, "key_events x": historyOfKey,
			"ended_leases t": by("ended_leases_pool_started_at_idx"), "ended_leases l": lockedRows,
		}},
		{"KeyEventsOverlappingLeases", keyEventsOverlappingLeases, []any{dayAgo}, paths{
			"key_events a": `Seq Scan|Bitmap Heap Scan using key_events_at_idx and key_events_key_id_at_idx|` + historyByTime,
			"key_events e": historyOfKey,
		}},
		{"KeyEventsCountByEvent", keyEventsCountByEvent, []any{dayAgo}, paths{"key_events": seqScan + `|` + historyByTime}},
		// Reports. The leases and their durations per hour read the views:
		// every cell an index range on time (and pool), every lease end one
		// step along the key's events. The others read the rollups, by pool
		// and time for one pool and by time for every pool, and the events
		// not folded yet by the same.
		{"KeyLeasesList", keyLeasesList, []any{"history-1", dayAgo, now, 1000}, leasesPaths(historyByPoolTime)},
		{"KeyLeasesListAllPools", keyLeasesListAllPools, []any{dayAgo, now, 1000}, allPoolsLeasesPaths},
		{"KeyLeasesListAllPools (31 days)", keyLeasesListAllPools, []any{monthAgo, now, 1000}, allPoolsLeasesPaths},
		// The lease durations per hour: the leases that started from the
		// hourly rollup, the ended ones from ended_leases, by pool and time
		// or by time, and the events not folded yet as the others read them.
		{"LeaseDurationsHourlyList", leaseDurationsHourlyList, []any{"history-1", dayAgo, now}, durationsPaths},
		{"LeaseDurationsHourlyList (31 days)", leaseDurationsHourlyList, []any{"history-1", monthAgo, now}, durationsPaths},
		{"LeaseDurationsHourlyList (a day a month ago)", leaseDurationsHourlyList, []any{"history-1", monthAgo, sqlExpr("now() - interval '30 days'")}, durationsPaths},
		{"LeaseDurationsHourlyListAllPools", leaseDurationsHourlyListAllPools, []any{dayAgo, now}, allPoolsDurationsPaths},
		{"LeaseActivityHourlyList", leaseActivityHourlyList, []any{dayAgo, now, "history-1"}, hourlyPaths},
		{"LeaseActivityHourlyListAllPools", leaseActivityHourlyListAllPools, []any{dayAgo, now}, allPoolsHourlyPaths},
		{"LeaseActivityHourlyListAllPools (31 days)", leaseActivityHourlyListAllPools, []any{monthAgo, now}, allPoolsHourlyPaths},
		{"KeyActivityHourlyList", keyActivityHourlyList, []any{dayAgo, now, "history-1"}, hourlyPaths},
		{"KeyActivityHourlyListAllPools", keyActivityHourlyListAllPools, []any{dayAgo, now}, allPoolsHourlyPaths},
		{"KeyCooldownsHourlyList", keyCooldownsHourlyList, []any{dayAgo, now, "history-1"}, paths{
			"key_cooldown_hours c": by("key_cooldown_hours_pkey"), "key_events e": historyByPoolTime, "key_event_rollup_state": rollupState,
		}},
		{"KeyCooldownsHourlyListAllPools (31 days)", keyCooldownsHourlyListAllPools, []any{monthAgo, now}, paths{
			"key_cooldown_hours c": seqScan + `|` + by("key_cooldown_hours_hour_idx"), "key_events e": historyByTime, "key_event_rollup_state": rollupState,
		}},
		{"PoolUtilisationList", poolUtilisationList, []any{dayAgo, "history-1", now}, utilisationPaths},
		{"PoolUtilisationList (a day a month ago)", poolUtilisationList, []any{monthAgo, "history-1", sqlExpr("now() - interval '30 days'")}, utilisationPaths},
		{"PoolUtilisationListAllPools", poolUtilisationListAllPools, []any{dayAgo, now}, allPoolsUtilisationPaths},
		{"PoolUtilisationListAllPools (31 days)", poolUtilisationListAllPools, []any{monthAgo, now}, allPoolsUtilisationPaths},
		// The dashboard: the last hour, by minute and by lease duration, from
		// the rollups of minutes. The chart of one pool reads that pool's
		// rows only.
		{"KeyEventsPerMinute", keyEventsPerMinute, []any{60, "history-1"}, paths{
			"key_event_minutes m": by("key_event_minutes_pkey"), "key_events e": historyByPoolTime, "key_event_rollup_state": rollupState,
		}},
		{"KeyEventsPerMinute (a day)", keyEventsPerMinute, []any{1440, "history-1"}, paths{
			"key_event_minutes m": by("key_event_minutes_pkey"), "key_events e": historyByPoolTime, "key_event_rollup_state": rollupState,
		}},
		{"KeyEventsPerMinuteAllPools", keyEventsPerMinuteAllPools, []any{60}, paths{
			"key_event_minutes m": by("key_event_minutes_pkey"), "key_events e": historyByTime, "key_event_rollup_state": rollupState,
		}},
		{"KeyLeasesDurationHistogram", keyLeasesDurationHistogram, []any{60, "history-1"}, onePoolHistogramPaths},
		{"KeyLeasesDurationHistogramAllPools", keyLeasesDurationHistogramAllPools, []any{60}, histogramPaths(historyByTime)},
		// The background job's fold of new history into the rollups, and
		// the rows that a retention batch emptied.
		{"KeyEventRollupsFold", keyEventRollupsFold, []any{now, 10000}, paths{
			"key_event_rollup_state": rollupState, "key_events e": walk("key_events_at_idx"), "events:key_events e": historyByTime,
			"key_events a": walkAlongKey, "key_events t": historyOfKey,
			"key_event_minutes o": walk("key_event_minutes_minute_idx"), "key_event_minutes m": lockedRows,
			"lease_duration_minutes o": walk("lease_duration_minutes_minute_idx"), "lease_duration_minutes d": lockedRows,
		}},
		// The catch-up of ended_leases after an upgrade: the fold's range
		// and steps, from ended_leases' own horizon.
		{"KeyEventRollupsFoldEndedLeases", keyEventRollupsFoldEndedLeases, []any{10000}, paths{
			"key_event_rollup_state": rollupState, "key_events e": walk("key_events_at_idx"), "events:key_events e": historyByTime,
			"key_events a": walkAlongKey, "key_events t": historyOfKey,
		}},
		{"KeyEventRollupsLockForRetention", keyEventRollupsLockForRetention, nil, paths{}},
		{"KeyEventRollupsDeleteEmpty", keyEventRollupsDeleteEmpty, nil, paths{
			"key_events e": firstOf("key_events_at_idx"), "key_event_hours h": by("key_event_hours_hour_idx"),
			"key_event_minutes m": by("key_event_minutes_minute_idx"), "lease_duration_minutes d": by("lease_duration_minutes_minute_idx"),
			"key_cooldown_hours c": by("key_cooldown_hours_hour_idx"),
		}},
	}
}

// leasesPaths are the paths of the statements that read key_leases: the
// assigned events by the given range, each lease's end and keep-alives one
// step along its key's events.
func leasesPaths(starts string) paths {
	return paths{"key_events a": starts, "key_events e": historyOfKey}
}

// allPoolsLeasesPaths are the paths of the leases of every pool: the time
// of the max-th start, a walk of the starts in time order, and the leases
// up to it as leasesPaths reads them.
var allPoolsLeasesPaths = func() paths {
	p := leasesPaths(historyByTime)
	p["last_start:key_events a"] = walk("key_events_at_idx")
	return p
}()

// histogramPaths are the paths of the lease durations of the last hour:
// the rollups' rows of its minutes, and the starts and ends not folded yet
// by events (by pool and time for one pool, by time for every pool), each
// lease's start or end one step along its key's events.
func histogramPaths(events string) paths {
	return paths{
		"lease_duration_minutes d": by("lease_duration_minutes_pkey"), "key_event_minutes m": by("key_event_minutes_pkey"),
		"key_event_rollup_state": rollupState,
		"key_events ended":       events, "key_events r": events,
		"key_events a": walkAlongKey, "key_events t": historyOfKey, "key_events e": walkAlongKey,
	}
}

// durationsPaths and allPoolsDurationsPaths are the paths of the lease
// durations per hour of one pool and of every pool: the hourly rollup, the
// ended leases, the starts and ends not folded yet, and each of those ends'
// lease one step back along its key's events.
var (
	durationsPaths = paths{
		"key_event_hours h": by("key_event_hours_pkey"), "ended_leases d": by("ended_leases_pool_started_at_idx"),
		"key_events e": historyByPoolTime, "key_events x": historyByPoolTime,
		"key_events a": walkAlongKey, "key_events t": historyOfKey, "key_event_rollup_state": rollupState,
	}
	allPoolsDurationsPaths = paths{
		"key_event_hours h": seqScan + `|` + by("key_event_hours_hour_idx"), "ended_leases d": by("ended_leases_hour_idx"),
		"key_events e": historyByTime, "key_events x": historyByTime,
		"key_events a": walkAlongKey, "key_events t": historyOfKey, "key_event_rollup_state": rollupState,
	}
)

// onePoolHistogramPaths: histogramPaths of one pool, whose starts of the
// part minute at the range's start (key_events p) are read by pool and
// time.
var onePoolHistogramPaths = func() paths {
	p := histogramPaths(historyByPoolTime)
	p["key_events p"] = historyByPoolTime
	return p
}()

var (
	// Rows a statement locked, updated again by their address.
	lockedRows = `Tid Scan`
	claimPaths = paths{
		"key_state c": walk("key_state_claimable_position_idx"), "by_address:key_state s": lockedRows,
		"by_key:key_state s": by("key_state_pkey"), "keys": by("keys_pkey"), "key_labels": by("key_labels_pkey"),
	}
	keepAlivePaths     = paths{"key_state": by("key_state_pkey"), "keys": by("keys_pkey")}
	labelledClaimPaths = paths{
		"after_start:key_labels l": walk("key_labels_claimable_idx"), "before_start:key_labels l": walk("key_labels_claimable_idx"),
		"key_labels": by("key_labels_pkey"), "key_state": by("key_state_pkey"), "keys": by("keys_pkey"),
		"by_address:key_state s": lockedRows, "by_key:key_state s": by("key_state_pkey"),
	}
	endedLeasesPaths = paths{
		"key_state c": walk("key_state_lease_expires_at_idx"), "by_address:key_state s": lockedRows, "by_key:key_state s": by("key_state_pkey"), "key_labels": by("key_labels_pkey"),
	}
	listPagePaths  = paths{"keys": walk("keys_pool_id_idx"), "key_state": by("key_state_pkey")}
	freePoolsPaths = paths{"key_state": walk("key_state_claimable_position_idx"), "keys": by("keys_pkey")}
	// The utilisation of one pool: the oldest event, whether the pool has
	// history, the changes of its hours, minutes and events not folded yet,
	// and its counts now.
	utilisationPaths = paths{
		"key_events o": firstOf("key_events_at_idx"), "key_events t": historyByPoolTime, "key_events e": historyByPoolTime,
		"key_event_hours h": by("key_event_hours_pkey"), "key_event_minutes m": by("key_event_minutes_pkey"),
		"key_event_rollup_state": rollupState,
		"pool_count_totals":      by("pool_count_totals_pkey"), "pool_count_changes": by("pool_count_changes_pool_xid_idx"),
	}
	// Of every pool: the changes by time, every pool's counts (totals and
	// changes joined once), and whether a pool with keys but no change in
	// the range has history, as for one pool.
	allPoolsUtilisationPaths = paths{
		"key_events o": firstOf("key_events_at_idx"), "key_events t": historyByPoolTime, "key_events e": historyByTime,
		"key_event_hours f": by("key_event_hours_pkey"),
		"key_event_hours h": seqScan + `|` + by("key_event_hours_hour_idx"), "key_event_minutes m": by("key_event_minutes_minute_idx"),
		"key_event_rollup_state": rollupState,
		"pool_count_totals":      everyPool, "pool_count_changes": everyChange,
	}
	// everyPool reads the totals of every pool, a row each.
	everyPool = seqScan + `|` + firstOf("pool_count_totals_pkey")
	// everyChange reads every change not yet folded.
	everyChange = seqScan + `|` + by("pool_count_changes_pool_xid_idx")
)

// statsState is a state of the planner's statistics under which the plans
// are checked. enter brings the database into it; the function it returns
// leaves it once the plans are checked.
type statsState struct {
	name  string
	enter func() (leave func())
}

func checkPlans(t *testing.T, perPool int32, large bool, write bool) {
	ctx := context.Background()
	url := testdb.New(t)
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	q := New(conn)
	exec := func(sql string, args ...any) {
		t.Helper()
		_, err := conn.Exec(ctx, sql, args...)
		require.NoError(t, err, sql)
	}
	tables := []string{"keys", "key_state", "key_labels", "key_events", "pools", "pool_count_totals", "pool_count_changes", "pool_waiters", "claim_requests", "leader",
		"key_event_rollup_state", "key_event_minutes", "key_event_hours", "lease_duration_minutes", "key_cooldown_hours", "ended_leases"}
	// The statistics change only where the test changes them.
	for _, table := range tables {
		exec("ALTER TABLE " + table + " SET (autovacuum_enabled = false)")
	}
	analyze := func(command string) {
		t.Helper()
		for _, table := range tables {
			exec(command + " " + table)
		}
	}
	loadPlansData(t, conn, q, perPool)

	pools := []string{"default", "other", "labelled"}
	// claim holds the pool's free keys but leave, and release frees its
	// held keys but the keep of lowest id, changing their rows as KeyClaim
	// and KeyReleaseMany do (key_labels too), in one statement each and
	// without history or counts: the statistics and the dead versions
	// they leave are the same, in a fraction of the time.
	claim := func(pool string, leave int) {
		t.Helper()
		exec(`
			WITH claimed AS (
				UPDATE key_state AS s
				SET lease_token = nextval('lease_token_seq'), blocked_at = now(),
				    lease_expires_at = now() + interval '1 minute', times_assigned = s.times_assigned + 1
				WHERE s.key_id IN (
					SELECT c.key_id FROM key_state AS c
					WHERE c.pool = $1 AND c.lease_token IS NULL AND c.cooling_until IS NULL
					ORDER BY c.position OFFSET $2
				)
				RETURNING s.key_id, s.labelled
			)
			UPDATE key_labels AS l SET position = NULL
			FROM claimed WHERE claimed.labelled AND l.key_id = claimed.key_id`, pool, leave)
	}
	release := func(pool string, keep int) {
		t.Helper()
		exec(`
			WITH released AS (
				UPDATE key_state AS s
				SET lease_token = NULL, blocked_at = NULL, lease_expires_at = NULL, position = random()
				WHERE s.key_id IN (
					SELECT c.key_id FROM key_state AS c
					WHERE c.pool = $1 AND c.lease_token IS NOT NULL
					ORDER BY c.key_id OFFSET $2
				)
				RETURNING s.key_id, s.labelled
			)
			UPDATE key_labels AS l SET position = random()
			FROM released WHERE released.labelled AND l.key_id = released.key_id`, pool, keep)
	}
	rounds := 2
	if testing.Short() {
		rounds = 1
	}
	states := []statsState{
		{"never analysed", func() func() { return nil }},
		{"fresh", func() func() { analyze("VACUUM ANALYZE"); return nil }},
		{"bloated", func() func() {
			holder, err := pgx.Connect(ctx, url)
			require.NoError(t, err)
			_, err = holder.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ")
			require.NoError(t, err)
			_, err = holder.Exec(ctx, "SELECT count(*) FROM pool_count_totals")
			require.NoError(t, err)
			for range rounds {
				for _, pool := range pools {
					claim(pool, 0)
					release(pool, 20)
				}
			}
			analyze("ANALYZE")
			return func() {
				_, err := holder.Exec(ctx, "ROLLBACK")
				require.NoError(t, err)
				require.NoError(t, holder.Close(ctx))
				analyze("VACUUM")
			}
		}},
		{"most held", func() func() {
			for _, pool := range pools {
				claim(pool, int(perPool)/100)
			}
			analyze("ANALYZE")
			return nil
		}},
		{"none held", func() func() {
			for _, pool := range pools {
				release(pool, 0)
			}
			analyze("VACUUM ANALYZE")
			return nil
		}},
	}

	var doc strings.Builder
	doc.WriteString("# Query plans\n\nThe generic plan of every statement the service runs (it runs every statement\n" +
		"with `plan_cache_mode=force_generic_plan`), on a database of 60,000 keys in two pools with half of one\n" +
		"pool held, and 30,000 labelled keys in a third pool (a third held, a tenth with secrets, some cooling\n" +
		"down), freshly analysed. Written by `UPDATE_PLANS=1 go test ./db/dbsqlc -run TestQueryPlansUseIndexes`;\n" +
		"the test fails if a plan reads a table other than through the index named for it, on these\n" +
		"statistics or on four other states of them (never analysed, bloated under a held snapshot, most\n" +
		"keys held, none held).\n")
	if !large {
		states = states[1:]
	}
	for _, state := range states {
		start := time.Now()
		leave := state.enter()
		t.Logf("%s: %s", state.name, time.Since(start).Round(time.Millisecond))
		for _, st := range statements() {
			plan := checkPlan(t, conn, st, state.name)
			if state.name == "fresh" {
				fmt.Fprintf(&doc, "\n## %s\n\n```\n%s```\n", st.name, plan)
			}
		}
		if leave != nil {
			leave()
		}
	}
	if write && !t.Failed() {
		require.NoError(t, os.WriteFile("../../docs/query-plans.md", []byte(doc.String()), 0o644))
	}
}

// checkPlan checks the statement's generic plan and reports what is wrong
// with it as errors of t. It returns the plan as text.
func checkPlan(t *testing.T, conn *pgx.Conn, st statement, state string) string {
	t.Helper()
	ctx := context.Background()
	_, err := conn.Exec(ctx, "SET plan_cache_mode = force_generic_plan")
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "PREPARE checked AS "+st.sql)
	require.NoError(t, err, st.name)
	defer func() {
		_, err := conn.Exec(ctx, "DEALLOCATE checked; RESET plan_cache_mode")
		require.NoError(t, err)
	}()
	literals := make([]string, len(st.args))
	for j, arg := range st.args {
		literals[j] = literal(arg)
	}
	execute := "EXECUTE checked"
	if len(literals) > 0 {
		execute += "(" + strings.Join(literals, ", ") + ")"
	}
	var out []struct{ Plan map[string]any }
	var raw []byte
	require.NoError(t, conn.QueryRow(ctx, "EXPLAIN (COSTS OFF, FORMAT JSON) "+execute).Scan(&raw))
	require.NoError(t, json.Unmarshal(raw, &out))
	require.Len(t, out, 1)
	var scans []scan
	scansOf(out[0].Plan, "", "", &scans)
	plan := explainText(t, conn, "EXPLAIN (COSTS OFF) "+execute)

	var problems []string
	taken := map[string]bool{}
	for _, s := range scans {
		name, path := st.paths.of(s)
		switch {
		case name == "":
			problems = append(problems, fmt.Sprintf("%s: %s, and no path is given for it", s, s.path))
		case !regexp.MustCompile(`^(` + path + `)$`).MatchString(s.path):
			problems = append(problems, fmt.Sprintf("%s: %s, want %s", s, s.path, path))
		}
		taken[name] = true
	}
	for name, path := range st.paths {
		if !taken[name] {
			problems = append(problems, fmt.Sprintf("%s: not read, want %s", name, path))
		}
	}
	sort.Strings(problems)
	for _, p := range problems {
		t.Errorf("%s, %s: %s", st.name, state, p)
	}
	if len(problems) > 0 {
		t.Logf("%s, %s:\n%s", st.name, state, plan)
	}
	return plan
}

// scan is one read of a table in a plan.
type scan struct {
	cte      string // the WITH query the scan is part of; "" for the main query
	relation string
	alias    string
	// path is "Seq Scan", "Index Scan using <index>", "Index Only Scan
	// using <index>" or "Bitmap Heap Scan using <index> and <index>...",
	// followed by " from its first entry" when an index has no Index Cond
	// (the scan reads it from its start, and the whole of it unless it
	// stops early), then by " into a sort" when a sort takes its rows.
	path string
}

func (s scan) String() string {
	name := s.relation + " " + s.alias
	if s.cte != "" {
		name = s.cte + ":" + name
	}
	return name
}

// of returns the name and path in p that apply to the scan, or "".
func (p paths) of(s scan) (string, string) {
	for _, name := range []string{s.cte + ":" + s.relation + " " + s.alias, s.cte + ":" + s.relation, s.relation + " " + s.alias, s.relation} {
		if path, ok := p[name]; ok {
			return name, path
		}
	}
	if path, ok := everyStatement[s.relation]; ok {
		return "every statement: " + s.relation, path
	}
	return "", ""
}

// everyStatement are the paths of tables that statements read on the side,
// unless a statement's own paths name them: a pool's policy, by name.
var everyStatement = paths{"pools": by("pools_pkey")}

// aliasNumber is the suffix EXPLAIN adds to an alias that a statement uses
// more than once.
var aliasNumber = regexp.MustCompile(`_\d+$`)

// scansOf appends the scans of tables in the plan node and its children
// (init plans and subplans included) to out; parent is the node type of
// the node's parent.
func scansOf(node map[string]any, cte, parent string, out *[]scan) {
	if name, _ := node["Subplan Name"].(string); strings.HasPrefix(name, "CTE ") {
		cte = strings.TrimPrefix(name, "CTE ")
	}
	nodeType, _ := node["Node Type"].(string)
	if relation, ok := node["Relation Name"].(string); ok && nodeType != "ModifyTable" {
		alias, _ := node["Alias"].(string)
		s := scan{cte: cte, relation: relation, alias: aliasNumber.ReplaceAllString(alias, ""), path: nodeType}
		searched := true
		switch nodeType {
		case "Index Scan", "Index Only Scan":
			s.path += " using " + node["Index Name"].(string)
			searched = node["Index Cond"] != nil
		case "Bitmap Heap Scan":
			var indexes []string
			var bitmapIndexes func(map[string]any)
			bitmapIndexes = func(n map[string]any) {
				if n["Node Type"] == "Bitmap Index Scan" {
					indexes = append(indexes, n["Index Name"].(string))
					searched = searched && n["Index Cond"] != nil
				}
				children, _ := n["Plans"].([]any)
				for _, c := range children {
					bitmapIndexes(c.(map[string]any))
				}
			}
			bitmapIndexes(node)
			s.path += " using " + strings.Join(indexes, " and ")
		}
		if !searched {
			s.path += " from its first entry"
		}
		// A sort (not an incremental one) takes every row of the scan
		// before it gives the first: a LIMIT above it stops nothing.
		if parent == "Sort" {
			s.path += " into a sort"
		}
		*out = append(*out, s)
	}
	children, _ := node["Plans"].([]any)
	for _, c := range children {
		scansOf(c.(map[string]any), cte, nodeType, out)
	}
}

// TestQueryPlansCoverEveryStatement holds TestQueryPlansUseIndexes to every
// statement of db/queries.
func TestQueryPlansCoverEveryStatement(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("../queries/*.sql")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	checked := map[string]bool{}
	for _, st := range statements() {
		name, _, _ := strings.Cut(st.name, " (")
		checked[name] = true
	}
	declared := regexp.MustCompile(`(?m)^-- name: (\w+)`)
	for _, file := range files {
		text, err := os.ReadFile(file)
		require.NoError(t, err)
		for _, m := range declared.FindAllStringSubmatch(string(text), -1) {
			_, skipped := notChecked[m[1]]
			require.True(t, checked[m[1]] || skipped, "%s (%s) has no access paths in TestQueryPlansUseIndexes", m[1], filepath.Base(file))
		}
	}
}

// loadPlansData writes the data of TestQueryPlansUseIndexes, with no
// ANALYZE: pools default and other of perPool keys each, half of default
// held; a pool of perPool labelled keys; history, count changes, waiting
// clients and records of idempotent claims.
func loadPlansData(t *testing.T, conn *pgx.Conn, q *Queries, perPool int32) {
	ctx := context.Background()
	for _, pool := range []string{"default", "other"} {
		_, err := q.KeyCreate(ctx, KeyCreateParams{Pool: pool, Seats: 1, KeyTtlSeconds: 3600, Count: perPool, MaxSeats: perPool})
		require.NoError(t, err)
	}
	_, err := q.KeyClaim(ctx, KeyClaimParams{Pool: "default", StartPosition: 0, Max: perPool / 2, LeaseTtlSeconds: 60})
	require.NoError(t, err)
	// The pool of labelled keys, written directly: through KeyCreate its
	// counts would change the plans of the counts' statements.
	_, err = conn.Exec(ctx, `
		WITH created AS (
			INSERT INTO keys (pool, expires_at)
			SELECT 'labelled', now() + interval '1 hour' FROM generate_series(1, $1::int)
			RETURNING id
		)
		INSERT INTO key_state (key_id, pool, lease_token, blocked_at, lease_expires_at)
		SELECT id, 'labelled', t, CASE WHEN t IS NOT NULL THEN now() END, CASE WHEN t IS NOT NULL THEN now() + interval '1 minute' END
		FROM (SELECT id, CASE WHEN random() < 1.0 / 3 THEN nextval('lease_token_seq') END AS t FROM created) AS c`, perPool)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `
		INSERT INTO key_events (at, key_id, pool, event, lease_token)
		SELECT now() - n * interval '8 seconds', gen_random_uuid(), 'history-' || n % 4,
		       (ARRAY['assigned', 'kept_alive', 'released', 'lease_expired'])[n % 4 + 1], n
		FROM generate_series(1, 300000) AS n`)
	require.NoError(t, err)
	// Leases of 500 keys of one pool over the last two days, each released
	// after up to 90 s, one in ten with a cooldown: lease durations and
	// cooldowns for the rollups.
	_, err = conn.Exec(ctx, `
		INSERT INTO key_events (at, key_id, pool, event, lease_token, cooldown)
		SELECT now() - interval '2 days' + n * interval '8 seconds' + s.i * (n % 90) * interval '1 second',
		       md5('lease-key-' || n % 500)::uuid, 'history-1',
		       CASE WHEN s.i = 0 THEN 'assigned' ELSE 'released' END, 1000000 + n,
		       CASE WHEN s.i = 1 AND n % 10 = 0 THEN (1 + n % 30) * interval '1 second' END
		FROM generate_series(1, 20000) AS n CROSS JOIN generate_series(0, 1) AS s (i)
		ORDER BY 1`)
	require.NoError(t, err)
	// Folded into the rollups, as the background job keeps them.
	foldHistory(t, conn)
	// The totals and policies of 2,000 more pools, as a deployment of many
	// small pools has them, and a policy for default.
	_, err = conn.Exec(ctx, `
		INSERT INTO pool_count_totals (pool, keys)
		SELECT 'pool-' || n, 50 FROM generate_series(1, 2000) AS n`)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `
		INSERT INTO pools (name, lease_ttl, require_lease_token)
		SELECT 'pool-' || n, interval '30 seconds', n % 2 = 0 FROM generate_series(1, 2000) AS n
		UNION ALL
		SELECT 'default', interval '1 minute', false`)
	require.NoError(t, err)
	// Count changes not yet folded, as a busy moment leaves them.
	_, err = conn.Exec(ctx, `
		INSERT INTO pool_count_changes (pool, keys, blocked)
		SELECT 'history-' || n % 4, 0, 1 - 2 * (n % 2) FROM generate_series(1, 20000) AS n`)
	require.NoError(t, err)
	// Registrations of waiting clients: 100 replicas waiting on 200 pools
	// each, a third of them expired (replicas that died).
	_, err = conn.Exec(ctx, `
		INSERT INTO pool_waiters (pool, replica, expires_at, generation)
		SELECT 'pool-' || p, 'replica-' || r, now() + (CASE WHEN r % 3 = 0 THEN -1 ELSE 1 END) * interval '1 minute', p
		FROM generate_series(1, 200) AS p, generate_series(1, 100) AS r`)
	require.NoError(t, err)
	// Records of idempotent claims, half of them past their time.
	_, err = conn.Exec(ctx, `
		INSERT INTO claim_requests (pool, idempotency_key, key_id, lease_token, expires_at)
		SELECT 'default', 'claim-' || n, gen_random_uuid(), n, now() + (n - $1::int) * interval '10 milliseconds'
		FROM generate_series(1, 2 * $1::int) AS n`, perPool)
	require.NoError(t, err)
	// Labels, secrets, names and cooldowns, in a pool of their own: every
	// key carries three labels (region, zone, team) and a third of them
	// tier=paid, a third are held; a tenth carry a secret, sealed under two
	// encryption keys (one in fifty under the older one); every key has a
	// name; one free paid key in thirty cools down, half of those until a
	// minute ago.
	_, err = conn.Exec(ctx, `
		WITH numbered AS (
			SELECT id, pool, row_number() OVER (ORDER BY id) AS n FROM keys WHERE pool = 'labelled'
		), labelled AS (
			UPDATE keys AS k
			SET labels = jsonb_build_object('region', 'r' || (n.n % 8), 'zone', 'z' || (n.n % 5), 'team', 't' || (n.n % 7)) ||
			             CASE WHEN n.n % 3 = 0 THEN '{"tier": "paid"}'::jsonb ELSE '{}'::jsonb END,
			    secret_key_id = CASE WHEN n.n % 10 = 0 THEN CASE WHEN n.n % 50 = 0 THEN 'old' ELSE 'new' END END,
			    secret_ciphertext = CASE WHEN n.n % 10 = 0 THEN gen_random_uuid()::text::bytea END,
			    secret_digest = CASE WHEN n.n % 10 = 0 THEN sha256(k.id::text::bytea) END,
			    secret_hint = CASE WHEN n.n % 10 = 0 THEN right(k.id::text, 4) END,
			    name = 'k' || n.n
			FROM numbered AS n
			WHERE k.id = n.id
			RETURNING k.id, k.pool, n.n
		), state AS (
			UPDATE key_state AS s SET labelled = true,
			    cooling_until = CASE WHEN labelled.n % 30 = 0 AND s.lease_token IS NULL
			                         THEN now() + (labelled.n % 60 / 30 * 2 - 1) * interval '1 minute' END
			FROM labelled WHERE s.key_id = labelled.id
			RETURNING s.key_id, s.lease_token, s.cooling_until
		)
		INSERT INTO key_labels (key_id, pool, label, position)
		SELECT labelled.id, labelled.pool, l.label,
		       CASE WHEN state.lease_token IS NULL AND state.cooling_until IS NULL THEN random() END
		FROM labelled
		JOIN state ON state.key_id = labelled.id
		CROSS JOIN LATERAL (
			SELECT 'region=r' || (labelled.n % 8) AS label
			UNION ALL
			SELECT 'zone=z' || (labelled.n % 5)
			UNION ALL
			SELECT 'team=t' || (labelled.n % 7)
			UNION ALL
			SELECT 'tier=paid' WHERE labelled.n % 3 = 0
		) AS l`)
	require.NoError(t, err)
}

// Arguments of the report statements.
const (
	now      sqlExpr = "now()"
	dayAgo   sqlExpr = "now() - interval '1 day'"
	monthAgo sqlExpr = "now() - interval '31 days'"
)

// manyPools are the 1,000 pool names that a replica's poll sends when its
// clients wait on that many pools.
var manyPools = func() []string {
	pools := make([]string, 1000)
	for i := range pools {
		pools[i] = fmt.Sprintf("made-up-%d", i)
	}
	return pools
}()

// sqlExpr is an argument written as an SQL expression.
type sqlExpr string

// literal writes a test argument as SQL: EXPLAIN EXECUTE takes no
// parameters of its own.
func literal(arg any) string {
	switch v := arg.(type) {
	case nil:
		return "NULL"
	case sqlExpr:
		return string(v)
	case string, uuid.UUID:
		return fmt.Sprintf("'%s'", v)
	case []uuid.UUID:
		items := make([]string, len(v))
		for i, id := range v {
			items[i] = fmt.Sprintf("'%s'", id)
		}
		return "ARRAY[" + strings.Join(items, ", ") + "]::uuid[]"
	case []string:
		items := make([]string, len(v))
		for i, s := range v {
			items[i] = fmt.Sprintf("'%s'", s)
		}
		return "ARRAY[" + strings.Join(items, ", ") + "]::text[]"
	case []int32:
		items := make([]string, len(v))
		for i, n := range v {
			items[i] = fmt.Sprint(n)
		}
		return "ARRAY[" + strings.Join(items, ", ") + "]::int[]"
	case []int64:
		items := make([]string, len(v))
		for i, n := range v {
			items[i] = fmt.Sprint(n)
		}
		return "ARRAY[" + strings.Join(items, ", ") + "]::bigint[]"
	case []float64:
		items := make([]string, len(v))
		for i, n := range v {
			items[i] = fmt.Sprint(n)
		}
		return "ARRAY[" + strings.Join(items, ", ") + "]::float8[]"
	case [][]byte:
		items := make([]string, len(v))
		for i, b := range v {
			items[i] = fmt.Sprintf("'\\x%x'::bytea", b)
		}
		return "ARRAY[" + strings.Join(items, ", ") + "]::bytea[]"
	default:
		return fmt.Sprint(v)
	}
}

func explainText(t *testing.T, conn *pgx.Conn, sql string) string {
	t.Helper()
	rows, err := conn.Query(context.Background(), sql)
	require.NoError(t, err)
	defer rows.Close()
	var plan strings.Builder
	for rows.Next() {
		var line string
		require.NoError(t, rows.Scan(&line))
		plan.WriteString(line + "\n")
	}
	require.NoError(t, rows.Err())
	return plan.String()
}
