// Package lease is the key pool's domain, apart from where it is kept: a
// key as read with its lease and seats, the errors every layer reports
// outcomes with, the limits of keys, seats, labels, secrets, cooldowns and
// policies, the rules of labels and key names, and a pool's policy. It
// holds values and rules only; internal/store keeps them in PostgreSQL,
// where the statements enforce who holds a key and when a lease or a key
// ends.
package lease

import (
	"errors"
	"time"

	"github.com/google/uuid"
)

// Errors of the key pool, returned by the store and the claim service. The
// HTTP layer maps each to a status once.
var (
	// ErrKeyNotFound: no such key, or its life has ended.
	ErrKeyNotFound = errors.New("key not found")
	// ErrNoFreeKey: every live key of the pool is held, or the pool is empty.
	ErrNoFreeKey = errors.New("no free key in the pool")
	// ErrUnknownPool: the pool has no keys and no policy, so no key can be
	// claimed from it however long one waits (store.Store.PoolKnown).
	ErrUnknownPool = errors.New("unknown pool")
	// ErrLeaseMismatch: the lease token given is not the key's current lease.
	ErrLeaseMismatch = errors.New("lease token does not match the key's current lease")
	// ErrUnavailable: the database could not be reached in time. Nothing was
	// acknowledged; the caller may retry.
	ErrUnavailable = errors.New("database unavailable")
)

// ErrIdempotencyKeyReused: a claim was made under this idempotency key and
// its lease has ended since (released, run out, or its key deleted). The
// request is not served again with a new lease: the caller repeats a claim
// whose lease is gone, and must use a new idempotency key to claim anew.
var ErrIdempotencyKeyReused = errors.New("the lease claimed under this idempotency key has ended")

// MaxCreate is the largest number of keys one call creates.
const MaxCreate = 10000

// MaxSeats is the most seats a key may have.
const MaxSeats = 1000

// MaxCreateSeats is the most seats, over all its keys, that one call
// creates: each seat is a row, and one statement writes them all.
const MaxCreateSeats = 100000

// ErrInvalidSeats: a key's seats are out of range, or one call would
// create too many seats. Nothing was created.
var ErrInvalidSeats = errors.New("invalid seats")

// Key is one key of the pool as the database last saw it.
type Key struct {
	ID        uuid.UUID
	Pool      string
	CreatedAt time.Time
	// ExpiresAt is the end of the key's life; nil when the key lives until
	// deleted (its pool's keys stay).
	ExpiresAt       *time.Time
	LastKeepAliveAt *time.Time
	// Name is the key's name, unique in its pool; nil for none.
	Name *string
	// SecretHint is the last four characters of the key's secret, the only
	// part of it ever shown; nil without a secret, or when it is too short.
	SecretHint *string
	// Seats is how many leases may hold the key at once (1 .. MaxSeats).
	Seats int
	// SeatsHeld is how many of its seats are held; set only where the key
	// is read as a whole (the store's Get, GetByName, List), nil elsewhere.
	SeatsHeld *int
	// TimesClaimed counts the claims of all its seats.
	TimesClaimed int64
	// The lease this key was read for (the claim's, the release's, the
	// keep-alive's), or for a key of one seat read as a whole its current
	// lease; all nil when there is none.
	LeaseToken     *int64
	ClaimedAt      *time.Time
	LeaseExpiresAt *time.Time
	// Labels of the key, nil when it has none.
	Labels map[string]string
	// CoolingUntil is set while the key cools down after a release with a
	// cooldown: no claim takes it before then.
	CoolingUntil *time.Time
	// Secret is the credential the key carries, decrypted: set only in the
	// answer of a claim and of the store's GetSecret, nil everywhere else
	// and for keys without one.
	Secret *string
}

// Held reports whether the key is under the lease it was read for, or, for
// a key of several seats read as a whole, whether every seat is held (no
// claim can take it).
func (k Key) Held() bool {
	return k.LeaseToken != nil || k.Seats > 1 && k.SeatsHeld != nil && *k.SeatsHeld >= k.Seats
}
