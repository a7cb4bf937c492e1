// Package wakeup serves clients that wait for a free key (GET /keys?wait=).
// A replica with waiting clients registers them for their pool in the
// database (pool_waiters); while it is registered, every statement that
// frees keys of the pool announces them with NOTIFY, and every replica
// LISTENs on one connection. On a notification the replica claims, in one
// statement, as many keys as it has waiters for that pool, and hands them
// out in arrival order. A notification is only a hint: the claim is the
// ordinary SQL claim, and may find the keys taken by clients of another
// replica.
//
// Waiters that ask for labels, or claim under an idempotency key, wait in
// the same line. Those that ask for the same labels share a claim; an
// idempotent waiter is claimed for alone, in a transaction that also
// records its lease, since a lease handed out from a shared claim would be
// recorded only afterwards, and a failure in between would strand it.
//
// In case a notification is lost, the replica also polls: one statement
// asks which of all its waited pools have a free key, and only those are
// claimed from. Clients that wait on many pools (made-up names, say) thus
// cost the database one statement per poll, not one per pool. And however
// many clients wait, the hub's database calls take only a few connections
// at once, so that requests that do not wait still find one. The clients
// waiting on a replica, and the pools they wait on, are capped: past either
// cap a client is refused at once.
package wakeup

import (
	"cmp"
	"container/list"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/tokenorchestrator/tokenorchestrator/internal/lease"
	"github.com/tokenorchestrator/tokenorchestrator/internal/startstop"
	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
)

// Errors of Wait that refuse a client before it waits; it may retry, or
// ask without waiting.
var (
	// ErrTooManyWaiters: Config.MaxWaiters clients wait on this replica.
	ErrTooManyWaiters = errors.New("too many clients waiting on this replica")
	// ErrTooManyPools: the clients waiting on this replica wait on
	// Config.MaxPools pools, and not on the one asked for.
	ErrTooManyPools = errors.New("too many pools waited on at this replica")
)

// Store is what a Hub needs of the database (store.Store).
type Store interface {
	// ClaimMany claims up to n free keys of the pool.
	ClaimMany(ctx context.Context, pool string, n int) ([]lease.Key, error)
	// ClaimManyLabelled is ClaimMany among the keys that carry every label.
	ClaimManyLabelled(ctx context.Context, pool string, n int, labels []string) ([]lease.Key, error)
	// ClaimIdempotent claims a key and records its lease under the
	// idempotency key in one transaction, or answers the lease recorded
	// under it already (replayed).
	ClaimIdempotent(ctx context.Context, pool, idempotencyKey string, labels ...string) (key lease.Key, replayed bool, err error)
	// ReleaseAbandoned releases a key claimed for a waiter that left.
	ReleaseAbandoned(lease.Key)
	// RegisterWaiters tells the database, for ttl, that this replica (named
	// replica) has clients waiting for keys of the pool, so that freed keys
	// of the pool are announced; UnregisterWaiters withdraws that. Each
	// registration carries a generation higher than the replica's previous
	// ones, and a withdrawal the generation of the registration it
	// withdraws: the database must ignore a registration older than the one
	// it holds, and a withdrawal of an older registration than the one it
	// holds. The calls run concurrently and may reach the database in any
	// order.
	RegisterWaiters(ctx context.Context, pool, replica string, generation int64, ttl time.Duration) error
	UnregisterWaiters(ctx context.Context, pool, replica string, generation int64) error
	// PoolsWithFreeKeys returns those of the pools in which a claim would
	// find a key now, in one statement.
	PoolsWithFreeKeys(ctx context.Context, pools []string) ([]string, error)
	// ListenKeysFreed opens a connection that LISTENs for freed keys, which
	// Start holds open.
	ListenKeysFreed(ctx context.Context) (*store.Listener, error)
}

// Config describes a Hub.
type Config struct {
	// Poll is how often the pools with waiters are polled without a
	// notification, in case one was lost (the listening connection was
	// down, or a key was freed in the moment between a registration and
	// the first claim after it). Defaults to PollDefault.
	Poll time.Duration
	// DBCalls bounds the database calls the hub makes at once: its
	// registrations, withdrawals, polls, claims and give-backs. Each holds a
	// connection of the pool while it runs; below the pool's size, the
	// bound leaves connections to requests that do not wait, however many
	// clients wait. Defaults to DBCallsDefault.
	DBCalls int
	// MaxWaiters caps the clients waiting at once on this replica: each
	// holds a request open. Defaults to MaxWaitersDefault.
	MaxWaiters int
	// MaxPools caps the distinct pools waited on at once on this replica:
	// each costs a registration row and a place in every poll. Defaults to
	// MaxPoolsDefault.
	MaxPools int
	// Logger. Defaults to slog.Default().
	Logger *slog.Logger
}

// The defaults of Config, which New applies to a zero value. The server's
// configuration shows those of its settings as the defaults of its flags.
const (
	// PollDefault is the default of Config.Poll.
	PollDefault = 500 * time.Millisecond
	// DBCallsDefault is the default of Config.DBCalls, WAITERS_DB_CONNS
	// (which the server's configuration lowers below DB_MAX_CONNS): enough
	// for the claims of a few pools whose keys are freed at once.
	DBCallsDefault = 4
	// MaxWaitersDefault is the default of Config.MaxWaiters, MAX_WAITERS.
	MaxWaitersDefault = 10000
	// MaxPoolsDefault is the default of Config.MaxPools, MAX_WAITED_POOLS.
	MaxPoolsDefault = 1000
)

// validate reports every setting that is out of range, all at once.
func (c Config) validate() error {
	var errs []error
	if c.Poll < 0 {
		errs = append(errs, fmt.Errorf("%s must be positive (zero for the default), not %s", "Poll", c.Poll))
	}
	for _, n := range []struct {
		name  string
		value int
	}{{"DBCalls", c.DBCalls}, {"MaxWaiters", c.MaxWaiters}, {"MaxPools", c.MaxPools}} {
		if n.value < 0 {
			errs = append(errs, fmt.Errorf("%s must be positive (zero for the default), not %d", n.name, n.value))
		}
	}
	return errors.Join(errs...)
}

// ErrClosed is the answer to waiting clients once the hub is closed.
var ErrClosed = errors.New("this replica is shutting down and takes no waiting clients")

// Hub keeps this replica's waiters, per pool in arrival order.
type Hub struct {
	// Runner gives the hub's listener Stop and Started.
	startstop.Runner
	store   Store
	cfg     Config
	replica string
	// dbCalls holds a token for every database call of the hub in flight;
	// its capacity is Config.DBCalls.
	dbCalls chan struct{}
	mu      sync.Mutex
	queues  map[string]*queue
	// closed is closed by Close.
	closed    chan struct{}
	closeOnce sync.Once
	// waiters counts the waiters in all queues.
	waiters int
	// generation numbers this replica's registrations, the last one sent.
	generation int64
	// polling is set while the poll loop runs; it runs while there are
	// queues.
	polling bool
}

// registration is how long a registration of waiters lasts; it is renewed
// when a waiter arrives in its second half, and outlives the longest wait.
const registration = 2 * time.Minute

type queue struct {
	waiters *list.List // of *waiter, oldest first
	// registeredUntil is when the database stops announcing this pool's
	// freed keys to this replica, by this replica's clock (a lower bound).
	registeredUntil time.Time
	// generation is that of the queue's last registration; 0 before it
	// registered. A queue withdraws the registrations up to it when it is
	// forgotten: a later queue of the pool registers with a higher one,
	// which that withdrawal leaves alone whenever it lands.
	generation int64
	// serving is set while a claim for the queue runs; again asks it for
	// one more round, for a wake-up that came meanwhile.
	serving, again bool
	// round numbers the rounds of claims for the queue's waiters.
	round int
}

// Want is what a waiter asks for beyond a free key of its pool.
type Want struct {
	// Labels ("name=value") the key must carry, every one.
	Labels []string
	// IdempotencyKey, when set, makes the claim store.ClaimIdempotent's.
	IdempotencyKey string
}

// labels names the keys the waiter may take: waiters with the same labels
// share a claim, and when it finds too few, the others have no key either.
func (w Want) labels() string { return strings.Join(w.Labels, "\x00") }

type waiter struct {
	want Want
	// ctx is the caller's: an idempotent claim runs in it, so that one
	// whose caller left rolls back rather than record a lease.
	ctx    context.Context
	result chan result // receives the outcome; buffered
	elem   *list.Element
	// round is the queue's last round that claimed for the waiter.
	round int
	// claiming is set while the waiter's own (idempotent) claim runs: a
	// wait that ends meanwhile takes that claim's outcome.
	claiming bool
}

// result is the outcome of a claim for one waiter.
type result struct {
	key      lease.Key
	replayed bool
	err      error
}

// New returns a hub over the store; Start feeds it the database's
// notifications. It panics when cfg holds a value out of range: the
// server's configuration refuses such values before they get here.
func New(st Store, cfg Config) *Hub {
	if err := cfg.validate(); err != nil {
		panic(fmt.Errorf("wakeup: invalid configuration: %w", err))
	}
	cfg.Poll = cmp.Or(cfg.Poll, PollDefault)
	cfg.DBCalls = cmp.Or(cfg.DBCalls, DBCallsDefault)
	cfg.MaxWaiters = cmp.Or(cfg.MaxWaiters, MaxWaitersDefault)
	cfg.MaxPools = cmp.Or(cfg.MaxPools, MaxPoolsDefault)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	raw := make([]byte, 8)
	_, _ = rand.Read(raw)
	return &Hub{store: st, cfg: cfg, replica: hex.EncodeToString(raw), dbCalls: make(chan struct{}, cfg.DBCalls), queues: map[string]*queue{}, closed: make(chan struct{})}
}

// Close ends every wait with ErrClosed at once, and makes every later Wait
// return a key only if one is free at once, else ErrClosed. A server that
// shuts down closes its hub first: a wait may last longer than the server
// has left, and a client told now retries on another replica instead of
// being cut off. A waiter served in the same moment keeps its key.
func (h *Hub) Close() {
	h.closeOnce.Do(func() { close(h.closed) })
}

// Wait returns a key of the pool, waiting up to wait for one to be freed.
// Waiters of one pool on this replica are served in arrival order. It
// returns lease.ErrNoFreeKey when the wait ends with nothing, ErrClosed when
// the hub is closed first, or the caller's error when ctx ends first; a key
// claimed for a caller that left is released. Past the caps it returns
// ErrTooManyWaiters or ErrTooManyPools at once, having done nothing.
func (h *Hub) Wait(ctx context.Context, pool string, wait time.Duration) (lease.Key, error) {
	key, _, err := h.WaitFor(ctx, pool, wait, Want{})
	return key, err
}

// WaitFor is Wait for a key that carries the labels wanted, or under an
// idempotency key. An idempotent claim may answer the lease recorded under
// its key (replayed) or any error of store.ClaimIdempotent but
// lease.ErrNoFreeKey, which end the wait; the key of an idempotent waiter
// that left is kept, as its lease is recorded for the caller's repeat.
func (h *Hub) WaitFor(ctx context.Context, pool string, wait time.Duration, want Want) (key lease.Key, replayed bool, err error) {
	select {
	case <-h.closed:
		return h.claimNow(ctx, pool, want)
	default:
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	w := &waiter{want: want, ctx: ctx, result: make(chan result, 1)}
	h.mu.Lock()
	q := h.queues[pool]
	if err := h.admissible(pool); err != nil {
		h.mu.Unlock()
		return lease.Key{}, false, err
	}
	if q == nil {
		q = &queue{waiters: list.New()}
		h.queues[pool] = q
		if !h.polling {
			h.polling = true
			go h.pollLoop()
		}
	}
	w.elem = q.waiters.PushBack(w)
	h.waiters++
	var generation int64 // of the registration to send; 0 for none
	if time.Until(q.registeredUntil) < registration/2 {
		q.registeredUntil = time.Now().Add(registration)
		h.generation++
		q.generation = h.generation
		generation = q.generation
	}
	h.mu.Unlock()
	if generation != 0 {
		// Before the first claim for this waiter: a key freed after that
		// claim's snapshot then always sends a notification. Waiting for a
		// turn at the database ends with the wait.
		regCtx, cancel := context.WithTimeout(ctx, wait)
		err := h.withDB(regCtx, func(ctx context.Context) error {
			return h.store.RegisterWaiters(ctx, pool, h.replica, generation, registration)
		})
		cancel()
		if err != nil {
			h.cfg.Logger.Warn("could not register waiting clients; they rely on polling", "pool", pool, "error", err)
			h.mu.Lock()
			if q.generation == generation { // no newer registration since
				q.registeredUntil = time.Time{}
			}
			h.mu.Unlock()
		}
	}
	h.serve(pool)

	var ended error
	select {
	case r := <-w.result:
		return r.key, r.replayed, r.err
	case <-timer.C:
		ended = lease.ErrNoFreeKey
	case <-ctx.Done():
		ended = ctx.Err()
	case <-h.closed:
		ended = ErrClosed
	}
	h.mu.Lock()
	queued, claiming := w.elem.Value != nil, w.claiming
	if queued {
		h.remove(pool, q, w)
	}
	h.mu.Unlock()
	if queued && !claiming {
		return lease.Key{}, false, ended
	}
	// Served as the wait ended, or its own claim still runs and decides.
	r := <-w.result
	switch {
	case errors.Is(r.err, lease.ErrNoFreeKey):
		return lease.Key{}, false, ended
	case r.err != nil:
		return lease.Key{}, false, r.err
	case ctx.Err() != nil:
		if want.IdempotencyKey == "" {
			h.releaseAbandoned([]lease.Key{r.key})
		}
		return lease.Key{}, false, ctx.Err()
	}
	return r.key, r.replayed, nil
}

// admissible tells whether one more client may wait for a key of the
// pool: ErrTooManyWaiters or ErrTooManyPools past the caps. h.mu is held.
func (h *Hub) admissible(pool string) error {
	if h.waiters >= h.cfg.MaxWaiters {
		return ErrTooManyWaiters
	}
	if h.queues[pool] == nil && len(h.queues) >= h.cfg.MaxPools {
		return ErrTooManyPools
	}
	return nil
}

// Waiters returns how many clients wait on this replica now.
func (h *Hub) Waiters() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.waiters
}

// Serving reports whether a round of claims for the pool's waiters is
// under way. A key freed during a round may go to a later waiter that
// comes after an earlier one was tried: waiters are served in arrival
// order only by rounds that see the same free keys.
func (h *Hub) Serving(pool string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	q := h.queues[pool]
	return q != nil && q.serving
}

// claimNow claims a key of the pool for a client that may not wait: a free
// key is still claimed, but none is waited for.
func (h *Hub) claimNow(ctx context.Context, pool string, want Want) (lease.Key, bool, error) {
	if want.IdempotencyKey != "" {
		key, replayed, err := h.store.ClaimIdempotent(ctx, pool, want.IdempotencyKey, want.Labels...)
		if errors.Is(err, lease.ErrNoFreeKey) {
			err = ErrClosed
		}
		return key, replayed, err
	}
	keys, err := h.claimMany(ctx, pool, 1, want.Labels)
	if err != nil && !errors.Is(err, lease.ErrNoFreeKey) {
		return lease.Key{}, false, err
	}
	if len(keys) == 0 {
		return lease.Key{}, false, ErrClosed
	}
	return keys[0], false, nil
}

// claimMany claims up to n keys of the pool that carry the labels.
func (h *Hub) claimMany(ctx context.Context, pool string, n int, labels []string) ([]lease.Key, error) {
	if len(labels) == 0 {
		return h.store.ClaimMany(ctx, pool, n)
	}
	return h.store.ClaimManyLabelled(ctx, pool, n, labels)
}

// remove takes a waiter out of its queue; h.mu is held.
func (h *Hub) remove(pool string, q *queue, w *waiter) {
	q.waiters.Remove(w.elem)
	w.elem.Value = nil
	h.waiters--
	if q.waiters.Len() == 0 && !q.serving {
		h.forget(pool, q)
	}
}

// forget drops an idle queue and withdraws its registration; h.mu is held.
// The withdrawal may reach the database after a new queue of the pool has
// registered again; being of an older generation, it then deletes nothing.
func (h *Hub) forget(pool string, q *queue) {
	delete(h.queues, pool)
	if q.generation == 0 {
		return
	}
	generation := q.generation
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := h.withDB(ctx, func(ctx context.Context) error {
			return h.store.UnregisterWaiters(ctx, pool, h.replica, generation)
		})
		if err != nil {
			h.cfg.Logger.Debug("could not withdraw the registration of waiting clients; it expires", "pool", pool, "error", err)
		}
	}()
}

// serve claims keys for the pool's waiters until a claim comes back short.
// Only one claim per pool runs at a time; a wake-up that comes meanwhile
// asks for another round.
func (h *Hub) serve(pool string) {
	h.mu.Lock()
	q := h.queues[pool]
	if q == nil {
		h.mu.Unlock()
		return
	}
	if q.serving {
		q.again = true
		h.mu.Unlock()
		return
	}
	q.serving = true
	h.mu.Unlock()
	go h.serveLoop(pool, q)
}

func (h *Hub) serveLoop(pool string, q *queue) {
	for {
		h.mu.Lock()
		q.again = false
		q.round++
		h.mu.Unlock()
		served, err := h.serveRound(pool, q)

		h.mu.Lock()
		// Another round when a wake-up came meanwhile, and while claims find
		// keys: more may have been freed for the waiters that remain.
		if (q.again || served > 0) && q.waiters.Len() > 0 {
			h.mu.Unlock()
			continue
		}
		// The waiters that remain are served by a notification or the
		// next poll.
		q.serving = false
		if q.waiters.Len() == 0 {
			h.forget(pool, q)
		}
		h.mu.Unlock()
		if err != nil {
			h.cfg.Logger.Warn("claim for waiting clients failed", "pool", pool, "error", err)
		}
		return
	}
}

// serveRound claims once for every waiter of the queue, in arrival order,
// and returns how many it served and the last failure of a shared claim. A
// claim that finds too few keys with some labels spares the later waiters
// for those labels their try; one that finds too few keys without labels
// ends the round, as the pool then has no free key at all.
func (h *Hub) serveRound(pool string, q *queue) (served int, failed error) {
	exhausted := map[string]bool{}
	for {
		h.mu.Lock()
		w := h.next(q, exhausted)
		if w == nil {
			h.mu.Unlock()
			return served, failed
		}
		if w.want.IdempotencyKey != "" {
			w.round = q.round
			w.claiming = true
			h.mu.Unlock()
			switch err := h.serveAlone(pool, q, w); {
			case err == nil:
				served++
			case errors.Is(err, lease.ErrNoFreeKey):
				exhausted[w.want.labels()] = true
			}
			continue
		}
		n := 0
		for e := q.waiters.Front(); e != nil; e = e.Next() {
			if o := e.Value.(*waiter); o.round < q.round && shares(o, w) {
				o.round = q.round
				n++
			}
		}
		h.mu.Unlock()
		var keys []lease.Key
		err := h.withDB(context.Background(), func(ctx context.Context) error {
			var claimErr error
			keys, claimErr = h.claimMany(ctx, pool, n, w.want.Labels)
			return claimErr
		})
		if err != nil && !errors.Is(err, lease.ErrNoFreeKey) {
			failed = err
		}
		if len(keys) < n {
			exhausted[w.want.labels()] = true
		}
		h.mu.Lock()
		for e := q.waiters.Front(); e != nil && len(keys) > 0; {
			o := e.Value.(*waiter)
			e = e.Next()
			if shares(o, w) {
				o.result <- result{key: keys[0]}
				keys = keys[1:]
				h.remove(pool, q, o)
				served++
			}
		}
		h.mu.Unlock()
		h.releaseAbandoned(keys) // claimed for waiters that left meanwhile
	}
}

// next returns the first waiter of the queue not yet claimed for in this
// round whose labels may still find a key, or nil; h.mu is held.
func (h *Hub) next(q *queue, exhausted map[string]bool) *waiter {
	if exhausted[""] {
		return nil
	}
	for e := q.waiters.Front(); e != nil; e = e.Next() {
		if w := e.Value.(*waiter); w.round < q.round && !exhausted[w.want.labels()] {
			return w
		}
	}
	return nil
}

// shares reports whether a shared claim for w serves o as well: neither is
// idempotent, and both want the same labels.
func shares(o, w *waiter) bool {
	return o.want.IdempotencyKey == "" && w.want.IdempotencyKey == "" && o.want.labels() == w.want.labels()
}

// serveAlone runs the idempotent claim of one waiter, marked claiming, and
// hands the waiter its outcome, which it returns. One that found no key
// leaves the waiter in line, unless its wait ended meanwhile.
func (h *Hub) serveAlone(pool string, q *queue, w *waiter) error {
	var r result
	r.err = h.withDB(w.ctx, func(ctx context.Context) error {
		var err error
		r.key, r.replayed, err = h.store.ClaimIdempotent(ctx, pool, w.want.IdempotencyKey, w.want.Labels...)
		return err
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	w.claiming = false
	queued := w.elem.Value != nil
	if queued && errors.Is(r.err, lease.ErrNoFreeKey) {
		return r.err
	}
	if queued {
		h.remove(pool, q, w)
	}
	w.result <- r
	return r.err
}

// pollLoop polls every Poll until no pool has a queue.
func (h *Hub) pollLoop() {
	ticker := time.NewTicker(h.cfg.Poll)
	defer ticker.Stop()
	for range ticker.C {
		h.mu.Lock()
		if len(h.queues) == 0 {
			h.polling = false
			h.mu.Unlock()
			return
		}
		h.mu.Unlock()
		h.poll()
	}
}

// poll asks in one statement which of the pools with waiters have a free
// key, and serves those. Pools whose claim is running are left out: that
// claim serves them.
func (h *Hub) poll() {
	h.mu.Lock()
	pools := make([]string, 0, len(h.queues))
	for pool, q := range h.queues {
		if !q.serving && q.waiters.Len() > 0 {
			pools = append(pools, pool)
		}
	}
	h.mu.Unlock()
	if len(pools) == 0 {
		return
	}
	var free []string
	err := h.withDB(context.Background(), func(ctx context.Context) error {
		var err error
		free, err = h.store.PoolsWithFreeKeys(ctx, pools)
		return err
	})
	if err != nil {
		h.cfg.Logger.Warn("poll for waiting clients failed", "pools", len(pools), "error", err)
		return
	}
	for _, pool := range free {
		h.serve(pool)
	}
}

func (h *Hub) releaseAbandoned(keys []lease.Key) {
	for _, key := range keys {
		_ = h.withDB(context.Background(), func(context.Context) error {
			h.store.ReleaseAbandoned(key)
			return nil
		})
	}
}

// withDB runs a database call once fewer than Config.DBCalls of the hub's
// are in flight, or returns ctx's error if ctx ends first.
func (h *Hub) withDB(ctx context.Context, call func(context.Context) error) error {
	select {
	case h.dbCalls <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-h.dbCalls }()
	return call(ctx)
}

// Notify tries to serve the pool's waiters now.
func (h *Hub) Notify(pool string) { h.serve(pool) }

// NotifyAll polls every pool's waiters at once: after the listening
// connection was down, notifications may have been missed. Like any poll,
// it is one statement, and claims only from pools that have a free key.
func (h *Hub) NotifyAll() { go h.poll() }

// Start holds one connection in LISTEN and feeds the hub, in the
// background until Stop is called or ctx ends, reconnecting with backoff
// when the connection is lost (a database restart). After every
// reconnection every pool is tried, since notifications sent meanwhile are
// lost.
func (h *Hub) Start(ctx context.Context) error {
	return h.StartFunc(ctx, h.listen)
}

func (h *Hub) listen(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := h.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		h.cfg.Logger.Warn("listening for freed keys failed; retrying", "error", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (h *Hub) listenOnce(ctx context.Context) error {
	l, err := h.store.ListenKeysFreed(ctx)
	if err != nil {
		return err
	}
	defer l.Close()
	h.NotifyAll()
	for {
		pool, err := l.Next(ctx)
		if errors.Is(err, store.ErrUnexpectedNotification) {
			h.cfg.Logger.Warn("unexpected notification", "error", err)
			continue
		}
		if err != nil {
			return err
		}
		h.Notify(pool)
	}
}
