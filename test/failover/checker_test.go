package failover

import (
	"cmp"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"
)

// event is one row of the history (key_events) as the checker reads it.
type event struct {
	ID    int64
	At    time.Time
	Key   string
	Seat  int
	Event string
	// Token is 0 for an event without a lease token.
	Token int64
}

// The faults a run injects.
const (
	faultKill       = "kill -9 of the primary's postmaster"
	faultSwitchover = "switchover"
	// faultCut drops every packet between replica 0 and the primary for
	// cutFor, then lets them through again.
	faultCut = "network cut between a replica and the primary"
	// faultSlots takes every connection slot of the primary for cutFor
	// and ends the service's sessions meanwhile.
	faultSlots = "the primary's connection slots taken"
)

// cutFor is how long a network cut (or the slots' starvation) lasts: longer than the service's
// DB_TIMEOUT, so that its requests time out on the cut connections.
const cutFor = 10 * time.Second

// fault is one fault injected during a run, and what the run measured of
// it.
type fault struct {
	Kind string
	// At is when it was injected.
	At time.Time
	// OldPrimary and NewPrimary name the nodes; equal when the node came
	// back as primary without a failover.
	OldPrimary, NewPrimary string
	// Writable is when the new primary first committed a write after At,
	// as the probe saw it (for a network cut: when the cut ended);
	// FirstClaim is when the first claim answered 200 after that was
	// answered, by Server when it is set (the replica that was cut off),
	// by any replica otherwise.
	Writable, FirstClaim time.Time
	Server               string
	// Stable is when the formation had a primary and a secondary again.
	Stable time.Time
}

// outagePart names HAPart: for a network cut, the cut's own length.
func (f fault) outagePart() string {
	switch f.Kind {
	case faultCut:
		return "network cut"
	case faultSlots:
		return "slots taken"
	}
	return "HA manager"
}

// HAPart is the time from the fault until the new primary committed a
// write: the HA manager's part of the outage (or the network cut's).
func (f fault) HAPart() time.Duration { return f.Writable.Sub(f.At) }

// ServicePart is the time from then until the first claim was answered:
// the service's own part.
func (f fault) ServicePart() time.Duration { return f.FirstClaim.Sub(f.Writable) }

// Window is the whole outage as the clients saw it.
func (f fault) Window() time.Duration { return f.FirstClaim.Sub(f.At) }

// finding is one breach of a guarantee, with the fault it followed (-1
// before the first).
type finding struct {
	Fault  int
	Detail string
}

// report is what the checker found in a run.
type report struct {
	// Breaches of "never two holders of a seat at once".
	DoubleHolders []finding
	// Lease tokens of a key (or seat, in the history) that did not grow.
	TokenOrder []finding
	// Acknowledged operations missing from the history afterwards.
	LostClaims, LostReleases, LostKeepAlives []finding
	// Leases taken away from their holders: a 409 on a keep-alive or a
	// release that no earlier try of it explains.
	LeasesTakenAway []finding
	// Answers the clients must never see during a failover: a 5xx other
	// than 503, a 503 without Retry-After, no answer at all, anything
	// else unexpected.
	BadAnswers []finding

	// Counts, for the figures.
	Claims, Releases, KeepAlives int // acknowledged
	Unavailable                  int // 503 answers
	// ReleasesRetriedAfterCommit: releases answered 409 whose earlier try,
	// answered 503, had in fact committed (the history has the release).
	ReleasesRetriedAfterCommit int
	// LeasesRunOut: leases the background job ended; the clients' leases
	// are long enough that none should.
	LeasesRunOut int
}

// perFault counts the findings of each kind by the fault they followed
// (index -1: before the first).
type perFault struct {
	DoubleHolders, TokenOrder, LostClaims, LostReleases, LostKeepAlives, LeasesTakenAway int
}

// lost is every acknowledged operation missing afterwards.
func (p perFault) lost() int { return p.LostClaims + p.LostReleases + p.LostKeepAlives }

// byFault sums the findings up per fault.
func (r report) byFault(faults int) []perFault {
	out := make([]perFault, faults)
	count := func(fs []finding, field func(*perFault) *int) {
		for _, f := range fs {
			if f.Fault >= 0 && f.Fault < faults {
				*field(&out[f.Fault])++
			}
		}
	}
	count(r.DoubleHolders, func(p *perFault) *int { return &p.DoubleHolders })
	count(r.TokenOrder, func(p *perFault) *int { return &p.TokenOrder })
	count(r.LostClaims, func(p *perFault) *int { return &p.LostClaims })
	count(r.LostReleases, func(p *perFault) *int { return &p.LostReleases })
	count(r.LostKeepAlives, func(p *perFault) *int { return &p.LostKeepAlives })
	count(r.LeasesTakenAway, func(p *perFault) *int { return &p.LeasesTakenAway })
	return out
}

// safetyFindings are the breaches that synchronous replication must
// prevent; asynchronous replication may show them.
func (r report) safetyFindings() []string {
	var out []string
	add := func(what string, fs []finding) {
		for i, f := range fs {
			if i == 10 {
				out = append(out, fmt.Sprintf("%s: … %d more", what, len(fs)-10))
				break
			}
			out = append(out, fmt.Sprintf("%s (after fault %d): %s", what, f.Fault+1, f.Detail))
		}
	}
	add("two holders at once", r.DoubleHolders)
	add("lease tokens out of order", r.TokenOrder)
	add("acknowledged claim lost", r.LostClaims)
	add("acknowledged release lost", r.LostReleases)
	add("acknowledged keep-alive lost", r.LostKeepAlives)
	add("lease taken away from its holder", r.LeasesTakenAway)
	return out
}

// answerFindings are the breaches of "503 with Retry-After, nothing else".
func (r report) answerFindings() []string {
	var out []string
	for i, f := range r.BadAnswers {
		if i == 20 {
			out = append(out, fmt.Sprintf("… %d more", len(r.BadAnswers)-20))
			break
		}
		out = append(out, fmt.Sprintf("after fault %d: %s", f.Fault+1, f.Detail))
	}
	return out
}

// faultBefore returns the index of the last fault injected before t, -1 if
// none was.
func faultBefore(faults []fault, t time.Time) int {
	i := -1
	for j, f := range faults {
		if !f.At.After(t) {
			i = j
		}
	}
	return i
}

// faultAfter returns the index of the fault an operation acknowledged at
// t and then lost was lost to: the one under way at t (from its injection
// until the formation was stable again: the old primary may acknowledge
// writes after it restarts), else the first one injected after t. -1 if
// none.
func faultAfter(faults []fault, t time.Time) int {
	for j, f := range faults {
		if !t.Before(f.At) && (f.Stable.IsZero() || !t.After(f.Stable)) {
			return j
		}
	}
	for j, f := range faults {
		if f.At.After(t) {
			return j
		}
	}
	return -1
}

type leaseKey struct {
	key   string
	token int64
}

type clientLease struct {
	client, lease int
}

// check holds the clients' log and the history to the guarantees.
func check(attempts []attempt, history []event, faults []fault) report {
	var r report
	slices.SortStableFunc(attempts, func(a, b attempt) int { return a.Sent.Compare(b.Sent) })

	// What the history holds, per lease.
	assigned := map[leaseKey]bool{}
	released := map[leaseKey]bool{}
	ranOut := map[leaseKey]bool{}
	keptAlive := map[leaseKey]int{}
	type seatKey struct {
		key  string
		seat int
	}
	perSeat := map[seatKey][]event{}
	for _, e := range history {
		lk := leaseKey{e.Key, e.Token}
		switch e.Event {
		case "assigned":
			assigned[lk] = true
			perSeat[seatKey{e.Key, e.Seat}] = append(perSeat[seatKey{e.Key, e.Seat}], e)
		case "released":
			released[lk] = true
		case "lease_expired":
			ranOut[lk] = true
			r.LeasesRunOut++
		case "kept_alive":
			if e.Token != 0 {
				keptAlive[lk]++
			}
		}
	}
	// History: per seat, each lease's token above the one before.
	for sk, evs := range perSeat {
		slices.SortFunc(evs, func(a, b event) int {
			return cmp.Or(a.At.Compare(b.At), cmp.Compare(a.ID, b.ID))
		})
		for i := 1; i < len(evs); i++ {
			if evs[i].Token <= evs[i-1].Token {
				r.TokenOrder = append(r.TokenOrder, finding{faultBefore(faults, evs[i].At),
					fmt.Sprintf("history: key %s seat %d assigned lease %d at %s after lease %d at %s",
						sk.key, sk.seat, evs[i].Token, evs[i].At.Format(time.RFC3339Nano), evs[i-1].Token, evs[i-1].At.Format(time.RFC3339Nano))})
			}
		}
	}

	// The clients' log, per lease of a client.
	type held struct {
		key        string
		token      int64
		seats      int
		client     int
		start, end time.Time
	}
	var leases []*held
	byLease := map[clientLease]*held{}
	failedTries := map[clientLease]map[string]bool{} // ops with a try answered 503 or not at all
	acknowledgedKeepAlives := map[leaseKey]int{}
	for _, a := range attempts {
		cl := clientLease{a.Client, a.Lease}
		f := faultBefore(faults, a.Sent)
		what := fmt.Sprintf("client %d %s of key %s lease %d sent %s to %s, answered %s", a.Client, a.Op, a.Key, a.Token,
			a.Sent.Format("15:04:05.000"), a.Server, a.Answered.Format("15:04:05.000"))
		if retryable(a) {
			if failedTries[cl] == nil {
				failedTries[cl] = map[string]bool{}
			}
			failedTries[cl][a.Op] = true
		}
		if h := byLease[cl]; h != nil && a.Op == opRelease && h.end.IsZero() {
			// The client lets go of the key as it sends the release,
			// whatever the answer.
			h.end = a.Sent
		}
		switch {
		case a.Status == 0:
			r.BadAnswers = append(r.BadAnswers, finding{f, what + ": no answer: " + a.Err})
			continue
		case a.Status == http.StatusServiceUnavailable:
			r.Unavailable++
			if a.RetryAfter == "" {
				r.BadAnswers = append(r.BadAnswers, finding{f, what + ": 503 without Retry-After"})
			}
			continue
		case a.Status >= 500:
			r.BadAnswers = append(r.BadAnswers, finding{f, fmt.Sprintf("%s: %d %s %s", what, a.Status, a.Code, a.Err)})
			continue
		case a.Err != "":
			r.BadAnswers = append(r.BadAnswers, finding{f, fmt.Sprintf("%s: %d: %s", what, a.Status, a.Err)})
			continue
		}
		switch a.Op {
		case opClaim:
			switch {
			case a.Status == http.StatusOK:
				r.Claims++
				h := &held{key: a.Key, token: a.Token, seats: max(a.Seats, 1), client: a.Client, start: a.Answered}
				leases = append(leases, h)
				byLease[cl] = h
				if !assigned[leaseKey{a.Key, a.Token}] {
					r.LostClaims = append(r.LostClaims, finding{faultAfter(faults, a.Answered), what + ": no assigned event"})
				}
			case a.Status == http.StatusNotFound && a.Code == "no_free_key":
			default:
				r.BadAnswers = append(r.BadAnswers, finding{f, fmt.Sprintf("%s: %d %s", what, a.Status, a.Code)})
			}
		case opKeepAlive, opRelease:
			h := byLease[cl]
			lk := leaseKey{a.Key, a.Token}
			switch {
			case a.Status == http.StatusOK && a.Op == opKeepAlive:
				r.KeepAlives++
				acknowledgedKeepAlives[lk]++
			case a.Status == http.StatusOK:
				r.Releases++
				if !released[lk] && !ranOut[lk] {
					r.LostReleases = append(r.LostReleases, finding{faultAfter(faults, a.Answered), what + ": no released event"})
				}
			case a.Status == http.StatusConflict && a.Op == opRelease && failedTries[cl][opRelease] && released[lk]:
				// An earlier try of this release committed although its
				// answer was a 503 or never came: the retry finds the
				// lease ended. The history shows the release.
				r.ReleasesRetriedAfterCommit++
			case a.Status == http.StatusConflict:
				if h != nil && h.end.IsZero() {
					// The client learns that its lease is gone.
					h.end = a.Answered
				}
				r.LeasesTakenAway = append(r.LeasesTakenAway, finding{f, fmt.Sprintf("%s: 409 %s", what, a.Code)})
			default:
				r.BadAnswers = append(r.BadAnswers, finding{f, fmt.Sprintf("%s: %d %s", what, a.Status, a.Code)})
			}
		}
	}
	for lk, n := range acknowledgedKeepAlives {
		if keptAlive[lk] < n {
			// The earliest acknowledged one: after a failover that lost
			// claims, the new primary hands out the lost leases' tokens
			// again, and a later lease of the same token is no loss.
			var at time.Time
			for _, a := range attempts {
				if a.Op == opKeepAlive && a.Key == lk.key && a.Token == lk.token && a.Status == http.StatusOK {
					at = a.Answered
					break
				}
			}
			r.LostKeepAlives = append(r.LostKeepAlives, finding{faultAfter(faults, at),
				fmt.Sprintf("key %s lease %d: %d keep-alives acknowledged, %d in the history", lk.key, lk.token, n, keptAlive[lk])})
		}
	}

	// Holders per key over time: a client holds a key from the claim's
	// answer until it sends the release (or learns the lease is gone); at
	// no moment may a key have more holders than seats.
	perKey := map[string][]*held{}
	for _, h := range leases {
		perKey[h.key] = append(perKey[h.key], h)
	}
	far := time.Now().Add(24 * time.Hour)
	for key, hs := range perKey {
		type edge struct {
			at    time.Time
			delta int
			h     *held
		}
		var edges []edge
		for _, h := range hs {
			end := h.end
			if end.IsZero() {
				end = far
			}
			edges = append(edges, edge{h.start, 1, h}, edge{end, -1, h})
		}
		// At one instant, a release goes before a claim.
		sort.SliceStable(edges, func(i, j int) bool {
			if !edges[i].at.Equal(edges[j].at) {
				return edges[i].at.Before(edges[j].at)
			}
			return edges[i].delta < edges[j].delta
		})
		holders := map[*held]bool{}
		for _, e := range edges {
			if e.delta < 0 {
				delete(holders, e.h)
				continue
			}
			holders[e.h] = true
			if len(holders) > e.h.seats {
				var who []string
				for h := range holders {
					who = append(who, fmt.Sprintf("client %d lease %d", h.client, h.token))
				}
				slices.Sort(who)
				r.DoubleHolders = append(r.DoubleHolders, finding{faultBefore(faults, e.at),
					fmt.Sprintf("key %s (%d seats) held at %s by %s", key, e.h.seats, e.at.Format("15:04:05.000"), strings.Join(who, ", "))})
			}
		}
		// Clients' view: on a key of one seat, each claim answered has a
		// token above the one answered before.
		slices.SortFunc(hs, func(a, b *held) int { return a.start.Compare(b.start) })
		for i := 1; i < len(hs); i++ {
			if hs[i].seats == 1 && hs[i].token <= hs[i-1].token {
				r.TokenOrder = append(r.TokenOrder, finding{faultBefore(faults, hs[i].start),
					fmt.Sprintf("clients: key %s answered lease %d at %s after lease %d at %s",
						key, hs[i].token, hs[i].start.Format("15:04:05.000"), hs[i-1].token, hs[i-1].start.Format("15:04:05.000"))})
			}
		}
	}
	return r
}
