package store

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tokenorchestrator/tokenorchestrator/db/dbsqlc"
	"github.com/tokenorchestrator/tokenorchestrator/internal/lease"
)

// Effective is the policy with this store's key life and lease length
// filled in where it sets nothing.
func (s *Store) Effective(p lease.Policy) lease.Effective {
	return p.Effective(s.cfg.KeyTTL, s.cfg.LeaseTTL)
}

// Policy returns the pool's policy; found is false for a pool without one
// (its Policy then sets nothing).
func (s *Store) Policy(ctx context.Context, pool string) (p lease.Policy, found bool, err error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	row, err := s.queries.PoolGet(ctx, pool)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return lease.Policy{Pool: pool}, false, nil
	case err != nil:
		return lease.Policy{}, false, classify(err)
	}
	return policyFromRow(row), true, nil
}

// Policies returns every policy, in pool order.
func (s *Store) Policies(ctx context.Context) ([]lease.Policy, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	rows, err := s.queries.PoolList(ctx)
	if err != nil {
		return nil, classify(err)
	}
	out := make([]lease.Policy, len(rows))
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
func (s *Store) PutPolicy(ctx context.Context, p lease.Policy) (_ lease.Policy, rebased int, _ error) {
	if err := p.Validate(); err != nil {
		return lease.Policy{}, 0, err
	}
	qctx, cancel := s.withTimeout(ctx)
	var put lease.Policy
	changed, err := retryConflicts(qctx, func() (bool, error) {
		return s.putPolicyTx(qctx, p, &put)
	})
	cancel()
	if err != nil {
		return lease.Policy{}, 0, classify(err)
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
func (s *Store) putPolicyTx(ctx context.Context, p lease.Policy, put *lease.Policy) (changed bool, _ error) {
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
// refused (lease.ErrPoolNotEmpty) unless withKeys, which deletes its keys
// first, a page at a time, each as DELETE /keys/{id} would; deleted counts
// them. A pool with neither a policy nor keys is lease.ErrUnknownPool.
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
		return deleted, lease.ErrPoolNotEmpty
	case !row.HadPolicy && deleted == 0:
		return 0, lease.ErrUnknownPool
	}
	return deleted, nil
}

// requiresLeaseToken reports whether the pool's policy requires a lease
// token for releases and keep-alives.
func (s *Store) requiresLeaseToken(ctx context.Context, pool string) (bool, error) {
	p, _, err := s.Policy(ctx, pool)
	return p.RequireLeaseToken, err
}

func policyFromRow(row dbsqlc.Pool) lease.Policy {
	return lease.Policy{
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
func (s *Store) GetByName(ctx context.Context, pool, name string) (lease.Key, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	row, err := s.queries.KeyGetByName(ctx, dbsqlc.KeyGetByNameParams{Pool: pool, Name: name})
	if err != nil {
		return lease.Key{}, classify(err)
	}
	return fromRow(dbsqlc.KeyGetRow(row)), nil
}
