// Package leader elects one replica to run the background job, through a
// row in the leader table whose term runs by the database clock. Election
// is an economy, not a safety measure: every statement of the job is safe
// to run on all replicas at once, so two replicas that both believe they
// lead for a moment do no harm.
package leader

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tokenorchestrator/tokenorchestrator/internal/startstop"
)

// Store is what an Elector needs of the database (store.Store).
type Store interface {
	// AttemptElect takes or renews the lead for ttl; false with no error
	// means another replica leads.
	AttemptElect(ctx context.Context, name, id string, ttl time.Duration) (bool, error)
	// Resign gives the lead up at once.
	Resign(ctx context.Context, name, id string) error
}

// Config describes an Elector.
type Config struct {
	// Name of the elected role.
	Name string
	// TTL is a term's length. The leader renews every TTL/3; when it dies,
	// another replica takes over within TTL plus TTL/3. Defaults to
	// TTLDefault.
	TTL time.Duration
	// Logger. Defaults to slog.Default().
	Logger *slog.Logger
	// OnChange, when set, is told whenever this replica gains or loses the
	// lead.
	OnChange func(leading bool)
}

// Elector takes part in one election.
type Elector struct {
	// Runner gives the elector Stop and Started.
	startstop.Runner
	cfg   Config
	store Store
	id    string

	mu sync.Mutex
	// until is when this replica's term ends, by its own monotonic clock,
	// counted from before the statement that won or renewed it: it never
	// believes it leads longer than the database says.
	until time.Time
}

// TTLDefault is the default of Config.TTL, LEADER_TTL.
const TTLDefault = 5 * time.Second

// validate reports every setting that is out of range, all at once.
func (c Config) validate() error {
	var errs []error
	if c.Name == "" {
		errs = append(errs, errors.New("empty Name: it names the elected role"))
	}
	if c.TTL < 0 {
		errs = append(errs, fmt.Errorf("TTL must be positive (zero for the default), not %s", c.TTL))
	}
	return errors.Join(errs...)
}

// New returns an elector with a random identity. It panics when cfg holds
// a value out of range: the server's configuration refuses such values
// before they get here.
func New(store Store, cfg Config) *Elector {
	if err := cfg.validate(); err != nil {
		panic(fmt.Errorf("leader: invalid configuration: %w", err))
	}
	cfg.TTL = cmp.Or(cfg.TTL, TTLDefault)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	raw := make([]byte, 8)
	_, _ = rand.Read(raw)
	return &Elector{cfg: cfg, store: store, id: hex.EncodeToString(raw)}
}

// Leading reports whether this replica holds the lead now.
func (e *Elector) Leading() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return time.Now().Before(e.until)
}

// Start takes part in the background until Stop is called or ctx ends;
// then it resigns, so that another replica can take over at once, and Stop
// returns once it has.
func (e *Elector) Start(ctx context.Context) error {
	return e.StartFunc(ctx, e.run)
}

func (e *Elector) run(ctx context.Context) {
	ticker := time.NewTicker(e.cfg.TTL / 3)
	defer ticker.Stop()
	for {
		e.attempt(ctx)
		select {
		case <-ctx.Done():
			e.resign()
			return
		case <-ticker.C:
		}
	}
}

func (e *Elector) attempt(ctx context.Context) {
	started := time.Now()
	ctx, cancel := context.WithTimeout(ctx, e.cfg.TTL/3)
	defer cancel()
	won, err := e.store.AttemptElect(ctx, e.cfg.Name, e.id, e.cfg.TTL)
	if err != nil && ctx.Err() == nil {
		e.cfg.Logger.Warn("leader election failed", "role", e.cfg.Name, "error", err)
	}
	e.mu.Lock()
	was := time.Now().Before(e.until)
	switch {
	case won:
		e.until = started.Add(e.cfg.TTL)
	case err == nil:
		e.until = time.Time{} // another replica leads
	}
	// Otherwise the database did not answer: a term counted from the last
	// renewal ends by itself.
	now := time.Now().Before(e.until)
	e.mu.Unlock()
	if was != now {
		e.cfg.Logger.Info("leadership changed", "role", e.cfg.Name, "leading", now, "id", e.id)
		if e.cfg.OnChange != nil {
			e.cfg.OnChange(now)
		}
	}
}

func (e *Elector) resign() {
	e.mu.Lock()
	leading := time.Now().Before(e.until)
	e.until = time.Time{}
	e.mu.Unlock()
	if !leading {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := e.store.Resign(ctx, e.cfg.Name, e.id); err != nil {
		e.cfg.Logger.Warn("could not resign the lead; it expires by itself", "role", e.cfg.Name, "error", err)
	}
	if e.cfg.OnChange != nil {
		e.cfg.OnChange(false)
	}
}
