package api

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/tokenorchestrator/tokenorchestrator/internal/lease"
	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
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

// durationText writes a duration as the API does: Go's form, e.g. 1m30s.
func durationText(d *time.Duration) *string {
	if d == nil {
		return nil
	}
	s := d.String()
	return &s
}

// poolBody is a pool as GET /pools shows it: its policy (only what it
// sets), what applies (the server's settings where it sets nothing), and
// its counts.
type poolBody struct {
	Pool      string         `json:"pool"`
	HasPolicy bool           `json:"hasPolicy"`
	Policy    map[string]any `json:"policy"`
	Effective effectiveBody  `json:"effective"`
	Keys      int64          `json:"keys"`
	// Seats counts the seats of the keys; free and held count seats.
	Seats     int64           `json:"seats"`
	Free      int64           `json:"free"`
	Held      int64           `json:"held"`
	CreatedAt *string         `json:"createdAt"`
	UpdatedAt *string         `json:"updatedAt"`
	Rebased   *int            `json:"keysRebased,omitempty"`
	Deleted   *poolDeleteBody `json:"deleted,omitempty"`
}

// effectiveBody is what applies to a pool. keyTTL null: keys stay;
// maxLeaseTTL null: leases have no bound.
type effectiveBody struct {
	KeyTTL            *string `json:"keyTTL"`
	LeaseTTL          string  `json:"leaseTTL"`
	MaxLeaseTTL       *string `json:"maxLeaseTTL"`
	RequireLeaseToken bool    `json:"requireLeaseToken"`
	MaxWait           string  `json:"maxWait"`
	Seats             int     `json:"seats"`
}

type poolDeleteBody struct {
	Keys int `json:"keys"`
}

func (a *API) newPoolBody(p lease.Policy, hasPolicy bool, counts store.PoolCounts) poolBody {
	e := a.store.Effective(p)
	body := poolBody{
		Pool: p.Pool, HasPolicy: hasPolicy, Policy: map[string]any{},
		Effective: effectiveBody{
			KeyTTL: durationText(e.KeyTTL), LeaseTTL: e.LeaseTTL.String(), MaxLeaseTTL: durationText(e.MaxLeaseTTL),
			RequireLeaseToken: e.RequireLeaseToken, MaxWait: e.MaxWait.String(), Seats: e.Seats,
		},
		Keys: counts.Keys, Seats: counts.Seats, Free: counts.Free(), Held: counts.Held,
	}
	if !hasPolicy {
		return body
	}
	body.CreatedAt, body.UpdatedAt = formatTimePtr(&p.CreatedAt), formatTimePtr(&p.UpdatedAt)
	switch {
	case p.KeysStay:
		body.Policy["keyTTL"] = nil
	case p.KeyTTL != nil:
		body.Policy["keyTTL"] = p.KeyTTL.String()
	}
	for name, d := range map[string]*time.Duration{"leaseTTL": p.LeaseTTL, "maxLeaseTTL": p.MaxLeaseTTL, "maxWait": p.MaxWait} {
		if d != nil {
			body.Policy[name] = d.String()
		}
	}
	if p.RequireLeaseToken {
		body.Policy["requireLeaseToken"] = true
	}
	if p.Seats != nil {
		body.Policy["seats"] = *p.Seats
	}
	return body
}

// poolPathParam reads the pool of the path.
func poolPathParam(r *http.Request) (string, error) {
	pool := chi.URLParam(r, "pool")
	if !poolName.MatchString(pool) {
		return "", invalid(errInvalidParameter, "pool must be 1 to 64 letters, digits, '.', '_' or '-', got %q", pool)
	}
	return pool, nil
}

// listPools answers every pool that has a policy or keys, in name order.
func (a *API) listPools(w http.ResponseWriter, r *http.Request) error {
	policies, err := a.store.Policies(r.Context())
	if err != nil {
		return err
	}
	counts, err := a.store.CountPools(r.Context())
	if err != nil {
		return err
	}
	byName := make(map[string]lease.Policy, len(policies))
	names := make([]string, 0, len(policies)+len(counts))
	for _, p := range policies {
		byName[p.Pool] = p
		names = append(names, p.Pool)
	}
	countsOf := make(map[string]store.PoolCounts, len(counts))
	for _, c := range counts {
		countsOf[c.Pool] = c
		if _, ok := byName[c.Pool]; !ok {
			names = append(names, c.Pool)
		}
	}
	slices.Sort(names)
	body := struct {
		Pools []poolBody `json:"pools"`
	}{Pools: make([]poolBody, 0, len(names))}
	for _, name := range names {
		p, has := byName[name]
		if !has {
			p = lease.Policy{Pool: name}
		}
		body.Pools = append(body.Pools, a.newPoolBody(p, has, countsOf[name]))
	}
	writeJSON(w, http.StatusOK, body)
	return nil
}

// getPool answers one pool: 404 unknown_pool when it has neither a policy
// nor keys.
func (a *API) getPool(w http.ResponseWriter, r *http.Request) error {
	pool, err := poolPathParam(r)
	if err != nil {
		return err
	}
	p, has, err := a.store.Policy(r.Context(), pool)
	if err != nil {
		return err
	}
	counts, err := a.store.CountPool(r.Context(), pool)
	if err != nil {
		return err
	}
	if !has && counts.Keys == 0 {
		return lease.ErrUnknownPool
	}
	writeJSON(w, http.StatusOK, a.newPoolBody(p, has, counts))
	return nil
}

// putPool creates or replaces a pool's policy. Fields left out are unset
// (the server's settings apply); keyTTL null means keys stay.
func (a *API) putPool(w http.ResponseWriter, r *http.Request) error {
	pool, err := poolPathParam(r)
	if err != nil {
		return err
	}
	var req struct {
		KeyTTL            json.RawMessage `json:"keyTTL"`
		LeaseTTL          *string         `json:"leaseTTL"`
		MaxLeaseTTL       *string         `json:"maxLeaseTTL"`
		RequireLeaseToken *bool           `json:"requireLeaseToken"`
		MaxWait           *string         `json:"maxWait"`
		Seats             *int            `json:"seats"`
	}
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	p := lease.Policy{Pool: pool, RequireLeaseToken: req.RequireLeaseToken != nil && *req.RequireLeaseToken, Seats: req.Seats}
	switch raw := strings.TrimSpace(string(req.KeyTTL)); raw {
	case "":
	case "null":
		p.KeysStay = true
	default:
		var text string
		if err := json.Unmarshal(req.KeyTTL, &text); err != nil {
			return invalid(errInvalidBody, "keyTTL must be a duration such as \"24h\", or null for keys that stay until deleted")
		}
		if p.KeyTTL, err = policyDuration("keyTTL", &text); err != nil {
			return err
		}
	}
	if p.LeaseTTL, err = policyDuration("leaseTTL", req.LeaseTTL); err != nil {
		return err
	}
	if p.MaxLeaseTTL, err = policyDuration("maxLeaseTTL", req.MaxLeaseTTL); err != nil {
		return err
	}
	if p.MaxWait, err = policyDuration("maxWait", req.MaxWait); err != nil {
		return err
	}
	if err := p.Validate(); err != nil {
		return invalid(errInvalidBody, "%s", strings.TrimPrefix(err.Error(), lease.ErrInvalidPolicy.Error()+": "))
	}
	put, rebased, err := a.store.PutPolicy(r.Context(), p)
	if err != nil {
		return err
	}
	counts, err := a.store.CountPool(r.Context(), pool)
	if err != nil {
		return err
	}
	body := a.newPoolBody(put, true, counts)
	body.Rebased = &rebased
	writeJSON(w, http.StatusOK, body)
	return nil
}

// policyDuration reads a duration of a policy: Go's form (30s, 5m, 24h).
func policyDuration(name string, raw *string) (*time.Duration, error) {
	if raw == nil {
		return nil, nil
	}
	d, err := time.ParseDuration(*raw)
	if err != nil {
		return nil, invalid(errInvalidBody, "%s must be a duration such as 30s, 5m or 24h, got %q", name, *raw)
	}
	return &d, nil
}

// deletePool removes a pool's policy; with ?deleteKeys=true its keys too.
// A pool that still has keys is a 409 without it.
func (a *API) deletePool(w http.ResponseWriter, r *http.Request) error {
	pool, err := poolPathParam(r)
	if err != nil {
		return err
	}
	query := r.URL.Query()
	withKeys := false
	if query.Has("deleteKeys") {
		if withKeys, err = strconv.ParseBool(query.Get("deleteKeys")); err != nil {
			return invalid(errInvalidParameter, "deleteKeys must be true or false, got %q", query.Get("deleteKeys"))
		}
	}
	deleted, err := a.store.DeletePool(r.Context(), pool, withKeys)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct {
		Pool        string `json:"pool"`
		Deleted     bool   `json:"deleted"`
		DeletedKeys int    `json:"deletedKeys"`
	}{pool, true, deleted})
	return nil
}

// keyByName finds the live key of the path's pool and name.
func (a *API) keyByName(r *http.Request) (lease.Key, error) {
	pool, err := poolPathParam(r)
	if err != nil {
		return lease.Key{}, err
	}
	name := chi.URLParam(r, "name")
	if lease.ValidateName(name) != nil {
		return lease.Key{}, lease.ErrKeyNotFound
	}
	return a.store.GetByName(r.Context(), pool, name)
}

// getKeyByName answers a key found by its name, as GET /keys/{id} does:
// with the current lease's token, its secret too.
func (a *API) getKeyByName(w http.ResponseWriter, r *http.Request) error {
	key, err := a.keyByName(r)
	if err != nil {
		return err
	}
	return a.writeKey(w, r, key.ID, &key)
}

// deleteKeyByName deletes a key found by its name, as DELETE /keys/{id}.
func (a *API) deleteKeyByName(w http.ResponseWriter, r *http.Request) error {
	key, err := a.keyByName(r)
	if err != nil {
		return err
	}
	return a.removeKey(w, r, key.ID)
}
