// Package startstop gives the background services one way to start and
// stop: Start(ctx) runs the service's goroutine, Stop ends it and waits for
// it, both may be called any number of times, and Stop before Start does
// nothing. A service embeds a Runner and implements Start with it.
package startstop

import (
	"context"
	"sync"
)

// Service is a background service: the sweeper, the leader elector, the
// wake-up hub's listener, the profiler.
type Service interface {
	// Start runs the service in the background until Stop is called or ctx
	// ends. A service already started is left alone.
	Start(ctx context.Context) error
	// Stop ends the service and returns once its goroutine has returned.
	Stop()
	// Started reports whether the service runs: Start was called, and Stop
	// not since.
	Started() bool
}

// Runner runs one goroutine between Start and Stop. Its zero value is
// ready to use.
type Runner struct {
	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

// StartFunc runs run in a goroutine with a context that ends on Stop or
// when ctx ends. It does nothing while the runner is started.
func (r *Runner) StartFunc(ctx context.Context, run func(ctx context.Context)) error {
	return r.StartWith(ctx, func() (func(context.Context), error) { return run, nil })
}

// StartWith is StartFunc for a service whose start can fail before its
// goroutine runs (binding a port, say): prepare runs first, under the
// runner's lock, and returns the function to run or the error Start
// returns, leaving the runner stopped.
func (r *Runner) StartWith(ctx context.Context, prepare func() (func(ctx context.Context), error)) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cancel != nil {
		return nil
	}
	run, err := prepare()
	if err != nil {
		return err
	}
	ctx, r.cancel = context.WithCancel(ctx)
	done := make(chan struct{})
	r.done = done
	go func() {
		defer close(done)
		run(ctx)
	}()
	return nil
}

// Stop ends the goroutine's context and waits for it to return.
func (r *Runner) Stop() {
	r.mu.Lock()
	cancel, done := r.cancel, r.done
	r.cancel, r.done = nil, nil
	r.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
}

// Started reports whether the runner was started and not stopped since.
func (r *Runner) Started() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cancel != nil
}

// StopAll stops the services one after the other, in the order given.
func StopAll(services ...Service) {
	for _, s := range services {
		s.Stop()
	}
}
