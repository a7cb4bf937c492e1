package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// Lease is a key held by this client. It keeps itself alive in the
// background, well before the server would end it, until Release is called
// or the lease is lost. It is safe for concurrent use.
//
// A keep-alive that fails for want of the server (a 503, a connection
// refused or cut) is tried again, at most halfway to the lease's end each
// time and not sooner than a Retry-After asks where that leaves time, until
// one gets through or the lease has run out: the lease rides out an outage
// shorter than what it has left.
type Lease struct {
	c   *Client
	key Key

	mu sync.Mutex
	// expiresAt is the lease's end as the server last gave it.
	expiresAt time.Time
	err       error

	lost       chan struct{}
	stop       context.CancelFunc
	stopped    chan struct{}
	releaseErr error
	release    sync.Once
}

// minKeepAliveInterval keeps a lease with a very short life from turning
// the keep-alive loop into a busy loop, and minKeepAliveTry gives a
// keep-alive at least this long to be answered.
const (
	minKeepAliveInterval = 5 * time.Millisecond
	minKeepAliveTry      = 100 * time.Millisecond
)

// Claim claims a key of the pool ("" is the default pool), waiting as long
// as ctx allows for one to become free: the server holds each request for up
// to MaxWait and the call asks again until ctx ends, then fails with an
// error that matches both ErrNoKeyAvailable and ctx's error. A pool that has
// no keys is not waited for: the call fails at once with ErrUnknownPool.
//
// Every request of one Claim carries the same idempotency key, so a
// request repeated after its answer was lost (this client retries answers
// of 503 and connections that failed before an answer, a load balancer may
// retry on another replica) gets the lease the first one got and never
// holds a second key.
//
// The lease outlives ctx: it is kept alive until Release, or until Lost is
// closed. A lease that is never released holds its key for good.
//
// Options such as WithLabels narrow the claim; WithIdempotencyKey is
// ignored (Claim makes its own).
func (c *Client) Claim(ctx context.Context, pool string, opts ...ClaimOption) (*Lease, error) {
	idempotencyKey := NewIdempotencyKey()
	for {
		wait := MaxWait
		if deadline, ok := ctx.Deadline(); ok {
			// Leave the server time to answer before ctx ends, so that the
			// call fails with ErrNoKeyAvailable rather than a cut connection.
			wait = min(wait, time.Until(deadline)*9/10)
		}
		sent := time.Now()
		key, err := c.ClaimKey(ctx, pool, wait, append(opts, WithIdempotencyKey(idempotencyKey))...)
		switch {
		case err == nil:
			return c.newLease(key, sent)
		case ctx.Err() != nil:
			return nil, fmt.Errorf("%w in pool %q: %w", ErrNoKeyAvailable, pool, ctx.Err())
		case errors.Is(err, ErrIdempotencyKeyReused):
			// A key was claimed for this Claim, but its lease ended before
			// any answer got through (a short LEASE_TTL, or an operator
			// released the key): nobody holds it, so claim afresh.
			idempotencyKey = NewIdempotencyKey()
			continue
		case !errors.Is(err, ErrNoKeyAvailable):
			return nil, err
		case wait <= 0:
			// Too little time was left to wait on the server.
			if err := sleep(ctx, time.Until(sent.Add(c.retry.minBackoff))); err != nil {
				return nil, fmt.Errorf("%w in pool %q: %w", ErrNoKeyAvailable, pool, err)
			}
		}
	}
}

// newLease starts keeping the key's lease alive. sent is when the request
// that claimed the key left: the lease began after it.
func (c *Client) newLease(key Key, sent time.Time) (*Lease, error) {
	if key.LeaseToken == "" || leaseDuration(key) <= 0 {
		return nil, fmt.Errorf("client: the server claimed key %s without a lease token or a lease deadline", key.ID)
	}
	ctx, stop := context.WithCancel(context.Background())
	l := &Lease{
		c: c, key: key, expiresAt: *key.LeaseExpiresAt,
		lost: make(chan struct{}), stop: stop, stopped: make(chan struct{}),
	}
	go l.keepAlive(ctx, sent.Add(leaseDuration(key)))
	return l, nil
}

// Secret is the credential the key stands for ("" for a key without one).
func (l *Lease) Secret() string { return l.key.Secret }

// Key is the key as it was claimed, with its id, pool and lease token.
func (l *Lease) Key() Key { return l.key }

// ID is the key's id.
func (l *Lease) ID() string { return l.key.ID }

// Token is the lease token, which the lease presents on every call.
func (l *Lease) Token() string { return l.key.LeaseToken }

// ExpiresAt is the end of the lease as the server last set it, by the
// server's clock.
func (l *Lease) ExpiresAt() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.expiresAt
}

// Lost is closed when the lease is gone without Release: the server said the
// key or the lease no longer exists, or no keep-alive succeeded before the
// lease ran out. From then on the key may be someone else's; stop using it.
// Err tells why.
func (l *Lease) Lost() <-chan struct{} { return l.lost }

// Err is why the lease was lost, an error that matches ErrLeaseLost or
// ErrNotFound; nil while the lease is held.
func (l *Lease) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Release stops keeping the lease alive and releases the key. It fails
// with ErrLeaseLost or ErrNotFound when the lease was already gone. Only the
// first call does anything; later ones return its result.
func (l *Lease) Release(ctx context.Context) error {
	l.release.Do(func() {
		l.stop()
		<-l.stopped
		if err := l.Err(); err != nil {
			l.releaseErr = err
			return
		}
		_, l.releaseErr = l.c.ReleaseKey(ctx, l.key.ID, l.key.LeaseToken)
	})
	return l.releaseErr
}

// ReleaseWithCooldown is Release, but no claim takes the key before the
// cooldown (at most 24 hours) has passed: release a key that a third
// party rate-limited (an HTTP 429) this way.
func (l *Lease) ReleaseWithCooldown(ctx context.Context, cooldown time.Duration) error {
	l.release.Do(func() {
		l.stop()
		<-l.stopped
		if err := l.Err(); err != nil {
			l.releaseErr = err
			return
		}
		_, l.releaseErr = l.c.ReleaseKeyWithCooldown(ctx, l.key.ID, l.key.LeaseToken, cooldown)
	})
	return l.releaseErr
}

// keepAlive keeps the lease alive until ctx ends or the lease is lost.
// deadline is when the lease ends by this machine's clock, reckoned without
// trusting the two clocks to agree.
//
// Each keep-alive is one request, which this loop tries again until the
// lease ends: the client's retries would wait out a Retry-After even past
// the lease's end.
func (l *Lease) keepAlive(ctx context.Context, deadline time.Time) {
	defer close(l.stopped)
	// A third of the lease's remaining time leaves room for two more tries
	// before it ends should one fail.
	next := time.Until(deadline) / 3
	for {
		if err := sleep(ctx, max(next, minKeepAliveInterval)); err != nil {
			return
		}
		// A try gets half the time left: one that meets a network that
		// answers nothing leaves the other half for the next.
		sent := time.Now()
		callCtx, cancel := context.WithDeadline(ctx, sent.Add(max(time.Until(deadline)/2, minKeepAliveTry)))
		key, err := l.c.key(callCtx, request{
			method: http.MethodPut, path: keyPath(l.key.ID) + "/keepalive", leaseToken: l.key.LeaseToken, attempts: 1,
		})
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			l.mu.Lock()
			if key.LeaseExpiresAt != nil {
				l.expiresAt = *key.LeaseExpiresAt
			}
			l.mu.Unlock()
			deadline = sent.Add(leaseDuration(key))
			next = time.Until(deadline) / 3
		case errors.Is(err, ErrLeaseLost) || errors.Is(err, ErrNotFound):
			l.lose(fmt.Errorf("lease %s of key %s: %w", l.key.LeaseToken, l.key.ID, err))
			return
		case !time.Now().Before(deadline):
			l.lose(fmt.Errorf("%w: lease %s of key %s ran out before a keep-alive succeeded: %w",
				ErrLeaseLost, l.key.LeaseToken, l.key.ID, err))
			return
		default:
			// The server or the network failed for now: try again, more
			// often as the end nears, never later than halfway to it, and
			// not sooner than the server's Retry-After where that leaves
			// time.
			left := time.Until(deadline) / 2
			next = min(next, left)
			if apiErr, ok := errors.AsType[*APIError](err); ok {
				next = min(max(next, apiErr.RetryAfter), left)
			}
		}
	}
}

func (l *Lease) lose(err error) {
	l.mu.Lock()
	l.err = err
	l.mu.Unlock()
	close(l.lost)
}

// leaseDuration is how long the lease lasts from the server's answer: its
// end minus its start (the claim or the last keep-alive), both by the
// database's clock, so that no clock skew between client and server enters.
func leaseDuration(k Key) time.Duration {
	if k.LeaseExpiresAt == nil {
		return 0
	}
	var start time.Time
	for _, t := range []*time.Time{k.BlockedAt, k.LastKeepAliveAt} {
		if t != nil && t.After(start) {
			start = *t
		}
	}
	if start.IsZero() {
		return 0
	}
	return k.LeaseExpiresAt.Sub(start)
}
