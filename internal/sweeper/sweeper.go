// Package sweeper is the background job that ends what nobody kept alive:
// it frees keys whose lease has ended and deletes keys whose life has ended.
//
// It is safe to run on every replica at once: each batch is one short
// statement that locks its rows with SKIP LOCKED, so two sweepers never work
// on the same key and neither stalls a claim for long.
package sweeper

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// Store is what the sweeper needs of the key store.
type Store interface {
	ReleaseEndedLeases(ctx context.Context, max int) (int, error)
	DeleteExpired(ctx context.Context, max int) (int, error)
}

// Config holds the sweeper's settings.
type Config struct {
	// Interval between passes. A lease that nobody keeps alive is released no
	// later than LEASE_TTL + Interval (plus the pass's own duration). Zero
	// means 1 second.
	Interval time.Duration
	// BatchSize is the most rows one statement touches; a pass repeats a
	// statement until it comes back with fewer. Zero means 1000.
	BatchSize int
	// Logger receives a line for every pass that did something, and errors.
	// Nil means slog.Default().
	Logger *slog.Logger
	// OnPass, when set, is called after every pass with its result; tests
	// wait on it instead of sleeping.
	OnPass func(Result)
}

// Result says what one pass did.
type Result struct {
	LeasesReleased int
	KeysExpired    int
	Err            error
}

// Sweeper runs passes on a ticker until stopped.
type Sweeper struct {
	store Store
	cfg   Config

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

// New returns a sweeper over the store.
func New(store Store, cfg Config) *Sweeper {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 1000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Sweeper{store: store, cfg: cfg}
}

// Start runs passes in the background until Stop is called or ctx ends.
func (s *Sweeper) Start(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cancel != nil {
		return
	}
	ctx, s.cancel = context.WithCancel(ctx)
	s.done = make(chan struct{})
	go s.loop(ctx, s.done)
}

// Stop ends the background passes and waits for the current one to finish.
func (s *Sweeper) Stop() {
	s.mu.Lock()
	cancel, done := s.cancel, s.done
	s.cancel, s.done = nil, nil
	s.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
}

func (s *Sweeper) loop(ctx context.Context, done chan struct{}) {
	defer close(done)
	ticker := time.NewTicker(s.cfg.Interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		result := s.RunOnce(ctx)
		switch {
		case result.Err != nil && ctx.Err() == nil:
			s.cfg.Logger.Warn("sweep failed", "error", result.Err,
				"leases_released", result.LeasesReleased, "keys_expired", result.KeysExpired)
		case result.LeasesReleased > 0 || result.KeysExpired > 0:
			s.cfg.Logger.Info("sweep", "leases_released", result.LeasesReleased, "keys_expired", result.KeysExpired)
		}
		if s.cfg.OnPass != nil {
			s.cfg.OnPass(result)
		}
	}
}

// RunOnce makes one pass: it frees every key whose lease has ended and
// deletes every key whose life has ended, a batch at a time.
func (s *Sweeper) RunOnce(ctx context.Context) Result {
	var result Result
	var err error
	result.LeasesReleased, err = s.drain(ctx, s.store.ReleaseEndedLeases)
	result.Err = errors.Join(result.Err, err)
	result.KeysExpired, err = s.drain(ctx, s.store.DeleteExpired)
	result.Err = errors.Join(result.Err, err)
	return result
}

// drain repeats one batch statement until a batch comes back short.
func (s *Sweeper) drain(ctx context.Context, batch func(context.Context, int) (int, error)) (int, error) {
	total := 0
	for {
		n, err := batch(ctx, s.cfg.BatchSize)
		total += n
		if err != nil || n < s.cfg.BatchSize {
			return total, err
		}
	}
}
