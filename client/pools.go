package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// Policy is a pool's policy: only what it sets. A nil duration is unset,
// and the server's setting applies; a pool without a policy behaves as one
// whose policy sets nothing.
type Policy struct {
	// KeyTTL is a key's life after its creation or last keep-alive (at
	// most 10 years); nil leaves it to the server's KEY_TTL, unless
	// KeysStay.
	KeyTTL *time.Duration
	// KeysStay: keys live until deleted (keyTTL null on the wire). It
	// excludes KeyTTL.
	KeysStay bool
	// LeaseTTL is a lease's length after its claim or last keep-alive (at
	// most 7 days).
	LeaseTTL *time.Duration
	// MaxLeaseTTL is the longest a lease may last from its claim,
	// keep-alives included (at most 30 days).
	MaxLeaseTTL *time.Duration
	// RequireLeaseToken: releases and keep-alives without the lease token
	// fail with ErrLeaseTokenRequired instead of acting on the current
	// lease.
	RequireLeaseToken bool
	// MaxWait is the longest a claim may wait for a free key (at most
	// MaxWait); a longer wait is cut to it.
	MaxWait *time.Duration
	// Seats of the pool's new keys unless a key names its own (1 to 1000):
	// how many leases may hold each at once; 0 leaves it unset (1).
	Seats int
}

// MarshalJSON writes the policy as the server does: only the fields it
// sets, durations as Go writes them (e.g. "2m0s"), keyTTL null for keys
// that stay.
func (p Policy) MarshalJSON() ([]byte, error) {
	if p.KeysStay && p.KeyTTL != nil {
		return nil, errors.New("client: a policy's KeyTTL and KeysStay exclude each other")
	}
	fields := map[string]any{}
	switch {
	case p.KeysStay:
		fields["keyTTL"] = nil
	case p.KeyTTL != nil:
		fields["keyTTL"] = p.KeyTTL.String()
	}
	for name, d := range map[string]*time.Duration{"leaseTTL": p.LeaseTTL, "maxLeaseTTL": p.MaxLeaseTTL, "maxWait": p.MaxWait} {
		if d != nil {
			fields[name] = d.String()
		}
	}
	if p.RequireLeaseToken {
		fields["requireLeaseToken"] = true
	}
	if p.Seats != 0 {
		fields["seats"] = p.Seats
	}
	return json.Marshal(fields)
}

// UnmarshalJSON reads a policy as the server writes it; a keyTTL of null
// is KeysStay.
func (p *Policy) UnmarshalJSON(raw []byte) error {
	var fields struct {
		KeyTTL            json.RawMessage `json:"keyTTL"`
		LeaseTTL          *string         `json:"leaseTTL"`
		MaxLeaseTTL       *string         `json:"maxLeaseTTL"`
		RequireLeaseToken bool            `json:"requireLeaseToken"`
		MaxWait           *string         `json:"maxWait"`
		Seats             int             `json:"seats"`
	}
	if err := json.Unmarshal(raw, &fields); err != nil {
		return err
	}
	*p = Policy{RequireLeaseToken: fields.RequireLeaseToken, Seats: fields.Seats}
	var err error
	switch {
	case fields.KeyTTL == nil:
	case bytes.Equal(fields.KeyTTL, []byte("null")):
		p.KeysStay = true
	default:
		var text string
		if err := json.Unmarshal(fields.KeyTTL, &text); err != nil {
			return fmt.Errorf("keyTTL: %w", err)
		}
		if p.KeyTTL, err = parseDuration("keyTTL", &text); err != nil {
			return err
		}
	}
	if p.LeaseTTL, err = parseDuration("leaseTTL", fields.LeaseTTL); err != nil {
		return err
	}
	if p.MaxLeaseTTL, err = parseDuration("maxLeaseTTL", fields.MaxLeaseTTL); err != nil {
		return err
	}
	p.MaxWait, err = parseDuration("maxWait", fields.MaxWait)
	return err
}

// EffectivePolicy is what applies to a pool: its policy, and the server's
// settings where the policy sets nothing.
type EffectivePolicy struct {
	// KeyTTL is nil when keys stay until deleted.
	KeyTTL   *time.Duration
	LeaseTTL time.Duration
	// MaxLeaseTTL is nil when nothing but keep-alives bounds a lease.
	MaxLeaseTTL       *time.Duration
	RequireLeaseToken bool
	MaxWait           time.Duration
	// Seats of the pool's new keys unless a key names its own.
	Seats int
}

type effectiveJSON struct {
	KeyTTL            *string `json:"keyTTL"`
	LeaseTTL          string  `json:"leaseTTL"`
	MaxLeaseTTL       *string `json:"maxLeaseTTL"`
	RequireLeaseToken bool    `json:"requireLeaseToken"`
	MaxWait           string  `json:"maxWait"`
	Seats             int     `json:"seats"`
}

// MarshalJSON writes what applies as the server does.
func (e EffectivePolicy) MarshalJSON() ([]byte, error) {
	return json.Marshal(effectiveJSON{
		KeyTTL: durationText(e.KeyTTL), LeaseTTL: e.LeaseTTL.String(), MaxLeaseTTL: durationText(e.MaxLeaseTTL),
		RequireLeaseToken: e.RequireLeaseToken, MaxWait: e.MaxWait.String(), Seats: e.Seats,
	})
}

// UnmarshalJSON reads what applies as the server writes it.
func (e *EffectivePolicy) UnmarshalJSON(raw []byte) error {
	var fields effectiveJSON
	if err := json.Unmarshal(raw, &fields); err != nil {
		return err
	}
	*e = EffectivePolicy{RequireLeaseToken: fields.RequireLeaseToken, Seats: fields.Seats}
	var err error
	if e.KeyTTL, err = parseDuration("keyTTL", fields.KeyTTL); err != nil {
		return err
	}
	if e.MaxLeaseTTL, err = parseDuration("maxLeaseTTL", fields.MaxLeaseTTL); err != nil {
		return err
	}
	leaseTTL, err := parseDuration("leaseTTL", &fields.LeaseTTL)
	if err != nil {
		return err
	}
	maxWait, err := parseDuration("maxWait", &fields.MaxWait)
	if err != nil {
		return err
	}
	e.LeaseTTL, e.MaxWait = *leaseTTL, *maxWait
	return nil
}

// Pool is a pool as the server describes it: its policy, what applies, and
// its counts.
type Pool struct {
	Name string
	// HasPolicy: the pool has a policy of its own (from PutPool, or from an
	// import of secrets into a pool that had none). Without one, Policy is
	// empty and the server's settings apply.
	HasPolicy bool
	Policy    Policy
	Effective EffectivePolicy
	// Keys counts the pool's live keys, Seats their seats (as many as keys
	// when each has one); Free and Held split the seats.
	Keys, Seats, Free, Held int64
	// CreatedAt and UpdatedAt are the policy's; nil without one.
	CreatedAt, UpdatedAt *time.Time
	// KeysRebased is set by PutPool: how many of the pool's keys got the
	// new key life.
	KeysRebased int
}

type poolJSON struct {
	Pool        string          `json:"pool"`
	HasPolicy   bool            `json:"hasPolicy"`
	Policy      Policy          `json:"policy"`
	Effective   EffectivePolicy `json:"effective"`
	Keys        int64           `json:"keys"`
	Seats       int64           `json:"seats"`
	Free        int64           `json:"free"`
	Held        int64           `json:"held"`
	CreatedAt   *string         `json:"createdAt"`
	UpdatedAt   *string         `json:"updatedAt"`
	KeysRebased int             `json:"keysRebased,omitempty"`
}

// MarshalJSON writes the pool as the server does, so that the command line
// can show what the server said.
func (p Pool) MarshalJSON() ([]byte, error) {
	return json.Marshal(poolJSON{
		Pool: p.Name, HasPolicy: p.HasPolicy, Policy: p.Policy, Effective: p.Effective,
		Keys: p.Keys, Seats: p.Seats, Free: p.Free, Held: p.Held,
		CreatedAt: formatTime(p.CreatedAt), UpdatedAt: formatTime(p.UpdatedAt), KeysRebased: p.KeysRebased,
	})
}

// UnmarshalJSON reads a pool as the server writes it.
func (p *Pool) UnmarshalJSON(raw []byte) error {
	var fields poolJSON
	if err := json.Unmarshal(raw, &fields); err != nil {
		return err
	}
	*p = Pool{
		Name: fields.Pool, HasPolicy: fields.HasPolicy, Policy: fields.Policy, Effective: fields.Effective,
		Keys: fields.Keys, Seats: fields.Seats, Free: fields.Free, Held: fields.Held, KeysRebased: fields.KeysRebased,
	}
	var err error
	if p.CreatedAt, err = parseTime("createdAt", fields.CreatedAt); err != nil {
		return err
	}
	p.UpdatedAt, err = parseTime("updatedAt", fields.UpdatedAt)
	return err
}

// PutPool gives the pool ("" is the default pool) its policy, replacing
// the one it had: a field the policy leaves unset falls back to the
// server's setting. A new key life applies to the pool's live keys at
// once (Pool.KeysRebased counts them); running leases keep their
// deadlines. It needs the admin token when the server asks for tokens.
func (c *Client) PutPool(ctx context.Context, pool string, policy Policy) (Pool, error) {
	if policy.KeysStay && policy.KeyTTL != nil {
		return Pool{}, errors.New("client: a policy's KeyTTL and KeysStay exclude each other")
	}
	resp, err := c.do(ctx, request{method: http.MethodPut, path: poolPath(pool), body: policy})
	if err != nil {
		return Pool{}, err
	}
	return decode[Pool](resp)
}

// GetPool returns the pool ("" is the default pool) with its policy and
// counts; a pool with neither keys nor a policy fails with ErrUnknownPool
// (404 unknown_pool).
func (c *Client) GetPool(ctx context.Context, pool string) (Pool, error) {
	resp, err := c.do(ctx, request{method: http.MethodGet, path: poolPath(pool)})
	if err != nil {
		return Pool{}, err
	}
	return decode[Pool](resp)
}

// ListPools returns every pool that has keys or a policy, in name order.
func (c *Client) ListPools(ctx context.Context) ([]Pool, error) {
	resp, err := c.do(ctx, request{method: http.MethodGet, path: "/pools"})
	if err != nil {
		return nil, err
	}
	list, err := decode[struct {
		Pools []Pool `json:"pools"`
	}](resp)
	return list.Pools, err
}

// DeletePool removes the pool's policy and returns how many keys it
// deleted. A pool that still has keys fails with ErrPoolNotEmpty unless
// deleteKeys, which deletes them for good first (their secrets too); a
// pool with neither keys nor a policy fails with ErrUnknownPool.
func (c *Client) DeletePool(ctx context.Context, pool string, deleteKeys bool) (int, error) {
	query := url.Values{}
	if deleteKeys {
		query.Set("deleteKeys", "true")
	}
	resp, err := c.do(ctx, request{method: http.MethodDelete, path: poolPath(pool), query: query})
	if err != nil {
		return 0, err
	}
	deleted, err := decode[struct {
		DeletedKeys int `json:"deletedKeys"`
	}](resp)
	return deleted.DeletedKeys, err
}

// poolPath is the path of a pool; the name comes from the caller and must
// stay one path segment.
func poolPath(pool string) string {
	if pool == "" {
		pool = defaultPool
	}
	return "/pools/" + url.PathEscape(pool)
}

// durationText writes a duration as the server does, nil as null.
func durationText(d *time.Duration) *string {
	if d == nil {
		return nil
	}
	s := d.String()
	return &s
}

// parseDuration reads a duration of the server's answer, nil for null.
func parseDuration(name string, text *string) (*time.Duration, error) {
	if text == nil {
		return nil, nil
	}
	d, err := time.ParseDuration(*text)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &d, nil
}

// formatTime writes a time as the server does, nil as null.
func formatTime(t *time.Time) *string {
	if t == nil {
		return nil
	}
	s := t.UTC().Format(timeFormat)
	return &s
}

// parseTime reads a time of the server's answer, nil for null.
func parseTime(name string, text *string) (*time.Time, error) {
	if text == nil {
		return nil, nil
	}
	t, err := time.Parse(time.RFC3339, *text)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &t, nil
}
