package dbsqlc

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }

// TestQueryPlansUseIndexes checks that no statement the service runs scans a
// table: on pools of 60,000 and of 2,000 keys, half of one pool held,
// 100,000 more history rows spread over 30 days in four pools, 20,000
// count changes not yet folded, 20,000 registrations of waiting clients and
// records of idempotent claims, each plan (the custom plan for typical
// arguments and the generic plan a prepared statement may switch to)
// reaches keys, key_state, key_events, the count changes, pool_waiters and
// claim_requests through an index. A
// small table matters: there the planner is tempted to scan, and a scan in a
// statement that locks rows makes concurrent claims queue. With
// UPDATE_PLANS=1 it writes the plans of the large pool to
// docs/query-plans.md.
func TestQueryPlansUseIndexes(t *testing.T) {
	t.Parallel()
	for _, perPool := range []int32{30000, 1000} {
		t.Run(fmt.Sprint(2*perPool), func(t *testing.T) {
			t.Parallel()
			checkPlans(t, perPool, perPool == 30000 && os.Getenv("UPDATE_PLANS") != "")
		})
	}
}

func checkPlans(t *testing.T, perPool int32, write bool) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, testdb.New(t))
	require.NoError(t, err)
	defer conn.Close(ctx)
	q := New(conn)
	for _, pool := range []string{"default", "other"} {
		_, err := q.KeyCreate(ctx, KeyCreateParams{Pool: pool, KeyTtlSeconds: 3600, Count: perPool})
		require.NoError(t, err)
	}
	_, err = q.KeyClaim(ctx, KeyClaimParams{Pool: "default", StartPosition: 0, Max: perPool / 2, LeaseTtlSeconds: 60})
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
		SELECT now() - n * interval '25 seconds', gen_random_uuid(), 'history-' || n % 4,
		       (ARRAY['assigned', 'kept_alive', 'released', 'lease_expired'])[n % 4 + 1], n
		FROM generate_series(1, 100000) AS n`)
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
	// Labels, secrets and cooldowns, in a pool of their own (rewriting the
	// other pools' rows would change their physical order, which the plans
	// above depend on): every key carries three labels (region, zone, team) and a
	// third of them tier=paid, a third are held; a tenth carry a secret, sealed under two
	// encryption keys (one in fifty under the older one); one free paid key
	// in thirty cools down, half of those until a minute ago.
	_, err = conn.Exec(ctx, `
		WITH numbered AS (
			SELECT id, pool, row_number() OVER (ORDER BY id) AS n FROM keys WHERE pool = 'labelled'
		), labelled AS (
			UPDATE keys AS k
			SET labels = jsonb_build_object('region', 'r' || (n.n % 8), 'zone', 'z' || (n.n % 5), 'team', 't' || (n.n % 7)) ||
			             CASE WHEN n.n % 3 = 0 THEN '{"tier": "paid"}'::jsonb ELSE '{}'::jsonb END,
			    secret_key_id = CASE WHEN n.n % 10 = 0 THEN CASE WHEN n.n % 50 = 0 THEN 'old' ELSE 'new' END END,
			    secret_ciphertext = CASE WHEN n.n % 10 = 0 THEN gen_random_uuid()::text::bytea END,
			    secret_digest = CASE WHEN n.n % 10 = 0 THEN sha256(k.id::text::bytea) END
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
	for _, table := range []string{"key_labels", "keys", "key_state", "key_events", "pool_count_totals", "pool_count_changes", "pool_waiters", "claim_requests"} {
		_, err = conn.Exec(ctx, "VACUUM ANALYZE "+table)
		require.NoError(t, err)
	}

	id := uuid.New()
	statements := []struct {
		name  string
		sql   string
		args  []any
		index []string // indexes the plan must use (regular expressions)
	}{
		{"KeyClaim", keyClaim, []any{"default", 0.5, 1, 60.0}, []string{"key_state_claimable_position_idx", "key_state_pkey", "keys_pkey"}},
		{"KeyClaim (batch of 32)", keyClaim, []any{"default", 0.99, 32, 60.0}, []string{"key_state_claimable_position_idx", "key_state_pkey", "keys_pkey"}},
		{"KeyGet", keyGet, []any{id}, []string{"keys_pkey", "key_state_pkey"}},
		{"KeyPoolHasFree", keyPoolHasFree, []any{"default"}, []string{"key_state_claimable_position_idx", "keys_pkey"}},
		{"KeyKeepAliveMany", keyKeepAliveMany, []any{[]uuid.UUID{id, uuid.New()}, []int64{0, 7}, 60.0, 3600.0}, []string{"keys_pkey", "key_state_pkey"}},
		{"KeyReleaseMany", keyReleaseMany, []any{[]uuid.UUID{id, uuid.New()}, []int64{0, 7}, []float64{0, 30}}, []string{"key_state_pkey", "keys_pkey"}},
		// Labels, secrets and cooldowns: a labelled claim walks the first
		// label's index of claimable keys, the others checked by primary key.
		{"KeyClaimLabelled", keyClaimLabelled, []any{"labelled", "tier=paid", 0.5, []string{}, 1, 60.0}, []string{"key_labels_claimable_idx", "key_state_pkey", "keys_pkey"}},
		{"KeyClaimLabelled (two labels)", keyClaimLabelled, []any{"labelled", "tier=paid", 0.5, []string{"region=r3"}, 1, 60.0}, []string{"key_labels_claimable_idx", "key_labels_pkey", "key_state_pkey"}},
		{"KeyClaimLabelled (batch of 32)", keyClaimLabelled, []any{"labelled", "region=r1", 0.99, []string{}, 32, 60.0}, []string{"key_labels_claimable_idx", "key_state_pkey"}},
		{"KeyGetSecret", keyGetSecret, []any{7, id}, []string{"keys_pkey", "key_state_pkey"}},
		{"KeyEndCooldowns", keyEndCooldowns, []any{1000}, []string{"key_state_cooling_until_idx", "key_state_pkey"}},
		{"KeyCreateWithSecrets", keyCreateWithSecrets, []any{[]uuid.UUID{uuid.New()}, []string{`{"tier": "paid"}`}, [][]byte{[]byte("x")}, [][]byte{[]byte("d")}, []string{"k1"}, []string{"abcd"}, "labelled", 3600.0, "new", [][]byte{[]byte("d"), []byte("e")}, []uuid.UUID{id}, []string{"tier=paid"}}, []string{"keys_pool_secret_digest_idx"}},
		// Imports, names, cooldowns after a lease, policies.
		{"KeyFindExisting", keyFindExisting, []any{[]int32{0, 0, 1}, [][]byte{[]byte("d"), []byte("e"), []byte("f")}, []int32{0, 1}, []string{"k1", "k2"}, "labelled"}, []string{"keys_pool_secret_digest_idx", "keys_pool_name_idx"}},
		{"KeyDeleteExpiredByID", keyDeleteExpiredByID, []any{[]uuid.UUID{id, uuid.New()}}, []string{"key_state_pkey", "keys_pkey"}},
		{"KeyGetByName", keyGetByName, []any{"labelled", "k1"}, []string{"keys_pool_name_idx", "key_state_pkey"}},
		{"KeyCooldownAfterLease", keyCooldownAfterLease, []any{id, 30.0, 7}, []string{"key_events_key_id_at_idx", "key_state_pkey", "keys_pkey"}},
		{"KeyRebaseLives", keyRebaseLives, []any{"other", uuid.Nil, 1000, 3600.0}, []string{"keys_pool_id_idx", "keys_pkey"}},
		{"KeyDeletePoolPage", keyDeletePoolPage, []any{"other", 1000}, []string{"keys_pool_id_idx", "key_state_pkey", "keys_pkey"}},
		{"PoolGet", poolGet, []any{"default"}, nil},
		{"PoolLock", poolLock, []any{"default"}, nil},
		{"PoolPut", poolPut, []any{"default", nil, true, nil, nil, false, nil}, nil},
		{"PoolCreateIfAbsent", poolCreateIfAbsent, []any{"default", nil}, nil},
		{"PoolDelete", poolDelete, []any{"default"}, []string{"keys_pool_id_idx"}},
		{"PoolHasKeys", poolHasKeys, []any{"default"}, []string{"keys_pool_id_idx"}},
		{"KeySecretsSealedUnder", keySecretsSealedUnder, []any{"old", 500}, []string{"keys_secret_key_id_idx"}},
		{"KeySecretsRemainUnder", keySecretsRemainUnder, []any{"old"}, []string{"keys_secret_key_id_idx"}},
		{"KeySecretsReseal", keySecretsReseal, []any{"new", []uuid.UUID{id, uuid.New()}, "old", [][]byte{[]byte("x"), []byte("y")}, [][]byte{[]byte("d"), []byte("e")}}, []string{"keys_pkey|keys_secret_key_id_idx"}},
		{"KeyDelete", keyDelete, []any{id}, []string{"key_state_pkey", "keys_pkey"}},
		{"KeyReleaseEndedLeases", keyReleaseEndedLeases, []any{nil, 1000}, []string{"key_state_lease_expires_at_idx", "key_state_pkey"}},
		{"KeyReleaseEndedLeases (from a moment ago)", keyReleaseEndedLeases, []any{sqlExpr("now() - interval '5 seconds'"), 1000}, []string{"key_state_lease_expires_at_idx", "key_state_pkey"}},
		{"KeyDeleteExpired", keyDeleteExpired, []any{1000}, []string{"keys_expires_at_idx", "key_state_pkey", "keys_pkey"}},
		// Idempotent claims: the lookup, the lock and the record of a first
		// claim, and the background job's cleanup.
		{"ClaimRequestGet", claimRequestGet, []any{"default", "claim-7"}, []string{"claim_requests_pkey", "key_state_pkey", "keys_pkey"}},
		{"ClaimRequestLock", claimRequestLock, []any{"default", "claim-7"}, nil},
		{"ClaimRequestRecord", claimRequestRecord, []any{"default", "claim-7", id, 7, sqlExpr("now() + interval '1 minute'")}, []string{"claim_requests_pkey"}},
		{"ClaimRequestDeleteExpired", claimRequestDeleteExpired, []any{1000}, []string{"claim_requests_expires_at_idx"}},
		{"PoolCountsGet", poolCountsGet, []any{"default"}, []string{"pool_count_changes_pool_xid_idx"}},
		{"PoolCountsKnown", poolCountsKnown, []any{"default"}, []string{"pool_count_changes_pool_xid_idx"}},
		{"PoolCountsFold", poolCountsFold, []any{1}, []string{"pool_count_changes_pool_xid_idx"}},
		{"KeyCountExpiring", keyCountExpiring, []any{60.0}, []string{"keys_expires_at_idx"}},
		{"KeyListPage", keyListPage, []any{"default", uuid.Nil, 51}, []string{"keys_pool_id_idx"}},
		{"KeyListPage (later page)", keyListPage, []any{"other", id, 51}, []string{"keys_pool_id_idx"}},
		// Waiting clients: registrations by primary key, one poll of many
		// pools one step per pool on the free keys' index, and the job's
		// batches of expired registrations through their expiry.
		{"PoolWaitersRegister", poolWaitersRegister, []any{"pool-1", "replica-1", 120.0, 7}, []string{"pool_waiters_pkey"}},
		{"PoolWaitersUnregister", poolWaitersUnregister, []any{"pool-1", "replica-1", 7}, []string{"pool_waiters_pkey"}},
		{"PoolWaitersFreePools", poolWaitersFreePools, []any{[]string{"default", "other", "made-up"}}, []string{"key_state_claimable_position_idx"}},
		{"PoolWaitersFreePools (1,000 pools)", poolWaitersFreePools, []any{manyPools}, []string{"key_state_claimable_position_idx"}},
		{"PoolWaitersDeleteExpired", poolWaitersDeleteExpired, []any{1000}, []string{"pool_waiters_expires_at_idx", "pool_waiters_pkey"}},
		{"KeyEventsDeleteOlderThan", keyEventsDeleteOlderThan, []any{nil, 30 * 86400.0, 1000}, []string{"key_events_at_idx"}},
		// Reports: every cell an index range on time (and pool), every lease
		// end one step along the key's events.
		{"KeyLeasesList", keyLeasesList, []any{dayAgo, now, "history-1", 1000}, []string{historyRange, "key_events_key_id_at_idx"}},
		{"KeyLeasesList (every pool)", keyLeasesList, []any{dayAgo, now, nil, 1000}, []string{historyRange, "key_events_key_id_at_idx"}},
		{"LeaseActivityHourlyList", leaseActivityHourlyList, []any{dayAgo, now, "history-1"}, []string{historyRange}},
		{"LeaseActivityHourlyList (every pool, 31 days)", leaseActivityHourlyList, []any{monthAgo, now, nil}, []string{historyRange}},
		{"LeaseDurationsHourlyList", leaseDurationsHourlyList, []any{dayAgo, now, "history-1"}, []string{historyRange, "key_events_key_id_at_idx"}},
		{"KeyActivityHourlyList", keyActivityHourlyList, []any{dayAgo, now, "history-1"}, []string{historyRange}},
		{"KeyCooldownsHourlyList", keyCooldownsHourlyList, []any{dayAgo, now, "history-1"}, []string{historyRange}},
		{"KeyCooldownsHourlyList (every pool, 31 days)", keyCooldownsHourlyList, []any{monthAgo, now, nil}, []string{historyRange}},
		{"PoolUtilisationList", poolUtilisationList, []any{dayAgo, now, "history-1"}, []string{historyRange}},
		{"PoolUtilisationList (every pool, 31 days)", poolUtilisationList, []any{monthAgo, now, nil}, []string{historyRange}},
		// The dashboard: the last hour, by minute and by lease duration.
		{"KeyEventsPerMinute", keyEventsPerMinute, []any{60, "history-1"}, []string{historyRange}},
		{"KeyEventsPerMinute (every pool)", keyEventsPerMinute, []any{60, nil}, []string{historyRange}},
		{"KeyLeasesDurationHistogram", keyLeasesDurationHistogram, []any{durationBounds, 60, "history-1"}, []string{historyRange, "key_events_key_id_at_idx"}},
		{"KeyLeasesDurationHistogram (every pool)", keyLeasesDurationHistogram, []any{durationBounds, 60, nil}, []string{historyRange, "key_events_key_id_at_idx"}},
	}
	var doc strings.Builder
	doc.WriteString("# Query plans\n\nPlans of every statement the service runs, on a database of 60,000 keys in two pools\n" +
		"with half of one pool held, and 30,000 labelled keys in a third pool (a third held, a tenth with secrets,\n" +
		"some cooling down). Written by `UPDATE_PLANS=1 go test ./db/dbsqlc -run TestQueryPlansUseIndexes`;\n" +
		"the test fails if any of them scans a table instead of using an index.\n")
	seqScan := regexp.MustCompile(`Seq Scan on (key_labels|keys|key_state|key_events|pool_count_changes|pool_waiters|claim_requests)\b`)
	for i, st := range statements {
		name := fmt.Sprintf("plan_%d", i)
		_, err := conn.Exec(ctx, "PREPARE "+name+" AS "+st.sql)
		require.NoError(t, err, st.name)
		literals := make([]string, len(st.args))
		for j, arg := range st.args {
			literals[j] = literal(arg)
		}
		explain := "EXPLAIN (COSTS OFF) EXECUTE " + name
		if len(literals) > 0 {
			explain += "(" + strings.Join(literals, ", ") + ")"
		}
		for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
			_, err = conn.Exec(ctx, "SET plan_cache_mode = "+mode)
			require.NoError(t, err)
			plan := explainText(t, conn, explain)
			require.NotRegexp(t, seqScan, plan, "%s (%s) scans a table:\n%s", st.name, mode, plan)
			for _, index := range st.index {
				require.Regexp(t, index, plan, "%s (%s) does not use %s:\n%s", st.name, mode, index, plan)
			}
			if mode == "force_custom_plan" {
				fmt.Fprintf(&doc, "\n## %s\n\n```\n%s```\n", st.name, plan)
			}
		}
	}
	if write {
		require.NoError(t, os.WriteFile("../../docs/query-plans.md", []byte(doc.String()), 0o644))
	}
}

// Arguments of the report statements, and what their plans must contain: a
// range scan on the history's time, by time alone or by pool and time.
const (
	now      sqlExpr = "now()"
	dayAgo   sqlExpr = "now() - interval '1 day'"
	monthAgo sqlExpr = "now() - interval '31 days'"
	// durationBounds are lease duration buckets, in seconds.
	durationBounds sqlExpr = "ARRAY[1, 10, 60, 300]::float8[]"
	historyRange           = `(Index (Only )?Scan using|Bitmap Index Scan on) key_events_(pool_)?at_idx( on key_events \w+)?\n\s+Index Cond: \(.*at >=`
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
