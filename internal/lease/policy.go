package lease

import (
	"errors"
	"fmt"
	"time"
)

// Errors about pools and their policies.
var (
	// ErrPoolNotEmpty: a pool that still has keys was asked to be deleted
	// without them.
	ErrPoolNotEmpty = errors.New("the pool still has keys")
	// ErrInvalidPolicy: a policy's value is out of its range.
	ErrInvalidPolicy = errors.New("invalid policy")
	// ErrLeaseTokenRequired: the key's pool requires a lease token for
	// releases and keep-alives, and none was given. Nothing was changed.
	ErrLeaseTokenRequired = errors.New("the pool requires a lease token")
	// ErrSeatLeaseRequired: a release without a lease token on a key of
	// several seats, which has a lease per seat. Nothing was changed.
	ErrSeatLeaseRequired = fmt.Errorf("%w: the key has several seats, each with its own lease", ErrLeaseTokenRequired)
)

// Bounds of a policy's values.
const (
	MaxPolicyKeyTTL   = 10 * 365 * 24 * time.Hour
	MaxPolicyLeaseTTL = 7 * 24 * time.Hour
	// MaxPolicyMaxLeaseTTL bounds the longest lease a policy may allow.
	MaxPolicyMaxLeaseTTL = 30 * 24 * time.Hour
	// MaxWait is the longest a claim may wait for a free key (the API's
	// bound on ?wait=); a policy may only shorten it.
	MaxWait = 60 * time.Second
)

// Policy is a pool's policy. A nil duration is unset: the server's setting
// applies. A pool without a policy behaves as one whose policy sets
// nothing.
type Policy struct {
	Pool string
	// KeyTTL is the key's life after its creation or last keep-alive.
	KeyTTL *time.Duration
	// KeysStay: keys live until deleted. Excludes KeyTTL.
	KeysStay bool
	// LeaseTTL is a lease's length after its claim or last keep-alive.
	LeaseTTL *time.Duration
	// MaxLeaseTTL is the longest a lease may last from its claim,
	// keep-alives included; nil: no bound.
	MaxLeaseTTL *time.Duration
	// RequireLeaseToken: releases and keep-alives must name the lease.
	RequireLeaseToken bool
	// MaxWait is the longest a claim may wait for a free key.
	MaxWait *time.Duration
	// Seats is how many leases may hold each new key of the pool at once,
	// unless the key names its own; nil: 1.
	Seats *int
	// CreatedAt and UpdatedAt are zero for a pool without a policy.
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Effective is a policy with the server's settings filled in.
type Effective struct {
	// KeyTTL is nil when keys stay.
	KeyTTL   *time.Duration
	LeaseTTL time.Duration
	// MaxLeaseTTL is nil when leases have no bound.
	MaxLeaseTTL       *time.Duration
	RequireLeaseToken bool
	MaxWait           time.Duration
	// Seats of the pool's new keys, unless a key names its own.
	Seats int
}

// Effective fills in the server's settings, its key life keyTTL and lease
// length leaseTTL, where the policy sets nothing.
func (p Policy) Effective(keyTTL, leaseTTL time.Duration) Effective {
	e := Effective{LeaseTTL: leaseTTL, MaxLeaseTTL: p.MaxLeaseTTL, RequireLeaseToken: p.RequireLeaseToken, MaxWait: MaxWait, Seats: 1}
	if p.Seats != nil {
		e.Seats = *p.Seats
	}
	if !p.KeysStay {
		ttl := keyTTL
		if p.KeyTTL != nil {
			ttl = *p.KeyTTL
		}
		e.KeyTTL = &ttl
	}
	if p.LeaseTTL != nil {
		e.LeaseTTL = *p.LeaseTTL
	}
	if p.MaxLeaseTTL != nil && *p.MaxLeaseTTL < e.LeaseTTL {
		e.LeaseTTL = *p.MaxLeaseTTL
	}
	if p.MaxWait != nil {
		e.MaxWait = *p.MaxWait
	}
	return e
}

// Validate checks the policy's values against their bounds.
func (p Policy) Validate() error {
	check := func(name string, d *time.Duration, min, max time.Duration) error {
		if d != nil && (*d < min || *d > max) {
			return fmt.Errorf("%w: %s must be between %s and %s, got %s", ErrInvalidPolicy, name, min, max, *d)
		}
		return nil
	}
	return errors.Join(
		check("keyTTL", p.KeyTTL, time.Millisecond, MaxPolicyKeyTTL),
		check("leaseTTL", p.LeaseTTL, time.Millisecond, MaxPolicyLeaseTTL),
		check("maxLeaseTTL", p.MaxLeaseTTL, time.Millisecond, MaxPolicyMaxLeaseTTL),
		check("maxWait", p.MaxWait, 0, MaxWait),
		func() error {
			if p.Seats != nil && (*p.Seats < 1 || *p.Seats > MaxSeats) {
				return fmt.Errorf("%w: seats must be between 1 and %d, got %d", ErrInvalidPolicy, MaxSeats, *p.Seats)
			}
			if p.KeysStay && p.KeyTTL != nil {
				return fmt.Errorf("%w: keys either stay or have a keyTTL", ErrInvalidPolicy)
			}
			if p.LeaseTTL != nil && p.MaxLeaseTTL != nil && *p.LeaseTTL > *p.MaxLeaseTTL {
				return fmt.Errorf("%w: leaseTTL (%s) must not exceed maxLeaseTTL (%s)", ErrInvalidPolicy, *p.LeaseTTL, *p.MaxLeaseTTL)
			}
			return nil
		}(),
	)
}
