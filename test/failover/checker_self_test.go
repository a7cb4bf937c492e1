package failover

import (
	"net/http"
	"slices"
	"testing"
	"time"
)

// A made-up run: two clients, key k1 of one seat and k2 of two, one fault.
// Client 0 holds k1 under lease 10, then client 1 under lease 12; client
// 1's first release try is answered 503 although it committed, and the
// retry answers 409. Both clients hold k2 at once, on its two seats.
func madeUpRun() ([]attempt, []event, []fault) {
	base := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }
	ok := func(client, lease int, op, key string, token int64, seats, sent, answered int) attempt {
		return attempt{Client: client, Lease: lease, Op: op, Key: key, Token: token, Seats: seats,
			Sent: at(sent), Answered: at(answered), Status: http.StatusOK}
	}
	attempts := []attempt{
		ok(0, 0, opClaim, "k1", 10, 1, 0, 10),
		ok(0, 0, opKeepAlive, "k1", 10, 1, 20, 30),
		ok(0, 0, opRelease, "k1", 10, 1, 40, 50),
		{Client: 1, Lease: 0, Op: opClaim, Sent: at(40), Answered: at(45), Status: http.StatusServiceUnavailable, Code: "database_unavailable", RetryAfter: "1"},
		ok(1, 0, opClaim, "k1", 12, 1, 60, 70),
		{Client: 1, Lease: 0, Op: opRelease, Key: "k1", Token: 12, Seats: 1, Sent: at(80), Answered: at(90), Status: http.StatusServiceUnavailable, Code: "database_unavailable", RetryAfter: "1"},
		{Client: 1, Lease: 0, Op: opRelease, Key: "k1", Token: 12, Seats: 1, Sent: at(100), Answered: at(110), Status: http.StatusConflict, Code: "lease_mismatch"},
		ok(0, 1, opClaim, "k2", 20, 2, 200, 210),
		ok(1, 1, opClaim, "k2", 21, 2, 205, 215),
		ok(0, 1, opRelease, "k2", 20, 2, 300, 310),
		ok(1, 1, opRelease, "k2", 21, 2, 305, 315),
	}
	history := []event{
		{1, at(5), "k1", 0, "assigned", 10},
		{2, at(25), "k1", 0, "kept_alive", 10},
		{3, at(45), "k1", 0, "released", 10},
		{4, at(65), "k1", 0, "assigned", 12},
		{5, at(85), "k1", 0, "released", 12},
		{6, at(205), "k2", 0, "assigned", 20},
		{7, at(210), "k2", 1, "assigned", 21},
		{8, at(305), "k2", 0, "released", 20},
		{9, at(310), "k2", 1, "released", 21},
	}
	faults := []fault{{Kind: "kill", At: at(42)}}
	return attempts, history, faults
}

func TestCheckerPassesACleanRun(t *testing.T) {
	attempts, history, faults := madeUpRun()
	r := check(attempts, history, faults)
	if f := append(r.safetyFindings(), r.answerFindings()...); len(f) > 0 {
		t.Fatalf("findings in a clean run: %v", f)
	}
	// A release answered 500 is a bad answer, and still the moment its
	// client let go of the key: the next holder is no second holder.
	attempts[2].Status, attempts[2].Code = http.StatusInternalServerError, "internal_error"
	r = check(attempts, drop(history, 3), faults)
	if len(r.BadAnswers) != 1 || len(r.DoubleHolders) != 0 {
		t.Errorf("a release answered 500: %d bad answers, %d double holders", len(r.BadAnswers), len(r.DoubleHolders))
	}
	attempts, history, faults = madeUpRun()
	r = check(attempts, history, faults)
	if r.Claims != 4 || r.Releases != 3 || r.KeepAlives != 1 || r.Unavailable != 2 || r.ReleasesRetriedAfterCommit != 1 {
		t.Errorf("counts: %+v", r)
	}
}

func drop(history []event, id int64) []event {
	return slices.DeleteFunc(history, func(e event) bool { return e.ID == id })
}

// Each breach the checker is there for, made in the run: it must be found.
func TestCheckerFindsEachBreach(t *testing.T) {
	cases := []struct {
		name   string
		break_ func(a []attempt, h []event) ([]attempt, []event)
		found  func(r report) int
	}{
		{"a claim missing from the history", func(a []attempt, h []event) ([]attempt, []event) { return a, drop(h, 4) },
			func(r report) int { return len(r.LostClaims) }},
		{"a release missing from the history", func(a []attempt, h []event) ([]attempt, []event) { return a, drop(h, 3) },
			func(r report) int { return len(r.LostReleases) }},
		{"a keep-alive missing from the history", func(a []attempt, h []event) ([]attempt, []event) { return a, drop(h, 2) },
			func(r report) int { return len(r.LostKeepAlives) }},
		{"a key of one seat handed out while held", func(a []attempt, h []event) ([]attempt, []event) {
			// Client 1's claim answered before client 0 let go.
			a[4].Sent, a[4].Answered = a[1].Sent, a[1].Answered.Add(time.Millisecond)
			return a, h
		}, func(r report) int { return len(r.DoubleHolders) }},
		{"a third holder of a key of two seats", func(a []attempt, h []event) ([]attempt, []event) {
			third := a[7]
			third.Client, third.Lease, third.Token = 2, 0, 22
			third.Answered = third.Answered.Add(20 * time.Millisecond)
			return append(a, third), append(h, event{10, third.Answered, "k2", 0, "assigned", 22})
		}, func(r report) int { return len(r.DoubleHolders) }},
		{"a lease token handed out again", func(a []attempt, h []event) ([]attempt, []event) {
			a[4].Token, h[3].Token, h[4].Token = 9, 9, 9
			return a, h
		}, func(r report) int { return len(r.TokenOrder) }},
		{"a 500", func(a []attempt, h []event) ([]attempt, []event) {
			a[3].Status, a[3].Code = http.StatusInternalServerError, "internal"
			return a, h
		}, func(r report) int { return len(r.BadAnswers) }},
		{"a 503 without Retry-After", func(a []attempt, h []event) ([]attempt, []event) {
			a[3].RetryAfter = ""
			return a, h
		}, func(r report) int { return len(r.BadAnswers) }},
		{"no answer", func(a []attempt, h []event) ([]attempt, []event) {
			a[3].Status, a[3].Err = 0, "connection refused"
			return a, h
		}, func(r report) int { return len(r.BadAnswers) }},
		{"a keep-alive told the lease is gone", func(a []attempt, h []event) ([]attempt, []event) {
			a[1].Status, a[1].Code = http.StatusConflict, "lease_mismatch"
			return a, drop(h, 2)
		}, func(r report) int { return len(r.LeasesTakenAway) }},
		{"a release retried after a 503 whose try had not committed", func(a []attempt, h []event) ([]attempt, []event) {
			return a, drop(h, 5)
		}, func(r report) int { return len(r.LeasesTakenAway) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			attempts, history, faults := madeUpRun()
			attempts, history = c.break_(attempts, history)
			r := check(attempts, history, faults)
			if c.found(r) == 0 {
				t.Errorf("not found: %+v", r)
			}
		})
	}
}
