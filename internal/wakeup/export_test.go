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
