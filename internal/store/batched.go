package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/trace"

	"github.com/tokenorchestrator/tokenorchestrator/db/dbsqlc"
	"github.com/tokenorchestrator/tokenorchestrator/internal/batch"
	"github.com/tokenorchestrator/tokenorchestrator/internal/lease"
)

// leaseRequest names a key and, optionally, the lease a call must act on.
type leaseRequest struct {
	id    uuid.UUID
	token *int64
	// caller is the span of the request, linked from the batch's.
	caller trace.SpanContext
	// cooldown, for a release: how long the key stays unclaimable after it.
	cooldown time.Duration
}

// leaseCallers yields the spans of the requests of a batch.
func leaseCallers(reqs []leaseRequest) func(func(trace.SpanContext) bool) {
	return func(yield func(trace.SpanContext) bool) {
		for _, req := range reqs {
			if !yield(req.caller) {
				return
			}
		}
	}
}

// KeepAlive resets the key's life. Without a lease token it does nothing
// else, even when the key is held; with one, it also extends that lease,
// and acts only if the lease is the key's current one and still running
// (lease.ErrLeaseMismatch otherwise, changing nothing).
// Keep-alives that arrive together on this replica share one statement.
func (s *Store) KeepAlive(ctx context.Context, id uuid.UUID, leaseToken *int64) (lease.Key, error) {
	return queued(s, ctx, s.keepAlives, struct{}{}, leaseRequest{id: id, token: leaseToken, caller: trace.SpanContextFromContext(ctx)})
}

// Release frees the key at once. It is idempotent: releasing a free key
// returns it unchanged. With a lease token, a held key is released only
// if that lease is its current one. Releases that arrive together on this
// replica share one statement.
func (s *Store) Release(ctx context.Context, id uuid.UUID, leaseToken *int64) (lease.Key, error) {
	return queued(s, ctx, s.releases, struct{}{}, leaseRequest{id: id, token: leaseToken, caller: trace.SpanContextFromContext(ctx)})
}

// ReleaseWithCooldown is Release, but the key released stays out of every
// claim until the cooldown (at most lease.MaxCooldown) has passed; the
// background job then makes it claimable again and wakes waiting clients.
// A free key is returned unchanged, as by Release.
func (s *Store) ReleaseWithCooldown(ctx context.Context, id uuid.UUID, leaseToken *int64, cooldown time.Duration) (lease.Key, error) {
	if cooldown < 0 || cooldown > lease.MaxCooldown {
		return lease.Key{}, fmt.Errorf("%w: %s is not between 0 and %s", lease.ErrInvalidCooldown, cooldown, lease.MaxCooldown)
	}
	return queued(s, ctx, s.releases, struct{}{}, leaseRequest{id: id, token: leaseToken, cooldown: cooldown, caller: trace.SpanContextFromContext(ctx)})
}

// queued makes a batched call with the request's whole wait bounded by
// QueryTimeout, as a call of its own is: queued behind a batch that the
// database does not answer, a request would otherwise wait for that
// batch's timeout and then for its own. Given up, it answers
// lease.ErrUnavailable and is left out of the batches to come.
func queued[K comparable, Req any](s *Store, ctx context.Context, c *batch.Coalescer[K, Req, lease.Key], key K, req Req) (lease.Key, error) {
	bounded, cancel := s.withTimeout(ctx)
	defer cancel()
	k, err := c.Do(bounded, key, req)
	if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		err = classify(err)
	}
	return k, err
}

func (s *Store) runClaims(ctx context.Context, target claimTarget, reqs []trace.SpanContext) []batch.Result[lease.Key] {
	ctx, span := s.startBatch(ctx, "store.ClaimBatch", slices.Values(reqs))
	defer span.End()
	keys, err := s.ClaimManyLabelled(ctx, target.pool, len(reqs), target.labelList())
	results := make([]batch.Result[lease.Key], len(reqs))
	for i := range results {
		switch {
		case i < len(keys):
			results[i].Value = keys[i]
		case err != nil:
			results[i].Err = err
		default:
			results[i].Err = lease.ErrNoFreeKey
		}
	}
	return results
}

// ReleaseAbandoned releases a key claimed for a caller that left before it
// got it: nobody will use that lease. A failure is only logged: the lease
// then ends by itself after LeaseTTL.
func (s *Store) ReleaseAbandoned(key lease.Key) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.QueryTimeout)
	defer cancel()
	if _, err := s.Release(ctx, key.ID, key.LeaseToken); err != nil {
		slog.Warn("could not release a key claimed for a caller that left", "key_id", key.ID, "error", err)
	}
}

func (s *Store) runKeepAlives(ctx context.Context, _ struct{}, reqs []leaseRequest) []batch.Result[lease.Key] {
	ctx, span := s.startBatch(ctx, "store.KeepAliveBatch", leaseCallers(reqs))
	defer span.End()
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	ids, tokens := leaseArgs(reqs)
	rows, err := retryConflicts(ctx, func() ([]dbsqlc.KeyKeepAliveManyRow, error) {
		return s.queries.KeyKeepAliveMany(ctx, dbsqlc.KeyKeepAliveManyParams{
			Ids:             ids,
			LeaseTokens:     tokens,
			KeyTtlSeconds:   s.cfg.KeyTTL.Seconds(),
			LeaseTtlSeconds: s.cfg.LeaseTTL.Seconds(),
		})
	})
	if err != nil {
		return failAll[lease.Key](len(reqs), classify(err))
	}
	kept := make(map[uuid.UUID][]changedKey, len(rows))
	for _, row := range rows {
		key := fromRow(dbsqlc.KeyGetRow{
			ID: row.ID, Pool: row.Pool, CreatedAt: row.CreatedAt,
			ExpiresAt: row.ExpiresAt, LastKeepAliveAt: row.LastKeepAliveAt, Labels: row.Labels, Name: row.Name, SecretHint: row.SecretHint,
			Seats: row.Seats, SeatsHeld: row.SeatsHeld,
			TimesAssigned: row.TimesAssigned, LeaseToken: row.LeaseToken,
			BlockedAt: row.BlockedAt, LeaseExpiresAt: row.LeaseExpiresAt, CoolingUntil: row.CoolingUntil,
		})
		// A row answers a keep-alive without a token, which resets the
		// key's life as each keep-alive of the key does, unless the pool
		// requires a token (then the row is a lease's only). It is shown
		// the key, and for a key of several seats no lease (it has no one
		// lease; the row carries seat 0's, or the one another request
		// extended). A row extended under a lease answers that lease's too.
		if row.TokenlessKept {
			whole := key
			if key.Seats > 1 {
				whole.LeaseToken, whole.ClaimedAt, whole.LeaseExpiresAt, whole.CoolingUntil = nil, nil, nil, nil
			}
			kept[row.ID] = append(kept[row.ID], changedKey{key: whole})
		}
		if row.ExtendedLeaseToken != nil {
			kept[row.ID] = append(kept[row.ID], changedKey{key: key, lease: row.ExtendedLeaseToken})
		}
	}
	return s.settle(ctx, reqs, kept, func(req leaseRequest, current lease.Key) (lease.Key, error) {
		if req.token == nil {
			// A keep-alive without a token always resets a live key's
			// life, unless its pool requires a token.
			return lease.Key{}, lease.ErrLeaseTokenRequired
		}
		// Not kept alive although the key lives: the token names a lease
		// that is not the current one, or one whose deadline has passed.
		return lease.Key{}, lease.ErrLeaseMismatch
	})
}

func (s *Store) runReleases(ctx context.Context, _ struct{}, reqs []leaseRequest) []batch.Result[lease.Key] {
	ctx, span := s.startBatch(ctx, "store.ReleaseBatch", leaseCallers(reqs))
	defer span.End()
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	ids, tokens := leaseArgs(reqs)
	cooldowns := make([]float64, len(reqs))
	for i, req := range reqs {
		cooldowns[i] = req.cooldown.Seconds()
	}
	rows, err := retryConflicts(ctx, func() ([]dbsqlc.KeyReleaseManyRow, error) {
		return s.queries.KeyReleaseMany(ctx, dbsqlc.KeyReleaseManyParams{Ids: ids, LeaseTokens: tokens, CooldownSeconds: cooldowns})
	})
	if err != nil {
		return failAll[lease.Key](len(reqs), classify(err))
	}
	if s.cfg.OnLeasesEnded != nil && len(rows) > 0 {
		ended := make([]EndedLease, len(rows))
		for i, row := range rows {
			ended[i] = EndedLease{Pool: row.Pool, Duration: secondsToDuration(row.EndedLeaseSeconds), Cooldown: row.CoolingUntil != nil}
		}
		s.cfg.OnLeasesEnded(ended)
	}
	released := make(map[uuid.UUID][]changedKey, len(rows))
	for _, row := range rows {
		released[row.ID] = append(released[row.ID], changedKey{key: fromRow(dbsqlc.KeyGetRow{
			ID: row.ID, Pool: row.Pool, CreatedAt: row.CreatedAt,
			ExpiresAt: row.ExpiresAt, LastKeepAliveAt: row.LastKeepAliveAt, Labels: row.Labels, Name: row.Name, SecretHint: row.SecretHint,
			Seats: row.Seats, SeatsHeld: row.SeatsHeld,
			TimesAssigned: row.TimesAssigned, LeaseToken: row.LeaseToken,
			BlockedAt: row.BlockedAt, LeaseExpiresAt: row.LeaseExpiresAt, CoolingUntil: row.CoolingUntil,
		}), lease: row.EndedLeaseToken})
	}
	return s.settle(ctx, reqs, released, func(req leaseRequest, current lease.Key) (lease.Key, error) {
		// Not released although the key lives: its pool requires a token
		// and none was given, the key has several seats and none was
		// given, it was free already (a release is idempotent), or the
		// lease named is not its seat's current or most recent one.
		if req.token == nil {
			if current.Seats > 1 {
				return lease.Key{}, lease.ErrSeatLeaseRequired
			}
			required, err := s.requiresLeaseToken(ctx, current.Pool)
			switch {
			case err != nil:
				return lease.Key{}, err
			case required:
				return lease.Key{}, lease.ErrLeaseTokenRequired
			}
			return current, nil
		}
		// A key of one seat is read as it is (a release of a free key is
		// idempotent, whatever the token); a key of several, as the lease
		// named sees it: its seat.
		seat := current
		if current.Seats > 1 {
			var err error
			if seat, err = s.leaseOf(ctx, req); err != nil {
				return lease.Key{}, err
			}
		}
		switch {
		case seat.LeaseToken != nil && *seat.LeaseToken != *req.token:
			return lease.Key{}, lease.ErrLeaseMismatch
		case req.cooldown > 0 && seat.LeaseToken == nil:
			// The lease named ended before its holder sent the cooldown:
			// it still applies if that was its seat's most recent lease.
			return s.cooldownAfterLease(ctx, req)
		}
		return seat, nil
	})
}

// leaseOf returns a key of several seats as the lease named sees it: its
// seat, held by it or free since it ended. lease.ErrLeaseMismatch when a later
// lease has taken its seat (or it was never a lease of the key).
func (s *Store) leaseOf(ctx context.Context, req leaseRequest) (lease.Key, error) {
	row, err := s.queries.KeyGetLease(ctx, dbsqlc.KeyGetLeaseParams{ID: req.id, LeaseToken: *req.token})
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		// The key lives (settle read it), so the lease is not its seat's.
		return lease.Key{}, lease.ErrLeaseMismatch
	case err != nil:
		return lease.Key{}, classify(err)
	}
	return fromRow(dbsqlc.KeyGetRow(row)), nil
}

// changedKey is a row a batch statement changed, with the lease it acted
// on (nil: the change as a request without a token sees it).
type changedKey struct {
	key   lease.Key
	lease *int64
}

// answers reports whether the change answers the request: one with a token
// only a change made under that lease (another request of the batch may
// have named the same key with another token); one without a token a
// change of its key that no request of the batch named by its lease
// (named). A change under a named lease is that request's: the statements
// change nothing for a release without a token of a key of several seats,
// or of a pool that requires tokens, and that release must not be answered
// with another client's.
func (c changedKey) answers(req leaseRequest, named map[int64]bool) bool {
	if req.token != nil {
		return c.lease != nil && *c.lease == *req.token
	}
	return c.lease == nil || !named[*c.lease]
}

// settle gives each request its outcome: the first row the statement
// changed that answers it, or, for a request it did not change, what
// explain says of the key as it is now (lease.ErrKeyNotFound when it is
// gone).
func (s *Store) settle(ctx context.Context, reqs []leaseRequest, changed map[uuid.UUID][]changedKey,
	explain func(leaseRequest, lease.Key) (lease.Key, error)) []batch.Result[lease.Key] {
	// The tokens the batch's requests name, per key.
	named := map[uuid.UUID]map[int64]bool{}
	for _, req := range reqs {
		if req.token != nil {
			if named[req.id] == nil {
				named[req.id] = map[int64]bool{}
			}
			named[req.id][*req.token] = true
		}
	}
	results := make([]batch.Result[lease.Key], len(reqs))
requests:
	for i, req := range reqs {
		for _, c := range changed[req.id] {
			if c.answers(req, named[req.id]) {
				results[i].Value = c.key
				continue requests
			}
		}
		row, err := s.queries.KeyGet(ctx, req.id)
		if err != nil {
			results[i].Err = classify(err)
			continue
		}
		results[i].Value, results[i].Err = explain(req, fromRow(row))
	}
	return results
}

// leaseArgs spreads the requests into the statement's parallel arrays. 0
// stands for "no token"; tokens start at 1, so a given token below that
// names no lease and is sent as -1, which matches none.
func leaseArgs(reqs []leaseRequest) ([]uuid.UUID, []int64) {
	ids := make([]uuid.UUID, len(reqs))
	tokens := make([]int64, len(reqs))
	for i, req := range reqs {
		ids[i] = req.id
		switch {
		case req.token == nil:
			tokens[i] = 0
		case *req.token < 1:
			tokens[i] = -1
		default:
			tokens[i] = *req.token
		}
	}
	return ids, tokens
}

func failAll[T any](n int, err error) []batch.Result[T] {
	if errors.Is(err, lease.ErrKeyNotFound) {
		// A batch statement returns rows, never "no rows".
		err = errors.New("unexpected empty result")
	}
	results := make([]batch.Result[T], n)
	for i := range results {
		results[i].Err = err
	}
	return results
}

// cooldownAfterLease applies the cooldown of a release whose lease had
// already ended, while the key is free: the signal it carries (the key's
// provider refused it) is not lost because the lease ran out first. A key
// whose most recent lease is not the one named, or that another lease
// holds by now, is lease.ErrLeaseMismatch.
func (s *Store) cooldownAfterLease(ctx context.Context, req leaseRequest) (lease.Key, error) {
	row, err := retryConflicts(ctx, func() (dbsqlc.KeyCooldownAfterLeaseRow, error) {
		return s.queries.KeyCooldownAfterLease(ctx, dbsqlc.KeyCooldownAfterLeaseParams{
			ID: req.id, LeaseToken: *req.token, CooldownSeconds: req.cooldown.Seconds(),
		})
	})
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return lease.Key{}, lease.ErrLeaseMismatch
	case err != nil:
		return lease.Key{}, classify(err)
	}
	if s.cfg.OnCooldown != nil {
		s.cfg.OnCooldown(row.Pool)
	}
	return fromRow(dbsqlc.KeyGetRow(row)), nil
}
