// Package batch coalesces concurrent requests into one call: while a call
// for a key is in flight, the requests that arrive queue up, and the next
// call takes them all at once. A lone request is never delayed; under load,
// each database round trip serves many requests.
package batch

import (
	"context"
	"sync"
)

// Result is the outcome of one request.
type Result[Res any] struct {
	Value Res
	Err   error
}

// Config describes a Coalescer.
type Config[K comparable, Req, Res any] struct {
	// Run serves a batch of requests that share a key and returns one result
	// per request, in order. It runs with a context of its own: a request
	// whose caller gives up does not cancel the others.
	Run func(ctx context.Context, key K, reqs []Req) []Result[Res]
	// MaxBatch is the most requests one Run gets. Zero means 64.
	MaxBatch int
	// MaxInFlight is how many Runs per key may be in flight at once. Zero
	// means 1.
	MaxInFlight int
	// Abandoned, when set, receives the successful result of a request whose
	// caller gave up before it was served, so that it can be undone (a key
	// claimed for nobody is released).
	Abandoned func(key K, value Res)
}

// Coalescer batches requests per key.
type Coalescer[K comparable, Req, Res any] struct {
	cfg    Config[K, Req, Res]
	mu     sync.Mutex
	queues map[K]*queue[Req, Res]
	// work counts running batches and pending undos, for Wait.
	work sync.WaitGroup
}

type queue[Req, Res any] struct {
	pending  []*waiter[Req, Res]
	inFlight int
}

type waiter[Req, Res any] struct {
	// ctx is the caller's: a request whose caller gave up before its
	// batch started is left out of it.
	ctx    context.Context
	req    Req
	result chan Result[Res]
}

// New returns a Coalescer.
func New[K comparable, Req, Res any](cfg Config[K, Req, Res]) *Coalescer[K, Req, Res] {
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 64
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 1
	}
	return &Coalescer[K, Req, Res]{cfg: cfg, queues: map[K]*queue[Req, Res]{}}
}

// Do queues the request and waits for its result or for ctx to end. A
// request whose ctx ends while it waits for a batch in flight is never
// run: its caller was told it failed, and nothing is done in its name.
func (c *Coalescer[K, Req, Res]) Do(ctx context.Context, key K, req Req) (Res, error) {
	w := &waiter[Req, Res]{ctx: ctx, req: req, result: make(chan Result[Res], 1)}
	c.mu.Lock()
	q := c.queues[key]
	if q == nil {
		q = &queue[Req, Res]{}
		c.queues[key] = q
	}
	q.pending = append(q.pending, w)
	start := q.inFlight < c.cfg.MaxInFlight
	if start {
		q.inFlight++
	}
	if start {
		c.work.Add(1)
	}
	c.mu.Unlock()
	if start {
		go c.drain(key, q)
	}

	select {
	case r := <-w.result:
		return r.Value, r.Err
	case <-ctx.Done():
		// The request may still be served; undo what it got.
		if c.cfg.Abandoned != nil {
			c.work.Add(1)
			go func() {
				defer c.work.Done()
				if r := <-w.result; r.Err == nil {
					c.cfg.Abandoned(key, r.Value)
				}
			}()
		}
		var zero Res
		return zero, ctx.Err()
	}
}

// Wait returns once every batch in flight has been served and every
// abandoned result undone. Call it after the last Do has returned, before
// closing what the batches use.
func (c *Coalescer[K, Req, Res]) Wait() { c.work.Wait() }

// drain runs batches for the key until its queue is empty.
func (c *Coalescer[K, Req, Res]) drain(key K, q *queue[Req, Res]) {
	defer c.work.Done()
	for {
		c.mu.Lock()
		n := min(len(q.pending), c.cfg.MaxBatch)
		if n == 0 {
			q.inFlight--
			if q.inFlight == 0 {
				delete(c.queues, key)
			}
			c.mu.Unlock()
			return
		}
		taken := q.pending[:n:n]
		q.pending = q.pending[n:]
		c.mu.Unlock()

		batch := make([]*waiter[Req, Res], 0, len(taken))
		for _, w := range taken {
			if err := w.ctx.Err(); err != nil {
				w.result <- Result[Res]{Err: err}
				continue
			}
			batch = append(batch, w)
		}
		if len(batch) == 0 {
			continue
		}
		reqs := make([]Req, len(batch))
		for i, w := range batch {
			reqs[i] = w.req
		}
		results := c.cfg.Run(context.Background(), key, reqs)
		for i, w := range batch {
			w.result <- results[i]
		}
	}
}
