package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/tokenorchestrator/tokenorchestrator/db/dbsqlc"
	"github.com/tokenorchestrator/tokenorchestrator/internal/lease"
)

// errClaimRecorded: another request with the same idempotency key recorded
// its claim first; the caller answers that claim.
var errClaimRecorded = errors.New("a claim is already recorded under this idempotency key")

// ErrNoClaimRecorded: no live record under the idempotency key.
var ErrNoClaimRecorded = errors.New("no claim recorded under this idempotency key")

// idempotentTries bounds how often ClaimIdempotent starts over when another
// request's record vanished between two of its statements (it expired).
const idempotentTries = 3

// ClaimIdempotent claims a free key of the pool under an idempotency key, or
// answers the lease already claimed under it: a request repeated after its
// answer was lost, on this replica or any other, gets the same key and
// lease token while the lease lasts, and never a second lease. replayed
// tells that the key comes from an earlier claim. It returns
// lease.ErrIdempotencyKeyReused when the lease claimed under the key has
// ended, and lease.ErrNoFreeKey when nothing was ever claimed under it and
// no key is free. The claim and its record commit together, so a claim
// whose answer was lost in any way (a cut connection, a 503 after the
// commit) is always found by the repeat. Such claims bypass the batching
// of Claim: each needs a transaction of its own.
//
// With labels, the claim takes only a key that carries every one; a repeat
// answers the recorded lease whatever labels it names.
func (s *Store) ClaimIdempotent(ctx context.Context, pool, idempotencyKey string, labels ...string) (key lease.Key, replayed bool, err error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	for try := 1; ; try++ {
		// The repeat, which is the reason for the key, costs one lookup.
		key, err := s.recordedClaim(ctx, pool, idempotencyKey)
		if !errors.Is(err, ErrNoClaimRecorded) {
			return key, err == nil, err
		}
		key, err = retryConflicts(ctx, func() (lease.Key, error) { return s.claimAndRecord(ctx, pool, idempotencyKey, labels) })
		switch {
		case err == nil:
			return key, false, nil
		case errors.Is(err, lease.ErrNoFreeKey), errors.Is(err, errClaimRecorded):
			// A request with the same key may have committed its claim while
			// this one waited for the lock: answer its lease. (Without a free
			// key that is the only way to learn of it.)
			key, lookupErr := s.recordedClaim(ctx, pool, idempotencyKey)
			switch {
			case lookupErr == nil:
				return key, true, nil
			case !errors.Is(lookupErr, ErrNoClaimRecorded):
				return lease.Key{}, false, lookupErr
			case errors.Is(err, lease.ErrNoFreeKey):
				return lease.Key{}, false, lease.ErrNoFreeKey
			case try == idempotentTries:
				// Nothing was claimed: the caller may try again.
				return lease.Key{}, false, fmt.Errorf("%w: %w", lease.ErrUnavailable, err)
			}
			// The other record expired in between: start over.
		default:
			return lease.Key{}, false, classify(err)
		}
	}
}

// RecordedClaim answers the claim recorded under the idempotency key as a
// repeat of ClaimIdempotent would, and claims nothing: a claim that is to
// wait in line learns first whether it is a repeat, which needs no wait.
func (s *Store) RecordedClaim(ctx context.Context, pool, idempotencyKey string) (lease.Key, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	return s.recordedClaim(ctx, pool, idempotencyKey)
}

// recordedClaim answers the claim recorded under the idempotency key: its
// key as it is now, lease.ErrIdempotencyKeyReused when its lease has ended, or
// ErrNoClaimRecorded.
func (s *Store) recordedClaim(ctx context.Context, pool, idempotencyKey string) (lease.Key, error) {
	row, err := s.queries.ClaimRequestGet(ctx, dbsqlc.ClaimRequestGetParams{Pool: pool, IdempotencyKey: idempotencyKey})
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return lease.Key{}, ErrNoClaimRecorded
	case err != nil:
		return lease.Key{}, classify(err)
	case !row.Current:
		return lease.Key{}, lease.ErrIdempotencyKeyReused
	}
	key := lease.Key{
		ID:              row.ID,
		Pool:            *row.Pool,
		CreatedAt:       *row.CreatedAt,
		ExpiresAt:       row.ExpiresAt,
		LastKeepAliveAt: row.LastKeepAliveAt,
		Name:            row.Name,
		SecretHint:      row.SecretHint,
		Seats:           int(*row.Seats),
		SeatsHeld:       seatsHeld(row.SeatsHeld),
		TimesClaimed:    *row.TimesAssigned,
		LeaseToken:      row.LeaseToken,
		ClaimedAt:       row.BlockedAt,
		LeaseExpiresAt:  row.LeaseExpiresAt,
		Labels:          decodeLabels(row.Labels),
		CoolingUntil:    row.CoolingUntil,
	}
	if err := s.openSecret(&key, row.SecretKeyID, row.SecretCiphertext); err != nil {
		return lease.Key{}, err
	}
	return key, nil
}

// claimAndRecord claims one key and records its lease under the
// idempotency key, in one transaction: both commit, or neither does. It
// returns lease.ErrNoFreeKey, or errClaimRecorded when another request
// with the same key recorded a claim first; its own claim is then rolled
// back.
func (s *Store) claimAndRecord(ctx context.Context, pool, idempotencyKey string, labels []string) (lease.Key, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return lease.Key{}, err
	}
	// After a commit this does nothing; otherwise it undoes the claim (and
	// if ctx has ended, pgx closes the connection, which does the same).
	defer func() { _ = tx.Rollback(ctx) }()
	q := s.queries.WithTx(tx)
	if err := q.ClaimRequestLock(ctx, dbsqlc.ClaimRequestLockParams{Pool: pool, IdempotencyKey: idempotencyKey}); err != nil {
		return lease.Key{}, err
	}
	rows, err := s.claimRows(ctx, q, pool, labels, 1)
	if err != nil {
		return lease.Key{}, err
	}
	if len(rows) == 0 {
		return lease.Key{}, lease.ErrNoFreeKey
	}
	// A key whose secret does not open fails the claim: a client must
	// never get a key without the credential it stands for. The claim is
	// undone, and the key set aside, so that the client's next try takes
	// another.
	opened, unopened := s.openClaimed(rows)
	if len(opened) == 0 {
		_ = tx.Rollback(ctx)
		s.coolFreeSeats(ctx, unopened)
		return lease.Key{}, lease.ErrSecretUnavailable
	}
	key := opened[0]
	recorded, err := q.ClaimRequestRecord(ctx, dbsqlc.ClaimRequestRecordParams{
		Pool:           pool,
		IdempotencyKey: idempotencyKey,
		KeyID:          key.ID,
		LeaseToken:     *key.LeaseToken,
		ExpiresAt:      *key.LeaseExpiresAt,
	})
	if err != nil {
		return lease.Key{}, err
	}
	if recorded == 0 {
		return lease.Key{}, errClaimRecorded
	}
	if err := tx.Commit(ctx); err != nil {
		return lease.Key{}, err
	}
	return key, nil
}

// DeleteExpiredClaimRequests deletes up to max records of idempotent claims
// that have expired and returns how many it deleted.
func (s *Store) DeleteExpiredClaimRequests(ctx context.Context, max int) (int, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	n, err := retryConflicts(ctx, func() (int64, error) { return s.queries.ClaimRequestDeleteExpired(ctx, int32(max)) })
	if err != nil {
		return 0, classify(err)
	}
	return int(n), nil
}
