package wakeup

import "time"

// Registered reports whether the hub believes that the database announces
// the pool's freed keys to it: it has a queue for the pool whose
// registration has not run out by the hub's clock.
func (h *Hub) Registered(pool string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	q := h.queues[pool]
	return q != nil && time.Now().Before(q.registeredUntil)
}

// Counts returns the clients waiting on the hub and the pools they wait on.
func (h *Hub) Counts() (waiters, pools int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.waiters, len(h.queues)
}

// Settings returns the hub's configuration, with its defaults applied.
func (h *Hub) Settings() Config { return h.cfg }
