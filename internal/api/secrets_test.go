package api_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/reports"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

// fetchRaw gets a page that need not be JSON (the dashboard, metrics).
func fetchRaw(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(raw))
	return string(raw)
}

// tablesContaining lists the tables of the database with a row whose text
// (every column cast to text; bytea as hex) holds the needle, in plain or
// hex form.
func tablesContaining(t *testing.T, ctx context.Context, conn *pgx.Conn, needle string) []string {
	t.Helper()
	rows, err := conn.Query(ctx, `SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables
		WHERE schemaname NOT IN ('pg_catalog', 'information_schema')`)
	require.NoError(t, err)
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Subset(t, tables, []string{"public.keys", "public.key_state", "public.key_labels", "public.key_events", "public.claim_requests"},
		"every table of the schema is searched")
	hexNeedle := hex.EncodeToString([]byte(needle))
	var found []string
	for _, table := range tables {
		var n int
		require.NoError(t, conn.QueryRow(ctx,
			"SELECT count(*) FROM "+table+" AS t WHERE strpos(t::text, $1) > 0 OR strpos(t::text, $2) > 0",
			needle, hexNeedle).Scan(&n))
		if n > 0 {
			found = append(found, table)
		}
	}
	return found
}

// A whole life of keys with secrets, with the server's log captured at
// debug level: the plaintext is found afterwards in no table, no log line
// and no answer but those allowed to carry it (the claims and GET
// /keys/{id} with the lease's token).
func TestSecretAppearsOnlyWhereAllowed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := testdb.New(t)
	conn, err := pgx.Connect(ctx, dbURL)
	require.NoError(t, err)
	defer conn.Close(ctx)

	random := make([]byte, 12)
	_, err = rand.Read(random)
	require.NoError(t, err)
	plaintext := "sk-live-" + hex.EncodeToString(random)

	// The search must be able to fail: a planted copy is found.
	planted := plaintext + "-planted"
	_, err = conn.Exec(ctx, "INSERT INTO key_events (key_id, pool, event) VALUES (gen_random_uuid(), $1, 'created')", planted)
	require.NoError(t, err)
	require.Equal(t, []string{"public.key_events"}, tablesContaining(t, ctx, conn, planted))
	_, err = conn.Exec(ctx, "DELETE FROM key_events WHERE pool = $1", planted)
	require.NoError(t, err)
	// Expiring in an hour, so that no background job would delete it.
	_, err = conn.Exec(ctx, "INSERT INTO claim_requests (pool, idempotency_key, key_id, lease_token, expires_at) VALUES ('p', $1, gen_random_uuid(), 1, now() + interval '1 hour')", planted)
	require.NoError(t, err)
	require.Equal(t, []string{"public.claim_requests"}, tablesContaining(t, ctx, conn, planted))
	_, err = conn.Exec(ctx, "DELETE FROM claim_requests WHERE idempotency_key = $1", planted)
	require.NoError(t, err)
	// The server starts once the plants are gone: its background job would
	// fold the planted event into the history's rollups.
	logs := &syncBuffer{}
	s := newServer(t, dbURL, options{secrets: testKeyring(t), logs: logs, sweep: 20 * time.Millisecond})

	var allowed, forbidden []string
	answer := func(ok bool, r reply) reply {
		text := r.raw + fmt.Sprint(r.header)
		if ok {
			allowed = append(allowed, text)
		} else {
			forbidden = append(forbidden, text)
		}
		return r
	}

	created := answer(false, do(t, "POST", s.url+"/keys",
		`{"pool": "sec", "keys": [{"secret": "`+plaintext+`", "labels": {"tier": "paid"}}, {"labels": {"tier": "free"}}]}`))
	require.Equal(t, http.StatusCreated, created.status, created.raw)
	answer(false, do(t, "POST", s.url+"/keys", `{"pool": "sec", "keys": [{"secret": "`+plaintext+`"}]}`))
	answer(false, do(t, "HEAD", s.url+"/keys?pool=sec", ""))

	claim := answer(true, do(t, "GET", s.url+"/keys?pool=sec&label=tier=paid", "", "Idempotency-Key", "scenario"))
	require.Equal(t, http.StatusOK, claim.status, claim.raw)
	require.Equal(t, plaintext, claim.str("secret"), "the claim hands the secret out")
	id, token := claim.str("keyId"), claim.str("leaseToken")
	replay := answer(true, do(t, "GET", s.url+"/keys?pool=sec&label=tier=paid", "", "Idempotency-Key", "scenario"))
	require.Equal(t, plaintext, replay.str("secret"), "the repeat of the claim answers what it answered")

	plain := answer(false, do(t, "GET", s.url+"/keys/"+id, ""))
	require.Equal(t, http.StatusOK, plain.status)
	require.Nil(t, plain.body["secret"])
	withToken := answer(true, do(t, "GET", s.url+"/keys/"+id+"?lease="+token, ""))
	require.Equal(t, plaintext, withToken.str("secret"))
	withHeader := answer(true, do(t, "GET", s.url+"/keys/"+id, "", "If-Match", `"`+token+`"`))
	require.Equal(t, plaintext, withHeader.str("secret"))
	requireProblem(t, answer(false, do(t, "GET", s.url+"/keys/"+id+"?lease=999999", "")), http.StatusConflict, "lease_mismatch")
	answer(false, do(t, "HEAD", s.url+"/keys/"+id, ""))
	answer(false, do(t, "PUT", s.url+"/keys/"+id+"/keepalive?lease="+token, ""))
	answer(false, do(t, "PUT", s.url+"/keepalive/"+id, ""))

	// Released with a cooldown: no claim takes it until the background job
	// has ended the cooldown.
	cooled := answer(false, do(t, "PUT", s.url+"/keys/"+id+"?lease="+token+"&cooldown=300ms", ""))
	require.Equal(t, http.StatusOK, cooled.status, cooled.raw)
	require.NotNil(t, cooled.body["coolingUntil"])
	requireProblem(t, answer(false, do(t, "GET", s.url+"/keys/"+id+"?lease="+token, "")), http.StatusConflict, "lease_mismatch")
	requireProblem(t, answer(false, do(t, "GET", s.url+"/keys?pool=sec&label=tier=paid", "")), http.StatusNotFound, "no_free_key")
	again := answer(true, do(t, "GET", s.url+"/keys?pool=sec&label=tier=paid&wait=5s", ""))
	require.Equal(t, http.StatusOK, again.status, again.raw)
	require.Equal(t, id, again.str("keyId"))
	require.Equal(t, plaintext, again.str("secret"))
	answer(false, do(t, "PUT", s.url+"/keys/"+id, "", "If-Match", `"`+again.str("leaseToken")+`"`))

	// Everything an operator reads.
	answer(false, do(t, "GET", s.url+"/stats", ""))
	answer(false, do(t, "GET", s.url+"/reports", ""))
	for _, name := range reports.Names() {
		r := answer(false, do(t, "GET", s.url+"/reports/"+name+"?pool=sec", ""))
		require.Equal(t, http.StatusOK, r.status, r.raw)
	}
	cooldowns := answer(false, do(t, "GET", s.url+"/reports/key-cooldowns?pool=sec", ""))
	require.Contains(t, cooldowns.raw, id, "the cooled key is in the report")
	answer(false, do(t, "GET", s.url+"/pools/sec/keys", ""))
	answer(false, do(t, "GET", s.url+"/activity?pool=sec", ""))
	answer(false, do(t, "GET", s.url+"/activity/lease-durations?pool=sec", ""))
	forbidden = append(forbidden, fetchRaw(t, s.url+"/metrics"), fetchRaw(t, s.url+"/"))

	// While the key lives its secret is stored, sealed only.
	require.Empty(t, tablesContaining(t, ctx, conn, plaintext))
	var sealed int
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM keys WHERE id = $1 AND secret_ciphertext IS NOT NULL", id).Scan(&sealed))
	require.Equal(t, 1, sealed)

	deleted := answer(false, do(t, "DELETE", s.url+"/keys/"+id, ""))
	require.Equal(t, http.StatusOK, deleted.status)
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM keys WHERE secret_ciphertext IS NOT NULL").Scan(&sealed))
	require.Zero(t, sealed, "deleting the key erased its sealed secret")

	require.Empty(t, tablesContaining(t, ctx, conn, plaintext))
	for _, text := range forbidden {
		require.NotContains(t, text, plaintext)
	}
	found := 0
	for _, text := range allowed {
		if strings.Contains(text, plaintext) {
			found++
		}
	}
	require.Equal(t, len(allowed), found, "every allowed answer carried the secret")
	log := logs.String()
	require.NotEmpty(t, log)
	require.Contains(t, log, "level=DEBUG", "the log was captured at debug level")
	require.NotContains(t, log, plaintext)
	require.NotContains(t, log, hex.EncodeToString([]byte(plaintext)))
}
