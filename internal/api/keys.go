package api

import (
	"context"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/tokenorchestrator/tokenorchestrator/internal/claim"
	"github.com/tokenorchestrator/tokenorchestrator/internal/lease"
	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
)

const (
	defaultPool = "default"
	// maxBodyBytes bounds request bodies: the largest valid one is a few
	// dozen bytes. The one exception is a POST /keys that lists keys
	// (maxImportBodyBytes).
	maxBodyBytes = 64 << 10
	// maxImportBodyBytes bounds a POST /keys whose body lists keys with
	// their secrets and labels: 10,000 of them fit when a key averages
	// under 1.6 KiB of JSON.
	maxImportBodyBytes = 16 << 20
	// MaxWait is the longest a GET /keys?wait= may wait for a free key; a
	// pool's policy may only shorten it.
	MaxWait = lease.MaxWait
)

var poolName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// createRequest is the body of POST /keys; every field is optional, and
// count and keys are exclusive.
type createRequest struct {
	Count *int `json:"count"`
	// Seats, with count: the seats of each key (default: the pool's
	// policy's, or 1).
	Seats *int `json:"seats"`
	// Pool is nil when the body names none.
	Pool *string          `json:"pool"`
	Keys *[]newKeyRequest `json:"keys"`
	// SkipExisting, with keys: leave out the keys whose secret or name the
	// pool has already, rather than refuse the whole request.
	SkipExisting bool `json:"skipExisting"`
	// KeyTTL, with keys: the key life of the policy that keys with secrets
	// give a pool that has none (default: keys stay until deleted).
	KeyTTL *string `json:"keyTTL"`
}

// newKeyRequest is one key of a POST /keys that lists keys.
type newKeyRequest struct {
	Secret *string           `json:"secret"`
	Name   *string           `json:"name"`
	Labels map[string]string `json:"labels"`
	// Seats of the key (default: the pool's policy's, or 1).
	Seats *int `json:"seats"`
}

func (a *API) createKeys(w http.ResponseWriter, r *http.Request) error {
	var req createRequest
	size, err := decodeBodySize(r, &req)
	if err != nil {
		return err
	}
	// Only a body that lists keys may be larger than any other request's.
	if size > maxBodyBytes && req.Keys == nil {
		return invalid(errBodyTooLarge, "the body must be at most %d bytes (a body that lists keys, at most %d)", maxBodyBytes, maxImportBodyBytes)
	}
	pool, err := poolParam(r, req.Pool)
	if err != nil {
		return err
	}
	if req.Keys != nil {
		if req.Seats != nil {
			return invalid(errInvalidBody, "seats goes with count; with keys, give each key its seats")
		}
		return a.createListedKeys(w, r, pool, req)
	}
	if req.SkipExisting || req.KeyTTL != nil {
		return invalid(errInvalidBody, "skipExisting and keyTTL go with keys, not count")
	}
	count := 1
	if req.Count != nil {
		count = *req.Count
		if count < 1 || count > lease.MaxCreate {
			return invalid(errInvalidBody, "count must be between 1 and %d, got %d", lease.MaxCreate, count)
		}
	}
	seats := 0
	if req.Seats != nil {
		if seats = *req.Seats; seats < 1 || seats > lease.MaxSeats {
			return invalid(errInvalidBody, "seats must be between 1 and %d, got %d", lease.MaxSeats, seats)
		}
	}
	keys, err := a.store.CreateSeats(r.Context(), pool, count, seats)
	if err != nil {
		return err
	}
	if req.Count == nil {
		w.Header().Set("Location", "/keys/"+keys[0].ID.String())
		writeJSON(w, http.StatusCreated, newKeyBody(keys[0]))
		return nil
	}
	writeCreatedKeys(w, keys)
	return nil
}

// writeCreatedKeys answers 201 with the keys a batch created.
func writeCreatedKeys(w http.ResponseWriter, keys []lease.Key) {
	bodies := make([]keyBody, len(keys))
	for i, k := range keys {
		bodies[i] = newKeyBody(k)
	}
	writeJSON(w, http.StatusCreated, struct {
		Keys []keyBody `json:"keys"`
	}{bodies})
}

// createListedKeys serves a POST /keys that lists keys, with secrets and
// labels: 201 with the created keys (never their secrets), in the order
// listed.
func (a *API) createListedKeys(w http.ResponseWriter, r *http.Request, pool string, req createRequest) error {
	if req.Count != nil {
		return invalid(errInvalidBody, "give either count or keys, not both")
	}
	listed := *req.Keys
	if len(listed) < 1 || len(listed) > lease.MaxCreate {
		return invalid(errInvalidBody, "keys must list 1 to %d keys, got %d", lease.MaxCreate, len(listed))
	}
	keys := make([]store.NewKey, len(listed))
	for i, k := range listed {
		if k.Secret != nil {
			if *k.Secret == "" {
				return invalid(errInvalidBody, "keys[%d].secret must not be empty; leave it out for a key without one", i)
			}
			if len(*k.Secret) > lease.MaxSecretBytes {
				return invalid(errInvalidBody, "keys[%d].secret must be at most %d bytes, got %d", i, lease.MaxSecretBytes, len(*k.Secret))
			}
			keys[i].Secret = *k.Secret
		}
		if len(k.Labels) > lease.MaxLabels {
			return invalid(errInvalidBody, "keys[%d].labels: a key carries at most %d labels, got %d", i, lease.MaxLabels, len(k.Labels))
		}
		for name, value := range k.Labels {
			if err := lease.ValidateLabel(name, value); err != nil {
				return invalid(errInvalidBody, "keys[%d].labels: %s", i, strings.TrimPrefix(err.Error(), lease.ErrInvalidLabel.Error()+": "))
			}
		}
		keys[i].Labels = k.Labels
		if k.Seats != nil {
			if *k.Seats < 1 || *k.Seats > lease.MaxSeats {
				return invalid(errInvalidBody, "keys[%d].seats must be between 1 and %d, got %d", i, lease.MaxSeats, *k.Seats)
			}
			keys[i].Seats = *k.Seats
		}
		if k.Name != nil {
			if err := lease.ValidateName(*k.Name); err != nil {
				return invalid(errInvalidBody, "keys[%d].name: %s", i, strings.TrimPrefix(err.Error(), lease.ErrInvalidName.Error()+": "))
			}
			keys[i].Name = *k.Name
		}
	}
	opts := store.ImportOptions{SkipExisting: req.SkipExisting}
	if req.KeyTTL != nil {
		ttl, err := policyDuration("keyTTL", req.KeyTTL)
		if err != nil {
			return err
		}
		if err := (lease.Policy{KeyTTL: ttl}).Validate(); err != nil {
			return invalid(errInvalidBody, "%s", strings.TrimPrefix(err.Error(), lease.ErrInvalidPolicy.Error()+": "))
		}
		opts.KeyTTL = ttl
	}
	res, err := a.store.Import(r.Context(), pool, keys, opts)
	if err != nil {
		return err
	}
	bodies := make([]keyBody, len(res.Keys))
	for i, k := range res.Keys {
		bodies[i] = newKeyBody(k)
	}
	type skipped struct {
		Index  int    `json:"index"`
		Reason string `json:"reason"`
	}
	body := struct {
		Keys    []keyBody `json:"keys"`
		Skipped []skipped `json:"skipped"`
		// PolicyCreated: keys with secrets gave the pool its policy, with
		// keys that stay (or the keyTTL asked for).
		PolicyCreated bool `json:"policyCreated"`
	}{Keys: bodies, Skipped: []skipped{}, PolicyCreated: res.PolicyCreated}
	for _, s := range res.Skipped {
		body.Skipped = append(body.Skipped, skipped{s.Index, s.Reason})
	}
	writeJSON(w, http.StatusCreated, body)
	return nil
}

func (a *API) claimKey(w http.ResponseWriter, r *http.Request) error {
	pool, err := poolParam(r, nil)
	if err != nil {
		return err
	}
	labels, err := labelParams(r)
	if err != nil {
		return err
	}
	wait, err := waitParam(r)
	if err != nil {
		return err
	}
	idempotencyKey, err := idempotencyKeyParam(r)
	if err != nil {
		return err
	}
	key, replayed, err := a.claims.Claim(r.Context(), claim.Request{Pool: pool, Labels: labels, Wait: wait, IdempotencyKey: idempotencyKey})
	if err != nil {
		return err
	}
	if replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	// The lease token goes in the ETag too, for If-Match.
	w.Header().Set("ETag", `"`+formatLeaseToken(*key.LeaseToken)+`"`)
	writeJSON(w, http.StatusOK, newKeyBody(key).withLease(key).withSecret(key))
	return nil
}

func (a *API) poolAvailability(w http.ResponseWriter, r *http.Request) error {
	pool, err := poolParam(r, nil)
	if err != nil {
		return err
	}
	counts, err := a.store.CountPool(r.Context(), pool)
	if err != nil {
		return err
	}
	available, err := a.store.HasFree(r.Context(), pool)
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("X-Pool", pool)
	h.Set("X-Pool-Keys", strconv.FormatInt(counts.Keys, 10))
	h.Set("X-Pool-Free", strconv.FormatInt(counts.Free(), 10))
	h.Set("X-Pool-Blocked", strconv.FormatInt(counts.Held, 10))
	h.Set("X-Pool-Available", strconv.FormatBool(available))
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	return nil
}

// getKey answers a key; with the current lease's token (If-Match or
// ?lease=), its secret too, and a token that is not the current running
// lease's is a 409.
func (a *API) getKey(w http.ResponseWriter, r *http.Request) error {
	id, err := keyIDParam(r)
	if err != nil {
		return err
	}
	return a.writeKey(w, r, id, nil)
}

// writeKey answers the key with this id (known is the key when the caller
// has read it already, found by name); with a lease token (If-Match or
// ?lease=), its secret too, and a token that is not the current running
// lease's is a 409. The key is read once: with a token, only the read that
// checks the token and opens the secret.
func (a *API) writeKey(w http.ResponseWriter, r *http.Request, id uuid.UUID, known *lease.Key) error {
	token, err := leaseTokenParam(r)
	if err != nil {
		return err
	}
	if token != nil {
		key, err := a.store.GetSecret(r.Context(), id, *token)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, newKeyBody(key).withSecret(key))
		return nil
	}
	if known == nil {
		key, err := a.store.Get(r.Context(), id)
		if err != nil {
			return err
		}
		known = &key
	}
	writeJSON(w, http.StatusOK, newKeyBody(*known))
	return nil
}

// releaseRequest is the optional body of PUT /keys/{id}.
type releaseRequest struct {
	Cooldown *string `json:"cooldown"`
}

// releaseKey releases a key, with an optional cooldown (?cooldown= or the
// body's cooldown, at most 24 hours) during which no claim takes it.
func (a *API) releaseKey(w http.ResponseWriter, r *http.Request) error {
	id, err := keyIDParam(r)
	if err != nil {
		return err
	}
	token, err := leaseTokenParam(r)
	if err != nil {
		return err
	}
	var req releaseRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	cooldown, err := cooldownParam(r, req.Cooldown)
	if err != nil {
		return err
	}
	var key lease.Key
	if cooldown > 0 {
		key, err = a.store.ReleaseWithCooldown(r.Context(), id, token, cooldown)
	} else {
		key, err = a.store.Release(r.Context(), id, token)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, newKeyBody(key))
	return nil
}

// cooldownParam reads the cooldown of a release from the query or the body
// (both only if they agree): a duration such as 30s or a number of seconds,
// from 0 (none) to lease.MaxCooldown.
func cooldownParam(r *http.Request, fromBody *string) (time.Duration, error) {
	query := r.URL.Query()
	var raw string
	switch {
	case query.Has("cooldown") && fromBody != nil && query.Get("cooldown") != *fromBody:
		return 0, invalid(errInvalidParameter, "the cooldown is %q in the query but %q in the body", query.Get("cooldown"), *fromBody)
	case query.Has("cooldown"):
		raw = query.Get("cooldown")
	case fromBody != nil:
		raw = *fromBody
	default:
		return 0, nil
	}
	d, err := time.ParseDuration(raw)
	if err != nil {
		seconds, numErr := strconv.ParseFloat(raw, 64)
		if numErr != nil || math.IsNaN(seconds) || seconds < 0 || seconds > lease.MaxCooldown.Seconds() {
			return 0, invalid(errInvalidParameter, "cooldown must be a duration such as 30s or 5m, or a number of seconds, up to %s, got %q", lease.MaxCooldown, raw)
		}
		d = time.Duration(seconds * float64(time.Second))
	}
	if d < 0 || d > lease.MaxCooldown {
		return 0, invalid(errInvalidParameter, "cooldown must be between 0s and %s, got %q", lease.MaxCooldown, raw)
	}
	return d, nil
}

// labelParams reads the labels a claim asks for: ?label=name=value, any
// number of times up to lease.MaxLabels; a key must carry all of them.
// The first is the one whose index the claim walks.
func labelParams(r *http.Request) ([]string, error) {
	raw := r.URL.Query()["label"]
	if len(raw) > lease.MaxLabels {
		return nil, invalid(errInvalidParameter, "a claim names at most %d labels, got %d", lease.MaxLabels, len(raw))
	}
	labels := make([]string, 0, len(raw))
	for _, l := range raw {
		label, err := lease.ParseLabel(l)
		if err != nil {
			return nil, invalid(errInvalidParameter, "label: %s", strings.TrimPrefix(err.Error(), lease.ErrInvalidLabel.Error()+": "))
		}
		labels = append(labels, label)
	}
	return labels, nil
}

func (a *API) headKey(w http.ResponseWriter, r *http.Request) error {
	id, err := keyIDParam(r)
	if err != nil {
		return err
	}
	key, err := a.store.Get(r.Context(), id)
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("X-Key-Id", key.ID.String())
	h.Set("X-Key-Pool", key.Pool)
	status := "free"
	if key.Held() {
		status = "blocked"
	}
	h.Set("X-Key-Status", status)
	h.Set("X-Key-Created-At", formatTime(key.CreatedAt))
	if key.ExpiresAt != nil {
		h.Set("X-Key-Expires-At", formatTime(*key.ExpiresAt))
	}
	if key.ClaimedAt != nil {
		h.Set("X-Key-Blocked-At", formatTime(*key.ClaimedAt))
	}
	if key.LeaseExpiresAt != nil {
		h.Set("X-Key-Lease-Expires-At", formatTime(*key.LeaseExpiresAt))
	}
	if key.LastKeepAliveAt != nil {
		h.Set("X-Key-Last-Keep-Alive-At", formatTime(*key.LastKeepAliveAt))
	}
	h.Set("X-Key-Times-Assigned", strconv.FormatInt(key.TimesClaimed, 10))
	h.Set("X-Key-Seats", strconv.Itoa(key.Seats))
	if key.SeatsHeld != nil {
		h.Set("X-Key-Seats-Held", strconv.Itoa(*key.SeatsHeld))
	}
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	return nil
}

func (a *API) deleteKey(w http.ResponseWriter, r *http.Request) error {
	id, err := keyIDParam(r)
	if err != nil {
		return err
	}
	return a.removeKey(w, r, id)
}

// removeKey deletes a key for good and answers it as it was.
func (a *API) removeKey(w http.ResponseWriter, r *http.Request, id uuid.UUID) error {
	key, err := a.store.Delete(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct {
		keyBody
		Deleted bool `json:"deleted"`
	}{newKeyBody(key), true})
	return nil
}

// onLease serves a call that acts on a key's lease, release or keep-alive:
// both take the key id and an optional lease token, and answer the key.
func onLease(op func(ctx context.Context, id uuid.UUID, leaseToken *int64) (lease.Key, error)) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		id, err := keyIDParam(r)
		if err != nil {
			return err
		}
		token, err := leaseTokenParam(r)
		if err != nil {
			return err
		}
		key, err := op(r.Context(), id, token)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, newKeyBody(key))
		return nil
	}
}

// keyIDParam reads the key id of the path. Anything but a UUID in its
// canonical form names no key: a 404, like any unknown key.
func keyIDParam(r *http.Request) (uuid.UUID, error) {
	raw := chi.URLParam(r, "id")
	if len(raw) != 36 {
		return uuid.UUID{}, lease.ErrKeyNotFound
	}
	id, err := uuid.Parse(raw)
	if err != nil {
		return uuid.UUID{}, lease.ErrKeyNotFound
	}
	return id, nil
}

// poolParam reads the pool from the query, or from the body's value (nil
// when the body names none) when the query has none; both may be given only
// if they agree. A pool named empty is refused, never read as the default.
func poolParam(r *http.Request, fromBody *string) (string, error) {
	query := r.URL.Query()
	pool := query.Get("pool")
	switch {
	case query.Has("pool") && pool == "":
		return "", invalid(errInvalidParameter, "pool must not be empty; leave it out for the default pool")
	case fromBody != nil && *fromBody == "":
		return "", invalid(errInvalidBody, "pool must not be empty; leave it out for the default pool")
	case fromBody != nil && pool != "" && pool != *fromBody:
		return "", invalid(errInvalidParameter, "pool is %q in the query but %q in the body", pool, *fromBody)
	case fromBody != nil:
		pool = *fromBody
	case pool == "":
		return defaultPool, nil
	}
	if !poolName.MatchString(pool) {
		return "", invalid(errInvalidParameter, "pool must be 1 to 64 letters, digits, '.', '_' or '-', got %q", pool)
	}
	return pool, nil
}

// waitParam reads ?wait=: a duration such as 30s or 1500ms, or a number of
// seconds, at most MaxWait.
func waitParam(r *http.Request) (time.Duration, error) {
	query := r.URL.Query()
	if !query.Has("wait") {
		return 0, nil
	}
	raw := query.Get("wait")
	wait, err := time.ParseDuration(raw)
	if err != nil {
		seconds, numErr := strconv.ParseFloat(raw, 64)
		// Checked before the conversion: NaN and values out of range do not
		// convert to a Duration the same way on every platform.
		if numErr != nil || math.IsNaN(seconds) || seconds < 0 || seconds > MaxWait.Seconds() {
			return 0, invalid(errInvalidParameter, "wait must be a duration such as 30s or 500ms, or a number of seconds up to %d, got %q",
				int(MaxWait.Seconds()), raw)
		}
		wait = time.Duration(seconds * float64(time.Second))
	}
	if wait < 0 || wait > MaxWait {
		return 0, invalid(errInvalidParameter, "wait must be between 0s and %s, got %q", MaxWait, raw)
	}
	return wait, nil
}

// maxIdempotencyKey is the longest Idempotency-Key taken.
const maxIdempotencyKey = 255

// idempotencyKeyParam reads the Idempotency-Key header of a claim: 1 to 255
// printable ASCII characters (spaces inside included; net/http has already
// trimmed those around the value); "" when there is none.
func idempotencyKeyParam(r *http.Request) (string, error) {
	values := r.Header.Values("Idempotency-Key")
	switch {
	case len(values) == 0:
		return "", nil
	case len(values) > 1:
		return "", invalid(errInvalidIdempotencyKey, "send one Idempotency-Key header, not %d", len(values))
	}
	key := values[0]
	if len(key) == 0 || len(key) > maxIdempotencyKey {
		return "", invalid(errInvalidIdempotencyKey, "the Idempotency-Key must be 1 to %d characters, got %d", maxIdempotencyKey, len(key))
	}
	for i := 0; i < len(key); i++ {
		if key[i] < ' ' || key[i] > '~' {
			return "", invalid(errInvalidIdempotencyKey, "the Idempotency-Key must be printable ASCII; byte %d is 0x%02x", i+1, key[i])
		}
	}
	return key, nil
}

// leaseTokenParam reads the lease token from If-Match ("<token>") or from
// ?lease=. A token that is not one of ours is kept as one that matches no
// lease, so the request gets the same 409 as any stale token.
func leaseTokenParam(r *http.Request) (*int64, error) {
	var fromHeader, fromQuery string
	if header := strings.TrimSpace(r.Header.Get("If-Match")); header != "" && header != "*" {
		fromHeader = strings.Trim(strings.TrimPrefix(header, "W/"), `"`)
		if fromHeader == "" {
			// An empty tag names no lease; taken as no token it would
			// act on whoever holds the key now.
			return nil, invalid(errInvalidParameter, "the lease token in If-Match is empty")
		}
	}
	query := r.URL.Query()
	if query.Has("lease") {
		fromQuery = query.Get("lease")
		if fromQuery == "" {
			return nil, invalid(errInvalidParameter, "lease must not be empty")
		}
	}
	if fromHeader != "" && fromQuery != "" && fromHeader != fromQuery {
		return nil, invalid(errInvalidParameter, "the lease token is %q in If-Match but %q in the query", fromHeader, fromQuery)
	}
	raw := fromHeader
	if raw == "" {
		raw = fromQuery
	}
	if raw == "" {
		return nil, nil
	}
	token, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || token <= 0 {
		token = -1
	}
	return &token, nil
}
