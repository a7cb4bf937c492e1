package api

import (
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
)

const (
	// defaultPageSize and maxPageSize bound GET /pools/{pool}/keys.
	defaultPageSize = 50
	maxPageSize     = 500
)

// listPoolKeys answers a page of the pool's live keys in id order. The next
// page starts after the last id of this one (nextAfter); lease tokens are
// never shown.
func (a *API) listPoolKeys(w http.ResponseWriter, r *http.Request) error {
	pool := chi.URLParam(r, "pool")
	if !poolName.MatchString(pool) {
		return invalid(errInvalidParameter, "pool must be 1 to 64 letters, digits, '.', '_' or '-', got %q", pool)
	}
	query := r.URL.Query()
	after := uuid.Nil
	if query.Has("after") {
		raw := query.Get("after")
		var err error
		if after, err = uuid.Parse(raw); err != nil || len(raw) != 36 {
			return invalid(errInvalidParameter, "after must be a key id (a UUID) from the previous page, got %q", raw)
		}
	}
	limit, err := intParam(query, "limit", defaultPageSize, 1, maxPageSize)
	if err != nil {
		return err
	}
	// One more than asked tells whether another page follows.
	keys, err := a.store.ListKeys(r.Context(), pool, after, limit+1)
	if err != nil {
		return err
	}
	body := struct {
		Pool      string    `json:"pool"`
		Keys      []keyBody `json:"keys"`
		NextAfter *string   `json:"nextAfter"`
	}{Pool: pool, Keys: []keyBody{}}
	if len(keys) > limit {
		keys = keys[:limit]
		next := keys[limit-1].ID.String()
		body.NextAfter = &next
	}
	for _, k := range keys {
		body.Keys = append(body.Keys, newKeyBody(k))
	}
	writeJSON(w, http.StatusOK, body)
	return nil
}
