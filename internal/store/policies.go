package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tokenorchestrator/tokenorchestrator/db/dbsqlc"
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

// Effective fills in the server's settings where the policy sets nothing.
func (s *Store) Effective(p Policy) Effective {
	e := Effective{LeaseTTL: s.cfg.LeaseTTL, MaxLeaseTTL: p.MaxLeaseTTL, RequireLeaseToken: p.RequireLeaseToken, MaxWait: MaxWait, Seats: 1}
	if p.Seats != nil {
		e.Seats = *p.Seats
	}
	if !p.KeysStay {
		ttl := s.cfg.KeyTTL
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

// Policy returns the pool's policy; found is false for a pool without one
// (its Policy then sets nothing).
func (s *Store) Policy(ctx context.Context, pool string) (p Policy, found bool, err error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	row, err := s.queries.PoolGet(ctx, pool)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return Policy{Pool: pool}, false, nil
	case err != nil:
		return Policy{}, false, classify(err)
	}
	return policyFromRow(row), true, nil
}

// Policies returns every policy, in pool order.
func (s *Store) Policies(ctx context.Context) ([]Policy, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	rows, err := s.queries.PoolList(ctx)
	if err != nil {
		return nil, classify(err)
	}
	out := make([]Policy, len(rows))
	for i, row := range rows {
		out[i] = policyFromRow(row)
	}
	return out, nil
}

// poolPage is how many keys of a pool one statement changes when a pool
// is changed as a whole: lives set again after a change of the key life,
// or keys deleted with the pool.
const poolPage = 1000

// PutPolicy creates or replaces the pool's policy. A change of the key life
// applies to the pool's live keys at once: each gets the life a keep-alive
// now would give it (none, when keys stay), page by page; rebased counts
// them. Leases keep their deadlines; later claims and keep-alives follow
// the new policy.
func (s *Store) PutPolicy(ctx context.Context, p Policy) (_ Policy, rebased int, _ error) {
	if err := p.Validate(); err != nil {
		return Policy{}, 0, err
	}
	qctx, cancel := s.withTimeout(ctx)
	var put Policy
	changed, err := retryConflicts(qctx, func() (bool, error) {
		return s.putPolicyTx(qctx, p, &put)
	})
	cancel()
	if err != nil {
		return Policy{}, 0, classify(err)
	}
	if !changed {
		return put, 0, nil
	}
	rebased, err = s.rebaseLives(ctx, p.Pool)
	return put, rebased, err
}

// putPolicyTx writes the policy in one transaction, after locking the row
// it replaces, and reports whether the key life changed: a pool without a
// policy had the server's.
func (s *Store) putPolicyTx(ctx context.Context, p Policy, put *Policy) (changed bool, _ error) {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		q := s.queries.WithTx(tx)
		old, err := q.PoolLock(ctx, p.Pool)
		if err != nil {
			return err
		}
		row, err := q.PoolPut(ctx, dbsqlc.PoolPutParams{
			Name: p.Pool, KeyTtl: interval(p.KeyTTL), KeysStay: p.KeysStay, LeaseTtl: interval(p.LeaseTTL),
			MaxLeaseTtl: interval(p.MaxLeaseTTL), RequireLeaseToken: p.RequireLeaseToken, MaxWait: interval(p.MaxWait),
			Seats: seatsArg(p.Seats),
		})
		if err != nil {
			return err
		}
		*put = policyFromRow(row)
		if len(old) == 0 {
			changed = p.KeysStay || p.KeyTTL != nil
		} else {
			was := duration(old[0].KeyTtl)
			changed = old[0].KeysStay != p.KeysStay || (was == nil) != (p.KeyTTL == nil) || was != nil && *was != *p.KeyTTL
		}
		return nil
	})
	return changed, err
}

// rebaseLives sets the life of every live key of the pool again from its
// policy, a page (one short statement) at a time.
func (s *Store) rebaseLives(ctx context.Context, pool string) (int, error) {
	total := 0
	after := uuid.Nil
	for {
		qctx, cancel := s.withTimeout(ctx)
		row, err := retryConflicts(qctx, func() (dbsqlc.KeyRebaseLivesRow, error) {
			return s.queries.KeyRebaseLives(qctx, dbsqlc.KeyRebaseLivesParams{
				Pool: pool, After: after, Max: poolPage, KeyTtlSeconds: s.cfg.KeyTTL.Seconds(),
			})
		})
		cancel()
		if err != nil {
			return total, classify(err)
		}
		total += int(row.Rebased)
		if row.Paged < poolPage {
			return total, nil
		}
		after = row.LastID
	}
}

// DeletePool removes the pool's policy. A pool that still has keys is
// refused (ErrPoolNotEmpty) unless withKeys, which deletes its keys first,
// a page at a time, each as DELETE /keys/{id} would; deleted counts them.
// A pool with neither a policy nor keys is ErrUnknownPool.
func (s *Store) DeletePool(ctx context.Context, pool string, withKeys bool) (deleted int, _ error) {
	if withKeys {
		for {
			qctx, cancel := s.withTimeout(ctx)
			n, err := retryConflicts(qctx, func() (int32, error) {
				return s.queries.KeyDeletePoolPage(qctx, dbsqlc.KeyDeletePoolPageParams{Pool: pool, Max: poolPage})
			})
			cancel()
			if err != nil {
				return deleted, classify(err)
			}
			deleted += int(n)
			if n == 0 {
				break
			}
		}
	}
	qctx, cancel := s.withTimeout(ctx)
	defer cancel()
	row, err := s.queries.PoolDelete(qctx, pool)
	if err != nil {
		return deleted, classify(err)
	}
	if row.Deleted {
		return deleted, nil
	}
	hasKeys, err := s.queries.PoolHasKeys(qctx, pool)
	switch {
	case err != nil:
		return deleted, classify(err)
	case hasKeys:
		return deleted, ErrPoolNotEmpty
	case !row.HadPolicy && deleted == 0:
		return 0, ErrUnknownPool
	}
	return deleted, nil
}

// requiresLeaseToken reports whether the pool's policy requires a lease
// token for releases and keep-alives.
func (s *Store) requiresLeaseToken(ctx context.Context, pool string) (bool, error) {
	p, _, err := s.Policy(ctx, pool)
	return p.RequireLeaseToken, err
}

func policyFromRow(row dbsqlc.Pool) Policy {
	return Policy{
		Pool:              row.Name,
		KeyTTL:            duration(row.KeyTtl),
		KeysStay:          row.KeysStay,
		LeaseTTL:          duration(row.LeaseTtl),
		MaxLeaseTTL:       duration(row.MaxLeaseTtl),
		RequireLeaseToken: row.RequireLeaseToken,
		MaxWait:           duration(row.MaxWait),
		Seats:             seatsOf(row.Seats),
		CreatedAt:         row.CreatedAt,
		UpdatedAt:         row.UpdatedAt,
	}
}

func seatsArg(n *int) *int32 {
	if n == nil {
		return nil
	}
	v := int32(*n)
	return &v
}

func seatsOf(n *int32) *int {
	if n == nil {
		return nil
	}
	v := int(*n)
	return &v
}

// interval is a duration as PostgreSQL's interval; nil is NULL.
func interval(d *time.Duration) pgtype.Interval {
	if d == nil {
		return pgtype.Interval{}
	}
	return pgtype.Interval{Microseconds: d.Microseconds(), Valid: true}
}

// duration is an interval as a duration; NULL is nil. Policies write
// intervals in microseconds only, but a day or month set by hand counts
// as 24 hours or 30 days.
func duration(i pgtype.Interval) *time.Duration {
	if !i.Valid {
		return nil
	}
	d := time.Duration(i.Microseconds)*time.Microsecond +
		time.Duration(i.Days)*24*time.Hour + time.Duration(i.Months)*30*24*time.Hour
	return &d
}

// GetByName returns the live key of the pool with this name.
func (s *Store) GetByName(ctx context.Context, pool, name string) (Key, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	row, err := s.queries.KeyGetByName(ctx, dbsqlc.KeyGetByNameParams{Pool: pool, Name: name})
	if err != nil {
		return Key{}, classify(err)
	}
	return fromRow(dbsqlc.KeyGetRow(row)), nil
}
