package api

import (
	"net/http"
	"time"
)

const (
	// defaultActivityMinutes and maxActivityMinutes bound GET /activity.
	defaultActivityMinutes = 60
	maxActivityMinutes     = 1440
)

// minuteBody counts the history events of one minute.
type minuteBody struct {
	Minute       string `json:"minute"`
	Created      int64  `json:"created"`
	Assigned     int64  `json:"assigned"`
	Released     int64  `json:"released"`
	LeaseExpired int64  `json:"leaseExpired"`
	KeptAlive    int64  `json:"keptAlive"`
	Deleted      int64  `json:"deleted"`
	Expired      int64  `json:"expired"`
}

// activity answers the pool's events (every pool's without ?pool=) in each
// of the last minutes minutes, the current one last: one range over just
// those minutes of the history.
func (a *API) activity(w http.ResponseWriter, r *http.Request) error {
	pool, minutes, err := activityParams(r)
	if err != nil {
		return err
	}
	src, err := a.store.Reports(r.Context())
	if err != nil {
		return err
	}
	rows, err := src.ActivityPerMinute(r.Context(), pool, minutes)
	if err != nil {
		return err
	}
	body := struct {
		Pool    string `json:"pool,omitempty"`
		Minutes int    `json:"minutes"`
		From    string `json:"from"`
		To      string `json:"to"`
		freshness
		PerMinute []minuteBody `json:"perMinute"`
	}{Pool: pool, Minutes: minutes, freshness: setFreshness(w, src.Freshness()), PerMinute: make([]minuteBody, len(rows))}
	for i, row := range rows {
		body.PerMinute[i] = minuteBody{
			Minute: formatTime(row.Minute), Created: row.Created, Assigned: row.Claimed, Released: row.Released,
			LeaseExpired: row.LeaseExpired, KeptAlive: row.KeptAlive, Deleted: row.Deleted, Expired: row.Expired,
		}
	}
	if len(rows) > 0 {
		body.From = formatTime(rows[0].Minute)
		body.To = formatTime(rows[len(rows)-1].Minute.Add(time.Minute))
	}
	writeJSON(w, http.StatusOK, body)
	return nil
}

// leaseDurations answers how long the leases that started in the last
// minutes minutes lasted, counted in buckets, and how many are still held.
func (a *API) leaseDurations(w http.ResponseWriter, r *http.Request) error {
	pool, minutes, err := activityParams(r)
	if err != nil {
		return err
	}
	src, err := a.store.Reports(r.Context())
	if err != nil {
		return err
	}
	hist, err := src.LeaseDurationHistogram(r.Context(), pool, minutes)
	if err != nil {
		return err
	}
	type bucket struct {
		FromSeconds float64  `json:"fromSeconds"`
		ToSeconds   *float64 `json:"toSeconds"`
		Leases      int64    `json:"leases"`
	}
	body := struct {
		Pool    string `json:"pool,omitempty"`
		Minutes int    `json:"minutes"`
		freshness
		Buckets []bucket `json:"buckets"`
		Ended   int64    `json:"ended"`
		Held    int64    `json:"held"`
	}{Pool: pool, Minutes: minutes, freshness: setFreshness(w, src.Freshness()), Held: hist.Held, Buckets: make([]bucket, len(hist.Ended))}
	for i, n := range hist.Ended {
		b := bucket{Leases: n}
		if i > 0 {
			b.FromSeconds = hist.Bounds[i-1]
		}
		if i < len(hist.Bounds) {
			b.ToSeconds = &hist.Bounds[i]
		}
		body.Buckets[i] = b
		body.Ended += n
	}
	writeJSON(w, http.StatusOK, body)
	return nil
}

// activityParams reads ?pool= (empty: every pool) and ?minutes=.
func activityParams(r *http.Request) (string, int, error) {
	query := r.URL.Query()
	pool := ""
	if query.Has("pool") {
		var err error
		if pool, err = poolParam(r, nil); err != nil {
			return "", 0, err
		}
	}
	minutes, err := intParam(query, "minutes", defaultActivityMinutes, 1, maxActivityMinutes)
	if err != nil {
		return "", 0, err
	}
	return pool, minutes, nil
}
