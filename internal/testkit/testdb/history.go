package testdb

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
)

// Event is one history row of a made-up history, At after a base time.
type Event struct {
	At    time.Duration
	Key   int
	Event string
	// Token is the lease token; zero for none.
	Token int64
}

// KnownHistory is a pool's history whose reports are worked out by hand in
// the report tests and shown in docs/reports.md. Its base is the start of
// a UTC hour; it spans three hours (H0 to H2), and at its end every key is
// gone.
//
//	H0: keys 1, 2, 3 created. Lease 1 on key 1 from :10 to :30, released
//	    after one keep-alive. Lease 2 on key 2 from :15 to :55, kept alive
//	    twice, then ended by the job (its holder vanished). A keep-alive on
//	    free key 3 at :20. Lease 3 on key 3 from :25 to :35, released.
//	H1: lease 4 on key 1 from 1:30, ended by deleting key 1 at 1:40. Lease 5
//	    on key 3 from 1:50.
//	H2: key 3 expires at 2:10, still held under lease 5; key 2 expires at 2:30.
var KnownHistory = []Event{
	{0, 1, "created", 0},
	{0, 2, "created", 0},
	{0, 3, "created", 0},
	{10 * time.Minute, 1, "assigned", 1},
	{15 * time.Minute, 2, "assigned", 2},
	{20 * time.Minute, 1, "kept_alive", 1},
	{20 * time.Minute, 3, "kept_alive", 0},
	{25 * time.Minute, 2, "kept_alive", 2},
	{25 * time.Minute, 3, "assigned", 3},
	{30 * time.Minute, 1, "released", 1},
	{35 * time.Minute, 2, "kept_alive", 2},
	{35 * time.Minute, 3, "released", 3},
	{55 * time.Minute, 2, "lease_expired", 2},
	{90 * time.Minute, 1, "assigned", 4},
	{100 * time.Minute, 1, "deleted", 4},
	{110 * time.Minute, 3, "assigned", 5},
	{130 * time.Minute, 3, "expired", 5},
	{150 * time.Minute, 2, "expired", 0},
}

// KeyID is the id of key n of a pool in a made-up history.
func KeyID(pool string, n int) uuid.UUID {
	return uuid.NewSHA1(uuid.NameSpaceOID, []byte(pool+"/"+strconv.Itoa(n)))
}

// Execer runs a statement: a pool, a connection or a transaction.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// InsertHistory writes events of the pool at base plus their At, with lease
// tokens offset by tokenBase so that several pools' tokens stay distinct.
// It writes history rows only: no keys, no counts. Events written with
// earlier times than the background job may have folded already, it then
// empties the rollups of the history (key_event_rollups_reset), as anyone
// who writes history by hand does, and the job folds it all again.
func InsertHistory(t testing.TB, db Execer, pool string, base time.Time, tokenBase int64, events []Event) {
	t.Helper()
	for _, e := range events {
		var token *int64
		if e.Token != 0 {
			v := tokenBase + e.Token
			token = &v
		}
		_, err := db.Exec(context.Background(),
			"INSERT INTO key_events (at, key_id, pool, event, lease_token) VALUES ($1, $2, $3, $4, $5)",
			base.Add(e.At), KeyID(pool, e.Key), pool, e.Event, token)
		if err != nil {
			t.Fatalf("insert history: %v", err)
		}
	}
	if _, err := db.Exec(context.Background(), "SELECT key_event_rollups_reset()"); err != nil {
		t.Fatalf("reset the rollups of the history: %v", err)
	}
}

// HourAgo returns the start of the UTC hour that began hours hours before
// the current one.
func HourAgo(hours int) time.Time {
	return time.Now().UTC().Truncate(time.Hour).Add(-time.Duration(hours) * time.Hour)
}
