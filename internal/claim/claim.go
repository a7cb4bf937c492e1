// Package claim lends out keys: the one path of every claim, plain,
// labelled or idempotent, with or without a wait, between the HTTP handler
// and the store. It caps a wait at the pool's policy, waits in this
// replica's line (the wake-up hub), answers a pool without keys at once,
// gives back a key whose caller left before it got it, and counts claims
// and waits in the metrics.
package claim

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tokenorchestrator/tokenorchestrator/internal/lease"
	"github.com/tokenorchestrator/tokenorchestrator/internal/metrics"
	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
	"github.com/tokenorchestrator/tokenorchestrator/internal/wakeup"
)

// Errors that refuse or end a wait: the replica is shutting down, or it
// has as many waiting clients, or waited pools, as it takes. Nothing was
// claimed; the caller may retry, on another replica or without a wait.
var (
	ErrClosed         = wakeup.ErrClosed
	ErrTooManyWaiters = wakeup.ErrTooManyWaiters
	ErrTooManyPools   = wakeup.ErrTooManyPools
)

// Request is one claim.
type Request struct {
	Pool string
	// Labels ("name=value") the key must carry, every one; the first is
	// the one whose index the claim walks.
	Labels []string
	// Wait is the longest to wait for a free key (lease.MaxWait at most);
	// zero answers at once. The pool's policy may shorten it.
	Wait time.Duration
	// IdempotencyKey, when set, makes the claim idempotent: a repeat
	// answers the lease claimed under it (store.ClaimIdempotent).
	IdempotencyKey string
}

// Config describes a Service.
type Config struct {
	Store *store.Store
	// Waiters is the replica's hub over Store, started and closed by its
	// owner; closing it answers every waiting claim ErrClosed.
	Waiters *wakeup.Hub
	// Metrics counts claims and waits; nil counts nothing.
	Metrics *metrics.Metrics
}

// Service claims keys.
type Service struct {
	store   *store.Store
	waiters *wakeup.Hub
	metrics *metrics.Metrics
}

// New returns the service.
func New(cfg Config) *Service {
	return &Service{store: cfg.Store, waiters: cfg.Waiters, metrics: cfg.Metrics}
}

// Claim claims a key of the pool under a new lease, or, for a repeat of an
// idempotent claim, answers the lease claimed before (replayed). It
// returns lease.ErrNoFreeKey when no key was free (within the wait), and an
// error wrapping lease.ErrUnknownPool, at once, for a pool without keys or
// policy.
func (s *Service) Claim(ctx context.Context, req Request) (key lease.Key, replayed bool, err error) {
	wait, err := s.waitFor(ctx, req)
	if err != nil {
		return lease.Key{}, false, err
	}
	if wait > 0 {
		key, replayed, err = s.wait(ctx, req, wait)
	} else {
		key, replayed, err = s.claimNow(ctx, req)
	}
	// A repeat answers a lease counted when it was claimed.
	s.observeClaim(req.Pool, err, !replayed)
	if err == nil && ctx.Err() != nil && req.IdempotencyKey == "" {
		// The caller left while its key was being claimed: nobody will use
		// this lease, so give it back rather than leave it held until it
		// runs out. An idempotent lease stays: it is recorded, and the
		// repeat that a client or proxy sends after losing an answer must
		// find it held.
		s.store.ReleaseAbandoned(key)
		return lease.Key{}, false, ctx.Err()
	}
	return key, replayed, err
}

// waitFor returns how long the claim may wait: as asked, or less if the
// pool's policy says so.
func (s *Service) waitFor(ctx context.Context, req Request) (time.Duration, error) {
	if req.Wait <= 0 {
		return 0, nil
	}
	p, _, err := s.store.Policy(ctx, req.Pool)
	if err != nil {
		return 0, err
	}
	if p.MaxWait != nil && *p.MaxWait < req.Wait {
		return *p.MaxWait, nil
	}
	return req.Wait, nil
}

// claimNow claims without waiting; only a claim that found no key asks
// whether the pool exists, which costs a statement.
func (s *Service) claimNow(ctx context.Context, req Request) (key lease.Key, replayed bool, err error) {
	if req.IdempotencyKey != "" {
		key, replayed, err = s.store.ClaimIdempotent(ctx, req.Pool, req.IdempotencyKey, req.Labels...)
	} else {
		key, err = s.store.Claim(ctx, req.Pool, req.Labels...)
	}
	if errors.Is(err, lease.ErrNoFreeKey) {
		err = cmp.Or(s.requireKnownPool(ctx, req.Pool), err)
	}
	return key, replayed, err
}

// wait claims in this replica's line of waiters. Nothing is claimed before
// the claim takes its place in line, so that it never takes a key ahead of
// earlier waiters; what it must know first is asked of the database
// without claiming: whether it repeats an idempotent claim, which needs no
// wait, and whether the pool exists, as a pool without keys is never
// waited for. Both are asked again when the wait ends with nothing: a
// copy of the claim may have been served on another replica, and the
// pool's keys may have been deleted meanwhile.
func (s *Service) wait(ctx context.Context, req Request, wait time.Duration) (key lease.Key, replayed bool, err error) {
	defer s.observeWait(time.Now(), &err)
	if key, ok, err := s.repeat(ctx, req); ok {
		return key, err == nil, err
	}
	if err := s.requireKnownPool(ctx, req.Pool); err != nil {
		return lease.Key{}, false, err
	}
	key, replayed, err = s.waiters.WaitFor(ctx, req.Pool, wait, wakeup.Want{Labels: req.Labels, IdempotencyKey: req.IdempotencyKey})
	if !errors.Is(err, lease.ErrNoFreeKey) {
		return key, replayed, err
	}
	if key, ok, err := s.repeat(ctx, req); ok {
		return key, err == nil, err
	}
	return lease.Key{}, false, cmp.Or(s.requireKnownPool(ctx, req.Pool), err)
}

// repeat answers the lease recorded under the claim's idempotency key, or
// lease.ErrIdempotencyKeyReused; ok is false when nothing is recorded, or
// the claim has no idempotency key.
func (s *Service) repeat(ctx context.Context, req Request) (key lease.Key, ok bool, err error) {
	if req.IdempotencyKey == "" {
		return lease.Key{}, false, nil
	}
	key, err = s.store.RecordedClaim(ctx, req.Pool, req.IdempotencyKey)
	if errors.Is(err, store.ErrNoClaimRecorded) {
		return lease.Key{}, false, nil
	}
	return key, true, err
}

// unknownPoolError is lease.ErrUnknownPool naming the pool; its text is
// what the client is told.
type unknownPoolError struct{ pool string }

func (e unknownPoolError) Error() string {
	return fmt.Sprintf("pool %q has no keys and no policy: check its name. A claim on such a pool never waits.", e.pool)
}

func (e unknownPoolError) Unwrap() error { return lease.ErrUnknownPool }

// requireKnownPool answers lease.ErrUnknownPool, naming the pool, when the
// pool has no keys and no policy.
func (s *Service) requireKnownPool(ctx context.Context, pool string) error {
	known, err := s.store.PoolKnown(ctx, pool)
	switch {
	case err != nil:
		return err
	case !known:
		return unknownPoolError{pool}
	}
	return nil
}

// observeClaim counts a claim's answer in the pool's metrics: a key handed
// out (when counted, i.e. not an idempotent repeat) or none free.
func (s *Service) observeClaim(pool string, err error, counted bool) {
	switch {
	case s.metrics == nil:
	case err == nil:
		if counted {
			s.metrics.ObserveClaim(pool)
		}
	case errors.Is(err, lease.ErrNoFreeKey):
		s.metrics.ObserveNoFreeKey(pool)
	}
}

// observeWait records how long a claim with a wait waited and how it ended.
func (s *Service) observeWait(start time.Time, err *error) {
	if s.metrics == nil {
		return
	}
	outcome := metrics.WaitClaimed
	switch {
	case errors.Is(*err, lease.ErrUnknownPool):
		outcome = metrics.WaitUnknownPool
	case errors.Is(*err, lease.ErrNoFreeKey):
		outcome = metrics.WaitNoFreeKey
	case *err != nil:
		outcome = metrics.WaitError
	}
	s.metrics.ObserveWait(outcome, time.Since(start))
}
