package api

import (
	"net/http"
	"time"
)

// expiringWindow is how far ahead GET /stats counts keys about to expire.
const expiringWindow = time.Minute

// maxExpiring is the most keys about to expire GET /stats counts: the
// dashboard polls it every two seconds, and a large pool of a short key
// life that nobody keeps alive has every key about to expire.
const maxExpiring = 1000

// poolStats are the live counts of one pool, or of all of them: keys, and
// their seats, free and held. Blocked counts the held seats under its
// published name ("Words" in docs/api.md).
type poolStats struct {
	Pool                 string `json:"pool,omitempty"`
	Total                int64  `json:"total"`
	Seats                int64  `json:"seats"`
	Free                 int64  `json:"free"`
	Blocked              int64  `json:"blocked"`
	ExpiringWithinMinute int64  `json:"expiringWithinMinute"`
}

// stats answers the live counts per pool from the counters kept by the
// database, and the keys that expire within a minute unless kept alive
// from one index range on their expiry, up to maxExpiring of them. Keys
// whose life has just ended count in total until the background job
// removes them.
func (a *API) stats(w http.ResponseWriter, r *http.Request) error {
	counts, err := a.store.CountPools(r.Context())
	if err != nil {
		return err
	}
	expiring, more, err := a.store.CountExpiring(r.Context(), expiringWindow, maxExpiring)
	if err != nil {
		return err
	}
	body := struct {
		Pools []poolStats `json:"pools"`
		Total poolStats   `json:"total"`
		// ExpiringCapped tells that more keys expire within a minute than
		// were counted, so that every expiringWithinMinute is a lower bound.
		ExpiringCapped bool `json:"expiringWithinMinuteCapped"`
	}{Pools: make([]poolStats, len(counts)), ExpiringCapped: more}
	for i, c := range counts {
		p := poolStats{Pool: c.Pool, Total: c.Keys, Seats: c.Seats, Free: c.Free(), Blocked: c.Held, ExpiringWithinMinute: expiring[c.Pool]}
		body.Pools[i] = p
		body.Total.Total += p.Total
		body.Total.Seats += p.Seats
		body.Total.Free += p.Free
		body.Total.Blocked += p.Blocked
		body.Total.ExpiringWithinMinute += p.ExpiringWithinMinute
	}
	writeJSON(w, http.StatusOK, body)
	return nil
}
