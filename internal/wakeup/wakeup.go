// Package wakeup serves clients that wait for a free key. The database
// announces freed keys with NOTIFY (sent by the counting trigger when a pool
// that had no free key gets one); every replica LISTENs on one connection and
// wakes its own waiters, first come first served. A notification is only a
// hint: the woken waiter claims through the ordinary SQL claim, and may find
// the key taken by a client of another replica.
package wakeup

import (
	"container/list"
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tokenorchestrator/tokenorchestrator/db/dbsqlc"
	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
)

// Config describes a Hub.
type Config struct {
	// Poll is how often the first waiter of a pool tries again without a
	// notification, in case one was lost (the listening connection was
	// down, or a race between two commits hid the moment the pool ran
	// dry). Zero means 500 ms.
	Poll time.Duration
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Hub keeps this replica's waiters, per pool in arrival order.
type Hub struct {
	cfg    Config
	mu     sync.Mutex
	queues map[string]*list.List // of *waiter
}

type waiter struct {
	wake chan struct{}
}

// New returns a hub; Listen feeds it notifications.
func New(cfg Config) *Hub {
	if cfg.Poll <= 0 {
		cfg.Poll = 500 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Hub{cfg: cfg, queues: map[string]*list.List{}}
}

// Wait claims a key of the pool with claim, waiting up to wait for one to be
// freed. Waiters of one pool are served in arrival order: a newcomer does
// not try before those already waiting, and a freed key wakes the first
// waiter only. It returns store.ErrNoFreeKey when the wait ends with
// nothing, or ctx's error when the caller leaves.
func (h *Hub) Wait(caller context.Context, pool string, wait time.Duration, claim func(context.Context) (store.Key, error)) (store.Key, error) {
	ctx, cancel := context.WithTimeout(caller, wait)
	defer cancel()
	// timedOut tells the end of the wait from the caller leaving.
	timedOut := func() error {
		if caller.Err() != nil {
			return caller.Err()
		}
		return store.ErrNoFreeKey
	}
	w := &waiter{wake: make(chan struct{}, 1)}
	h.mu.Lock()
	q := h.queues[pool]
	if q == nil {
		q = list.New()
		h.queues[pool] = q
	}
	elem := q.PushBack(w)
	first := q.Len() == 1
	h.mu.Unlock()
	got := false
	defer func() { h.leave(pool, elem, w, got) }()
	if first {
		w.wake <- struct{}{}
	}

	poll := time.NewTicker(h.cfg.Poll)
	defer poll.Stop()
	for {
		select {
		case <-w.wake:
		case <-poll.C:
			if !h.isFirst(pool, elem) {
				continue
			}
		case <-ctx.Done():
			return store.Key{}, timedOut()
		}
		key, err := claim(ctx)
		switch {
		case err == nil:
			got = true
			return key, nil
		case errors.Is(err, store.ErrNoFreeKey):
			continue
		case ctx.Err() != nil:
			// Cut short by the end of the wait; a key claimed meanwhile is
			// given back by the store.
			return store.Key{}, timedOut()
		default:
			return store.Key{}, err
		}
	}
}

func (h *Hub) isFirst(pool string, elem *list.Element) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	q := h.queues[pool]
	return q != nil && q.Front() == elem
}

// leave takes the waiter out of its queue. One that got a key passes the
// turn on: more keys may be free than notifications said. One that leaves
// with a wake-up it did not use passes that on too.
func (h *Hub) leave(pool string, elem *list.Element, w *waiter, got bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	q := h.queues[pool]
	next := elem.Next()
	q.Remove(elem)
	if q.Len() == 0 {
		delete(h.queues, pool)
		return
	}
	unused := false
	select {
	case <-w.wake:
		unused = true
	default:
	}
	if (got || unused) && next != nil {
		signal(next.Value.(*waiter))
	}
}

// Notify wakes up to freed waiters of the pool, the longest waiting first.
func (h *Hub) Notify(pool string, freed int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	q := h.queues[pool]
	if q == nil {
		return
	}
	for e := q.Front(); e != nil && freed > 0; e = e.Next() {
		signal(e.Value.(*waiter))
		freed--
	}
}

// NotifyAll wakes every waiter: after the listening connection was down,
// notifications may have been missed.
func (h *Hub) NotifyAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, q := range h.queues {
		for e := q.Front(); e != nil; e = e.Next() {
			signal(e.Value.(*waiter))
		}
	}
}

func signal(w *waiter) {
	select {
	case w.wake <- struct{}{}:
	default: // already woken
	}
}

// Listen holds one connection of the pool in LISTEN and feeds the hub until
// ctx ends, reconnecting with backoff when the connection is lost (a
// database restart). After every reconnection all waiters are woken, since
// notifications sent meanwhile are lost.
func (h *Hub) Listen(ctx context.Context, db *pgxpool.Pool) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := h.listenOnce(ctx, db)
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

func (h *Hub) listenOnce(ctx context.Context, db *pgxpool.Pool) error {
	pooled, err := db.Acquire(ctx)
	if err != nil {
		return err
	}
	// Out of the pool for good: a LISTEN session must not serve queries.
	conn := pooled.Hijack()
	defer conn.Close(context.Background())
	if err := dbsqlc.New(conn).ListenKeysFreed(ctx); err != nil {
		return err
	}
	h.NotifyAll()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		freed, pool, ok := strings.Cut(n.Payload, " ")
		count, convErr := strconv.Atoi(freed)
		if !ok || convErr != nil {
			h.cfg.Logger.Warn("unexpected notification", "payload", n.Payload)
			continue
		}
		h.Notify(pool, count)
	}
}
