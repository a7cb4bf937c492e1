package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// MaxWait is the longest the server waits for a free key in one call.
const MaxWait = 60 * time.Second

// Key is a key of a pool as the server describes it. Its fields keep the
// server's JSON names (IsBlocked means held, BlockedAt is when the key was
// claimed, TimesAssigned counts claims): see "Words" in docs/api.md.
type Key struct {
	ID        string    `json:"keyId"`
	Pool      string    `json:"pool"`
	IsBlocked bool      `json:"isBlocked"`
	CreatedAt time.Time `json:"createdAt"`
	// ExpiresAt is when the key is deleted unless kept alive before; nil
	// for a key that stays until deleted (its pool's policy sets no key
	// life, as an import of secrets gives a pool that had no policy).
	ExpiresAt       *time.Time `json:"expiresAt"`
	LastKeepAliveAt *time.Time `json:"lastKeepAliveAt"`
	TimesAssigned   int64      `json:"timesAssigned"`
	// Seats is how many leases may hold the key at once, each with its own
	// token (1 for most keys).
	Seats int `json:"seats"`
	// SeatsHeld is how many of them are held; nil where the server does
	// not count them (the answers about one lease of a key of several).
	SeatsHeld *int `json:"seatsHeld,omitempty"`
	// BlockedAt (when the key was claimed) and LeaseExpiresAt describe the
	// lease the answer is about, or the current lease of a key of one seat;
	// nil when there is none.
	BlockedAt      *time.Time `json:"blockedAt"`
	LeaseExpiresAt *time.Time `json:"leaseExpiresAt"`
	// LeaseToken is set only in the answer to the call that claimed the
	// key: it proves to the server that a later call comes from the holder.
	LeaseToken string `json:"leaseToken,omitempty"`
	// Name of the key, unique in its pool; "" for none.
	Name string `json:"name"`
	// SecretHint is the last four characters of the key's secret, the only
	// part of it the server shows; "" for a key without a secret, or whose
	// secret is shorter than 12 characters.
	SecretHint string `json:"secretHint"`
	// Labels of the key; nil when it has none.
	Labels map[string]string `json:"labels,omitempty"`
	// CoolingUntil is set while the key cools down after a release with a
	// cooldown: no claim takes it before then.
	CoolingUntil *time.Time `json:"coolingUntil"`
	// Secret is the credential the key stands for, set only in the answer
	// to the call that claimed the key (and GetKeySecret). Keep it out of
	// logs.
	Secret string `json:"secret,omitempty"`
}

// timeFormat is the server's: RFC 3339 in UTC with milliseconds.
const timeFormat = "2006-01-02T15:04:05.000Z07:00"

// MarshalJSON writes the key exactly as the server does, times with
// milliseconds, so that it round-trips.
func (k Key) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		ID              string            `json:"keyId"`
		Pool            string            `json:"pool"`
		IsBlocked       bool              `json:"isBlocked"`
		BlockedAt       *string           `json:"blockedAt"`
		CreatedAt       *string           `json:"createdAt"`
		ExpiresAt       *string           `json:"expiresAt"`
		LeaseExpiresAt  *string           `json:"leaseExpiresAt"`
		LastKeepAliveAt *string           `json:"lastKeepAliveAt"`
		TimesAssigned   int64             `json:"timesAssigned"`
		Seats           int               `json:"seats"`
		SeatsHeld       *int              `json:"seatsHeld,omitempty"`
		Name            *string           `json:"name"`
		SecretHint      *string           `json:"secretHint"`
		Labels          map[string]string `json:"labels,omitempty"`
		CoolingUntil    *string           `json:"coolingUntil"`
		LeaseToken      string            `json:"leaseToken,omitempty"`
		Secret          string            `json:"secret,omitempty"`
	}{k.ID, k.Pool, k.IsBlocked, formatTime(k.BlockedAt), formatTime(&k.CreatedAt), formatTime(k.ExpiresAt),
		formatTime(k.LeaseExpiresAt), formatTime(k.LastKeepAliveAt), k.TimesAssigned, k.Seats, k.SeatsHeld, orNull(k.Name), orNull(k.SecretHint),
		k.Labels, formatTime(k.CoolingUntil), k.LeaseToken, k.Secret})
}

// orNull writes "" as null, as the server writes a value that is not there.
func orNull(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// PoolStatus is the availability of a pool.
type PoolStatus struct {
	Pool string
	Keys int64
	Free int64
	// Blocked counts the held keys (the X-Pool-Blocked header's name).
	Blocked int64
	// Available reports whether a key could be claimed right now.
	Available bool
}

// CreateKey creates one free key in the pool ("" is the default pool).
func (c *Client) CreateKey(ctx context.Context, pool string) (Key, error) {
	return c.key(ctx, request{method: http.MethodPost, path: "/keys", query: poolQuery(pool)})
}

// CreateKeys creates count free keys in the pool in one call; the server
// takes 1 to 10000. Each has the seats of the pool's policy, or 1.
func (c *Client) CreateKeys(ctx context.Context, pool string, count int) ([]Key, error) {
	return c.CreateKeysWithSeats(ctx, pool, count, 0)
}

// CreateKeysWithSeats is CreateKeys with the seats of each key (1 to 1000;
// 0: the pool's policy's, or 1): how many leases may hold it at once.
func (c *Client) CreateKeysWithSeats(ctx context.Context, pool string, count, seats int) ([]Key, error) {
	body := map[string]int{"count": count}
	if seats != 0 {
		body["seats"] = seats
	}
	resp, err := c.do(ctx, request{method: http.MethodPost, path: "/keys", query: poolQuery(pool), body: body})
	if err != nil {
		return nil, err
	}
	batch, err := decode[struct {
		Keys []Key `json:"keys"`
	}](resp)
	return batch.Keys, err
}

// NewKey is one key to create with ImportKeys or Import.
type NewKey struct {
	// Secret is the credential the key stands for; empty for none. The
	// server keeps it encrypted and hands it out only with a lease.
	Secret string `json:"secret,omitempty"`
	// Name of the key, unique in its pool (1 to 128 letters, digits or any
	// of . _ ~ : @ + -); empty for none.
	Name string `json:"name,omitempty"`
	// Labels of the key, name to value; nil for none.
	Labels map[string]string `json:"labels,omitempty"`
	// Seats of the key (1 to 1000): how many leases may hold it at once;
	// 0: the pool's policy's, or 1.
	Seats int `json:"seats,omitempty"`
}

// MaxImport is the most keys one ImportKeys or Import call creates.
const MaxImport = 10000

// ImportKeys creates the keys, with their secrets, names and labels, in one
// call, and returns them without their secrets: Import without options.
// A secret or a name that a key of the pool already has fails the call with
// ErrDuplicateSecret or ErrDuplicateName; nothing is created then.
func (c *Client) ImportKeys(ctx context.Context, pool string, keys []NewKey) ([]Key, error) {
	res, err := c.Import(ctx, pool, keys, ImportOptions{})
	return res.Keys, err
}

// ImportOptions adjust an Import.
type ImportOptions struct {
	// SkipExisting leaves out the keys whose secret or name a key of the
	// pool has already (ImportResult.Skipped lists them) instead of failing
	// the call.
	SkipExisting bool
	// KeyTTL is the key life of the policy that keys with secrets give a
	// pool that has none; zero: that policy's keys stay until deleted. A
	// pool that has a policy keeps it.
	KeyTTL time.Duration
}

// ImportResult is what an Import did.
type ImportResult struct {
	// Keys are the keys created, in the order given, without the skipped
	// ones, and without their secrets.
	Keys []Key
	// Skipped are the keys left out by SkipExisting.
	Skipped []SkippedKey
	// PolicyCreated: the pool had no policy, and its new secrets gave it
	// one whose keys stay until deleted (or live ImportOptions.KeyTTL), so
	// that real credentials are never deleted because nobody kept them
	// alive.
	PolicyCreated bool
}

// SkippedKey is a key that an import left out.
type SkippedKey struct {
	// Index is the key's index in the keys given.
	Index int `json:"index"`
	// Reason is what a key of the pool has already: SkippedSecret or
	// SkippedName.
	Reason string `json:"reason"`
}

// Reasons of a SkippedKey.
const (
	SkippedSecret = "secret"
	SkippedName   = "name"
)

// Import creates the keys, with their secrets, names and labels, in one
// call (at most MaxImport, and a body of at most 16 MiB). A secret or a
// name that the list repeats, or (without SkipExisting) that a key of the
// pool already has, fails the call with ErrDuplicateSecret or
// ErrDuplicateName, whose APIError.Detail names the key as keys[i]; a
// server without an encryption key fails it with ErrSecretsNotConfigured.
// Nothing is created then.
func (c *Client) Import(ctx context.Context, pool string, keys []NewKey, opts ImportOptions) (ImportResult, error) {
	body := struct {
		Keys         []NewKey `json:"keys"`
		SkipExisting bool     `json:"skipExisting,omitempty"`
		KeyTTL       *string  `json:"keyTTL,omitempty"`
	}{Keys: keys, SkipExisting: opts.SkipExisting}
	if opts.KeyTTL != 0 {
		body.KeyTTL = durationText(&opts.KeyTTL)
	}
	resp, err := c.do(ctx, request{method: http.MethodPost, path: "/keys", query: poolQuery(pool), body: body})
	if err != nil {
		return ImportResult{}, err
	}
	res, err := decode[struct {
		Keys          []Key        `json:"keys"`
		Skipped       []SkippedKey `json:"skipped"`
		PolicyCreated bool         `json:"policyCreated"`
	}](resp)
	return ImportResult{Keys: res.Keys, Skipped: res.Skipped, PolicyCreated: res.PolicyCreated}, err
}

// ClaimKey claims a random free key of the pool and returns it with its
// lease token. When none is free, the server waits up to wait (at most
// MaxWait) for one before the call fails with ErrNoKeyAvailable; a pool that
// has no keys fails at once with ErrUnknownPool. The lease ends unless kept
// alive: Claim does that for you.
//
// A claim whose answer is lost after the server made it, and which is then
// sent again (this client retries answers of 503), holds a second key
// unless the claim carries an idempotency key: pass
// WithIdempotencyKey(NewIdempotencyKey()) to make the call safe to repeat,
// and the same key again to repeat it. Claim does that for you too. With an
// idempotency key, the call is also sent again when its connection failed
// before an answer came.
func (c *Client) ClaimKey(ctx context.Context, pool string, wait time.Duration, opts ...ClaimOption) (Key, error) {
	var o claimOptions
	for _, opt := range opts {
		opt(&o)
	}
	query := poolQuery(pool)
	for _, label := range o.labels {
		query.Add("label", label)
	}
	if wait > 0 {
		query.Set("wait", strconv.FormatInt(min(wait, MaxWait).Milliseconds(), 10)+"ms")
	}
	return c.key(ctx, request{method: http.MethodGet, path: "/keys", query: query, idempotencyKey: o.idempotencyKey})
}

// ClaimOption adjusts a ClaimKey or Claim call.
type ClaimOption func(*claimOptions)

type claimOptions struct {
	idempotencyKey string
	labels         []string
}

// WithLabels claims only a key that carries every label, each written
// name=value (e.g. "tier=paid"). The server walks the first label's keys
// and checks the others on each: name the most selective one first.
func WithLabels(labels ...string) ClaimOption {
	return func(o *claimOptions) { o.labels = append(o.labels, labels...) }
}

// WithIdempotencyKey sends key as the claim's Idempotency-Key: the server
// answers every call with the same key, in the same pool and within the
// server's LEASE_TTL, with the lease the first one got (the same key id and
// lease token) instead of claiming another key. Once that lease has ended, a
// call with the key fails with ErrIdempotencyKeyReused. The key is 1 to 255
// printable ASCII characters; NewIdempotencyKey makes one.
func WithIdempotencyKey(key string) ClaimOption {
	return func(o *claimOptions) { o.idempotencyKey = key }
}

// NewIdempotencyKey returns a random idempotency key: 128 random bits in
// hex, which no other claim will ever use.
func NewIdempotencyKey() string {
	raw := make([]byte, 16)
	// crypto/rand.Read never fails: it panics on its own should the system
	// refuse randomness.
	_, _ = rand.Read(raw)
	return hex.EncodeToString(raw)
}

// PoolStatus tells how many keys the pool has and whether one is free,
// without claiming any.
func (c *Client) PoolStatus(ctx context.Context, pool string) (PoolStatus, error) {
	resp, err := c.do(ctx, request{method: http.MethodHead, path: "/keys", query: poolQuery(pool)})
	if err != nil {
		return PoolStatus{}, err
	}
	h := headerReader{header: resp.header}
	s := PoolStatus{
		Pool:      h.string("X-Pool"),
		Keys:      h.int("X-Pool-Keys"),
		Free:      h.int("X-Pool-Free"),
		Blocked:   h.int("X-Pool-Blocked"),
		Available: h.string("X-Pool-Available") == "true",
	}
	return s, h.err
}

// GetKey returns the key with this id.
func (c *Client) GetKey(ctx context.Context, id string) (Key, error) {
	return c.key(ctx, request{method: http.MethodGet, path: keyPath(id)})
}

// HeadKey returns the key with this id as HEAD /keys/{id} describes it, in
// headers: the same as GetKey but for its name, secret hint, labels and
// cooldown, which no header carries, for clients that prefer not to read a
// body.
func (c *Client) HeadKey(ctx context.Context, id string) (Key, error) {
	resp, err := c.do(ctx, request{method: http.MethodHead, path: keyPath(id)})
	if err != nil {
		return Key{}, err
	}
	h := headerReader{header: resp.header}
	k := Key{
		ID:              h.string("X-Key-Id"),
		Pool:            h.string("X-Key-Pool"),
		IsBlocked:       h.string("X-Key-Status") == "blocked",
		CreatedAt:       h.time("X-Key-Created-At"),
		ExpiresAt:       h.optionalTime("X-Key-Expires-At"),
		BlockedAt:       h.optionalTime("X-Key-Blocked-At"),
		LeaseExpiresAt:  h.optionalTime("X-Key-Lease-Expires-At"),
		LastKeepAliveAt: h.optionalTime("X-Key-Last-Keep-Alive-At"),
		TimesAssigned:   h.int("X-Key-Times-Assigned"),
		Seats:           int(h.int("X-Key-Seats")),
	}
	if h.has("X-Key-Seats-Held") {
		held := int(h.int("X-Key-Seats-Held"))
		k.SeatsHeld = &held
	}
	return k, h.err
}

// DeleteKey deletes the key for good and returns it as it was.
func (c *Client) DeleteKey(ctx context.Context, id string) (Key, error) {
	return c.key(ctx, request{method: http.MethodDelete, path: keyPath(id)})
}

// ReleaseKey frees the key at once. With a lease token, only that lease is
// ended: a token that is not the key's current lease fails with
// ErrLeaseLost and changes nothing. Releasing a free key succeeds.
func (c *Client) ReleaseKey(ctx context.Context, id, leaseToken string) (Key, error) {
	return c.key(ctx, request{method: http.MethodPut, path: keyPath(id), leaseToken: leaseToken})
}

// ReleaseKeyWithCooldown is ReleaseKey, but no claim takes the key before
// the cooldown (at most 24 hours) has passed: release a key that a third
// party rate-limits this way.
func (c *Client) ReleaseKeyWithCooldown(ctx context.Context, id, leaseToken string, cooldown time.Duration) (Key, error) {
	query := url.Values{}
	query.Set("cooldown", strconv.FormatInt(cooldown.Milliseconds(), 10)+"ms")
	return c.key(ctx, request{method: http.MethodPut, path: keyPath(id), query: query, leaseToken: leaseToken})
}

// GetKeySecret returns the key with its secret, while leaseToken is its
// current lease's; another token fails with ErrLeaseLost.
func (c *Client) GetKeySecret(ctx context.Context, id, leaseToken string) (Key, error) {
	return c.key(ctx, request{method: http.MethodGet, path: keyPath(id), leaseToken: leaseToken})
}

// GetKeyByName returns the key of the pool ("" is the default pool) that
// has this name; ErrNotFound when none has.
func (c *Client) GetKeyByName(ctx context.Context, pool, name string) (Key, error) {
	return c.key(ctx, request{method: http.MethodGet, path: keyNamePath(pool, name)})
}

// GetKeySecretByName returns the key of the pool that has this name, with
// its secret, while leaseToken is its current lease's; another token fails
// with ErrLeaseLost.
func (c *Client) GetKeySecretByName(ctx context.Context, pool, name, leaseToken string) (Key, error) {
	return c.key(ctx, request{method: http.MethodGet, path: keyNamePath(pool, name), leaseToken: leaseToken})
}

// DeleteKeyByName deletes the key of the pool ("" is the default pool)
// that has this name, for good, and returns it as it was: how a leaked
// credential is removed without knowing its id. It needs the admin token
// when the server asks for tokens.
func (c *Client) DeleteKeyByName(ctx context.Context, pool, name string) (Key, error) {
	return c.key(ctx, request{method: http.MethodDelete, path: keyNamePath(pool, name)})
}

// KeepAlive resets the key's life and, when it is held, its lease. With a
// lease token, a token that is not the key's current lease fails with
// ErrLeaseLost and changes nothing.
func (c *Client) KeepAlive(ctx context.Context, id, leaseToken string) (Key, error) {
	return c.key(ctx, request{method: http.MethodPut, path: keyPath(id) + "/keepalive", leaseToken: leaseToken})
}

// KeyPage is a page of a pool's keys, in id order.
type KeyPage struct {
	Pool string `json:"pool"`
	Keys []Key  `json:"keys"`
	// NextAfter is the after of the next page; empty on the last page.
	NextAfter string `json:"nextAfter"`
}

// MaxPageSize is the most keys the server puts in one page of ListKeys.
const MaxPageSize = 500

// ListKeys returns a page of the pool's keys ("" is the default pool) in id
// order, without claiming any: at most limit keys (1 to MaxPageSize; 0
// takes the server's default of 50), starting after the key id after ("" for
// the first page). Lease tokens are never shown. It needs the admin token
// when the server asks for tokens.
func (c *Client) ListKeys(ctx context.Context, pool, after string, limit int) (KeyPage, error) {
	query := url.Values{}
	if after != "" {
		query.Set("after", after)
	}
	if limit != 0 {
		query.Set("limit", strconv.Itoa(limit))
	}
	resp, err := c.do(ctx, request{method: http.MethodGet, path: poolPath(pool) + "/keys", query: query})
	if err != nil {
		return KeyPage{}, err
	}
	return decode[KeyPage](resp)
}

// defaultPool is the pool the server uses when a call names none.
const defaultPool = "default"

// Health checks that the server runs (GET /healthz).
func (c *Client) Health(ctx context.Context) error {
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/healthz"})
	return err
}

// Ready checks that the server can serve: its database answers and its
// schema is up to date (GET /readyz). Unlike the other calls it does not
// retry: a 503 is the answer.
func (c *Client) Ready(ctx context.Context) error {
	once := *c
	once.retry.attempts = 1
	_, err := once.do(ctx, request{method: http.MethodGet, path: "/readyz"})
	return err
}

// Metrics returns the server's Prometheus metrics in the text format.
func (c *Client) Metrics(ctx context.Context) (string, error) {
	resp, err := c.do(ctx, request{method: http.MethodGet, path: "/metrics", accept: "text/plain"})
	return string(resp.body), err
}

// key makes a call whose answer is a key.
func (c *Client) key(ctx context.Context, req request) (Key, error) {
	resp, err := c.do(ctx, req)
	if err != nil {
		return Key{}, err
	}
	return decode[Key](resp)
}

func poolQuery(pool string) url.Values {
	q := url.Values{}
	if pool != "" {
		q.Set("pool", pool)
	}
	return q
}

// keyPath escapes the id: it comes from the caller and must stay one path
// segment.
func keyPath(id string) string { return "/keys/" + url.PathEscape(id) }

// keyNamePath is the path of a key by its pool and name.
func keyNamePath(pool, name string) string { return poolPath(pool) + "/keys/" + url.PathEscape(name) }

// headerReader parses headers, keeping the first error.
type headerReader struct {
	header http.Header
	err    error
}

func (h *headerReader) string(name string) string { return h.header.Get(name) }

func (h *headerReader) int(name string) int64 {
	n, err := strconv.ParseInt(h.header.Get(name), 10, 64)
	h.fail(name, err)
	return n
}

func (h *headerReader) has(name string) bool { return strings.TrimSpace(h.header.Get(name)) != "" }

func (h *headerReader) time(name string) time.Time {
	t, err := time.Parse(time.RFC3339, h.header.Get(name))
	h.fail(name, err)
	return t
}

func (h *headerReader) optionalTime(name string) *time.Time {
	if strings.TrimSpace(h.header.Get(name)) == "" {
		return nil
	}
	t := h.time(name)
	return &t
}

func (h *headerReader) fail(name string, err error) {
	if err != nil && h.err == nil {
		h.err = fmt.Errorf("client: header %s of the answer: %w", name, err)
	}
}
