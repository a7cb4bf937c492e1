// Package store is the key pool on PostgreSQL: the one boundary between the
// rest of the program and the generated queries. It turns database outcomes
// into the domain's errors (internal/lease) and rows into its values; every
// rule of who holds a key, and when a lease or a key ends, is enforced by
// the SQL statements themselves.
package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/trace"

	"github.com/tokenorchestrator/tokenorchestrator/db/dbsqlc"
	"github.com/tokenorchestrator/tokenorchestrator/internal/batch"
	"github.com/tokenorchestrator/tokenorchestrator/internal/lease"
	"github.com/tokenorchestrator/tokenorchestrator/internal/secrets"
)

// Config holds the store's settings.
type Config struct {
	// KeyTTL is how long a key lives after its creation or last keep-alive.
	KeyTTL time.Duration
	// LeaseTTL is how long a lease lasts after its claim or last keep-alive.
	LeaseTTL time.Duration
	// QueryTimeout bounds every call, so that an unreachable database gives
	// lease.ErrUnavailable instead of a hang. Defaults to QueryTimeoutDefault.
	QueryTimeout time.Duration
	// MaxBatch is the most claims, releases or keep-alives that one statement
	// serves when requests arrive together; 1 turns batching off. Defaults
	// to MaxBatchDefault.
	MaxBatch int
	// MaxInFlight is how many batch statements of one kind (and, for claims,
	// one pool) may run at once. Defaults to MaxInFlightDefault.
	MaxInFlight int

	// Standby, when set, is a pool on a streaming hot standby of the
	// database, which reports read from (see Store.Reports); everything
	// else stays on the primary. Defaults to none: reports read from the
	// primary.
	Standby *pgxpool.Pool
	// MaxStandbyLag is how far behind the primary the standby's replay may
	// be for reports to read from it. Defaults to MaxStandbyLagDefault.
	MaxStandbyLag time.Duration
	// ReportFallback lets reports read from the primary while the standby
	// cannot be read or is too far behind. Defaults to false: they fail
	// with ErrReportsUnavailable, and the primary is spared their load.
	ReportFallback bool
	// ReportStatementTimeout bounds each statement of a report read from
	// the primary. Defaults to ReportStatementTimeoutDefault.
	ReportStatementTimeout time.Duration

	// OnLeasesEnded, when set, is told of the leases that a statement of
	// this store ended: released by a request, or expired and freed by the
	// background job. It runs on the statement's goroutine and must be
	// quick. Defaults to none.
	OnLeasesEnded func([]EndedLease)
	// OnCooldown, when set, is told of a cooldown applied after its lease
	// had ended (the release that asked for it came late); cooldowns of
	// releases come through OnLeasesEnded. Defaults to none.
	OnCooldown func(pool string)
	// TracerProvider, when set, traces the statements that serve batches
	// of requests, each linked to the requests it served (the statements
	// themselves are traced by a Tracer on the pool). Defaults to none.
	TracerProvider trace.TracerProvider
	// Secrets seals and opens the credentials keys carry. Defaults to none:
	// keys with secrets are refused (lease.ErrNoEncryptionKey), and a claim
	// of a key created with one fails.
	Secrets *secrets.Keyring
}

// EndedLease is a lease that a statement ended.
type EndedLease struct {
	Pool string
	// Expired: freed by the background job because its deadline passed;
	// else released by a request.
	Expired bool
	// Duration is how long the lease lasted by the database clock: from its
	// claim to its release, or to its deadline when it expired.
	Duration time.Duration
	// Cooldown: released with a cooldown, so no claim takes the key before
	// it ends.
	Cooldown bool
}

// Store runs the key pool's statements.
type Store struct {
	pool    *pgxpool.Pool
	queries *dbsqlc.Queries
	cfg     Config
	// standbyQueries run on Config.Standby; nil without one.
	standbyQueries *dbsqlc.Queries

	// tracer starts the spans of batches; nil without tracing.
	tracer trace.Tracer

	// The requests of a batch carry their callers' spans, to be linked.
	claims     *batch.Coalescer[claimTarget, trace.SpanContext, lease.Key]
	releases   *batch.Coalescer[struct{}, leaseRequest, lease.Key]
	keepAlives *batch.Coalescer[struct{}, leaseRequest, lease.Key]

	// ended tells the background job's batches where to start looking for
	// ended leases.
	ended endedLeases
}

// The defaults of Config, which New applies to a zero value. The server's
// configuration shows those of its settings as the defaults of its flags.
const (
	// QueryTimeoutDefault is the default of Config.QueryTimeout, DB_TIMEOUT.
	QueryTimeoutDefault = 5 * time.Second
	// MaxBatchDefault is the default of Config.MaxBatch.
	MaxBatchDefault = 64
	// MaxInFlightDefault is the default of Config.MaxInFlight.
	MaxInFlightDefault = 2
	// MaxStandbyLagDefault is the default of Config.MaxStandbyLag,
	// REPORT_MAX_LAG.
	MaxStandbyLagDefault = 30 * time.Second
	// ReportStatementTimeoutDefault is the default of
	// Config.ReportStatementTimeout, REPORT_STATEMENT_TIMEOUT.
	ReportStatementTimeoutDefault = 60 * time.Second
)

// validate reports every setting that is out of range, all at once.
func (c Config) validate() error {
	var errs []error
	for _, d := range []struct {
		name  string
		value time.Duration
	}{
		{"QueryTimeout", c.QueryTimeout}, {"MaxStandbyLag", c.MaxStandbyLag}, {"ReportStatementTimeout", c.ReportStatementTimeout},
	} {
		if d.value < 0 {
			errs = append(errs, fmt.Errorf("%s must be positive (zero for the default), not %s", d.name, d.value))
		}
	}
	for _, ttl := range []struct {
		name  string
		value time.Duration
	}{{"KeyTTL", c.KeyTTL}, {"LeaseTTL", c.LeaseTTL}} {
		if ttl.value < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative, not %s", ttl.name, ttl.value))
		}
	}
	for _, n := range []struct {
		name  string
		value int
	}{{"MaxBatch", c.MaxBatch}, {"MaxInFlight", c.MaxInFlight}} {
		if n.value < 0 {
			errs = append(errs, fmt.Errorf("%s must be positive (zero for the default), not %d", n.name, n.value))
		}
	}
	return errors.Join(errs...)
}

// New returns a store over the connection pool. It panics when cfg holds a
// value out of range: the server's configuration refuses such values
// before they get here.
func New(pool *pgxpool.Pool, cfg Config) *Store {
	if err := cfg.validate(); err != nil {
		panic(fmt.Errorf("store: invalid configuration: %w", err))
	}
	cfg.QueryTimeout = cmp.Or(cfg.QueryTimeout, QueryTimeoutDefault)
	cfg.MaxBatch = cmp.Or(cfg.MaxBatch, MaxBatchDefault)
	cfg.MaxInFlight = cmp.Or(cfg.MaxInFlight, MaxInFlightDefault)
	cfg.MaxStandbyLag = cmp.Or(cfg.MaxStandbyLag, MaxStandbyLagDefault)
	cfg.ReportStatementTimeout = cmp.Or(cfg.ReportStatementTimeout, ReportStatementTimeoutDefault)
	s := &Store{pool: pool, queries: dbsqlc.New(pool), cfg: cfg}
	if cfg.Standby != nil {
		s.standbyQueries = dbsqlc.New(cfg.Standby)
	}
	if cfg.TracerProvider != nil {
		s.tracer = cfg.TracerProvider.Tracer(tracerName)
	}
	s.claims = batch.New(batch.Config[claimTarget, trace.SpanContext, lease.Key]{
		Run: s.runClaims, MaxBatch: cfg.MaxBatch, MaxInFlight: cfg.MaxInFlight, Abandoned: func(_ claimTarget, key lease.Key) { s.ReleaseAbandoned(key) },
	})
	s.releases = batch.New(batch.Config[struct{}, leaseRequest, lease.Key]{
		Run: s.runReleases, MaxBatch: cfg.MaxBatch, MaxInFlight: cfg.MaxInFlight,
	})
	s.keepAlives = batch.New(batch.Config[struct{}, leaseRequest, lease.Key]{
		Run: s.runKeepAlives, MaxBatch: cfg.MaxBatch, MaxInFlight: cfg.MaxInFlight,
	})
	return s
}

// Close waits for the statements of batches in flight, and for keys claimed
// for callers that left to be released. Call it after the last request
// has returned and before closing the connection pool.
func (s *Store) Close() {
	s.claims.Wait()
	// Giving keys back queues releases, so they are waited for after claims.
	s.releases.Wait()
	s.keepAlives.Wait()
}

func (s *Store) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.cfg.QueryTimeout)
}

// Create creates count free keys in the pool, each with the seats of the
// pool's policy (or 1).
func (s *Store) Create(ctx context.Context, pool string, count int) ([]lease.Key, error) {
	return s.CreateSeats(ctx, pool, count, 0)
}

// CreateSeats is Create with the seats of each key (0: the pool's
// policy's, or 1).
func (s *Store) CreateSeats(ctx context.Context, pool string, count, seats int) ([]lease.Key, error) {
	if count < 1 || count > lease.MaxCreate {
		return nil, fmt.Errorf("count %d out of range 1..%d", count, lease.MaxCreate)
	}
	if seats != 0 && (seats < 1 || seats > lease.MaxSeats) {
		return nil, fmt.Errorf("%w: seats must be between 1 and %d, got %d", lease.ErrInvalidSeats, lease.MaxSeats, seats)
	}
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	rows, err := retryConflicts(ctx, func() ([]dbsqlc.KeyCreateRow, error) {
		return s.queries.KeyCreate(ctx, dbsqlc.KeyCreateParams{
			Pool:          pool,
			KeyTtlSeconds: s.cfg.KeyTTL.Seconds(),
			Count:         int32(count),
			Seats:         int32(seats),
			MaxSeats:      lease.MaxCreateSeats,
		})
	})
	if err != nil {
		return nil, classify(err)
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("%w: %d keys of the pool's seats are more than the %d seats one call creates",
			lease.ErrInvalidSeats, count, lease.MaxCreateSeats)
	}
	keys := make([]lease.Key, len(rows))
	for i, row := range rows {
		keys[i] = fromRow(dbsqlc.KeyGetRow(row))
	}
	return keys, nil
}

// Claim claims a random free key of the pool under a new lease; with
// labels ("name=value"), one that carries every label. Claims that arrive
// together on this replica for the same pool and labels share one
// statement.
func (s *Store) Claim(ctx context.Context, pool string, labels ...string) (lease.Key, error) {
	return queued(s, ctx, s.claims, newClaimTarget(pool, labels), trace.SpanContextFromContext(ctx))
}

// ClaimMany claims up to max free keys of the pool, each under its own
// lease, in one statement. It returns lease.ErrNoFreeKey when it finds none.
func (s *Store) ClaimMany(ctx context.Context, pool string, max int) ([]lease.Key, error) {
	return s.ClaimManyLabelled(ctx, pool, max, nil)
}

// ClaimManyLabelled is ClaimMany among the keys that carry every label
// given ("name=value"); without labels it is ClaimMany.
func (s *Store) ClaimManyLabelled(ctx context.Context, pool string, max int, labels []string) ([]lease.Key, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	var keys []lease.Key
	unopenable := false
	// A key whose secret does not open is set aside (released with a
	// cooldown) and the claim tried once more for what it lacks, so that
	// one such key neither fails the claims of its batch nor comes back
	// to them in a loop.
	for try := 0; try < 2 && len(keys) < max; try++ {
		rows, err := retryConflicts(ctx, func() ([]dbsqlc.KeyClaimRow, error) {
			return s.claimRows(ctx, s.queries, pool, labels, max-len(keys))
		})
		if err != nil {
			if len(keys) > 0 {
				break
			}
			return nil, classify(err)
		}
		opened, unopened := s.openClaimed(rows)
		keys = append(keys, opened...)
		if len(unopened) == 0 {
			break
		}
		unopenable = true
		s.setAside(ctx, unopened)
	}
	switch {
	case len(keys) > 0:
		return keys, nil
	case unopenable:
		return nil, lease.ErrSecretUnavailable
	}
	return nil, lease.ErrNoFreeKey
}

// HasFree reports whether a claim on the pool would find a key now.
func (s *Store) HasFree(ctx context.Context, pool string) (bool, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	free, err := s.queries.KeyPoolHasFree(ctx, pool)
	if err != nil {
		return false, classify(err)
	}
	return free, nil
}

// Get returns a live key.
func (s *Store) Get(ctx context.Context, id uuid.UUID) (lease.Key, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	row, err := s.queries.KeyGet(ctx, id)
	if err != nil {
		return lease.Key{}, classify(err)
	}
	return fromRow(row), nil
}

// Delete removes a live key for good and returns it as it was.
func (s *Store) Delete(ctx context.Context, id uuid.UUID) (lease.Key, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	row, err := retryConflicts(ctx, func() (dbsqlc.KeyDeleteRow, error) { return s.queries.KeyDelete(ctx, id) })
	if err != nil {
		return lease.Key{}, classify(err)
	}
	return fromRow(dbsqlc.KeyGetRow(row)), nil
}

// ReleaseEndedLeases frees up to max keys whose lease has ended and returns
// how many it freed.
func (s *Store) ReleaseEndedLeases(ctx context.Context, max int) (int, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	since, full := s.ended.start()
	rows, err := retryConflicts(ctx, func() ([]dbsqlc.KeyReleaseEndedLeasesRow, error) {
		return s.queries.KeyReleaseEndedLeases(ctx, dbsqlc.KeyReleaseEndedLeasesParams{Since: since, Max: int32(max)})
	})
	released := 0
	var scannedUntil time.Time
	for _, row := range rows {
		released += int(row.Released)
		scannedUntil = row.ScannedUntil
	}
	s.ended.done(full, err == nil && released < max, scannedUntil)
	if err != nil {
		return 0, classify(err)
	}
	if s.cfg.OnLeasesEnded != nil && released > 0 {
		ended := make([]EndedLease, 0, released)
		for _, row := range rows {
			for _, seconds := range row.LeaseSeconds {
				ended = append(ended, EndedLease{Pool: *row.Pool, Expired: true, Duration: secondsToDuration(seconds)})
			}
		}
		s.cfg.OnLeasesEnded(ended)
	}
	return released, nil
}

func secondsToDuration(seconds float64) time.Duration {
	return time.Duration(seconds * float64(time.Second))
}

// endedLeases keeps where the search for ended leases starts. A pass that
// has come to the end of the ended leases (a short batch) has released every
// lease that ended before the moment it looked, except those a request had
// locked at that moment: those a request was releasing, extending or
// deleting. So the next search starts a little below that moment rather
// than at the start of the index, past the dead entries of leases released
// long ago, which pile up there while an old snapshot prevents their
// removal. Once a minute one search starts from the start, for a lease
// whose request rolled back after it was skipped.
type endedLeases struct {
	mu       sync.Mutex
	from     *time.Time // nil: from the start
	lastFull time.Time
	fullBusy bool
}

const (
	// endedLeasesMargin is how far below the previous pass's moment a search
	// starts, for statements that committed just after it looked.
	endedLeasesMargin = 5 * time.Second
	// endedLeasesFullEvery is how often a search starts from the start.
	endedLeasesFullEvery = time.Minute
)

// start returns where a batch starts (nil: from the start) and whether it
// is the periodic search from the start.
func (e *endedLeases) start() (*time.Time, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.from == nil || (!e.fullBusy && time.Since(e.lastFull) >= endedLeasesFullEvery) {
		if !e.fullBusy {
			e.fullBusy = true
			return nil, true
		}
	}
	return e.from, false
}

// done records a batch's outcome: when it came to the end of the ended
// leases, the next search may start just below the moment it looked.
func (e *endedLeases) done(full, reachedEnd bool, scannedUntil time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if full {
		e.fullBusy = false
		if reachedEnd {
			e.lastFull = time.Now()
		}
	}
	if !reachedEnd || !full && e.from == nil {
		return
	}
	if from := scannedUntil.Add(-endedLeasesMargin); e.from == nil || from.After(*e.from) {
		e.from = &from
	}
}

// DeleteExpired deletes up to max keys whose life has ended and returns how
// many it deleted.
func (s *Store) DeleteExpired(ctx context.Context, max int) (int, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	n, err := retryConflicts(ctx, func() (int64, error) { return s.queries.KeyDeleteExpired(ctx, int32(max)) })
	if err != nil {
		return 0, classify(err)
	}
	return int(n), nil
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	return classify(s.pool.Ping(ctx))
}

// fromRow turns a row into a Key. Every statement that returns keys returns
// KeyGet's columns, so each of their row types converts to KeyGetRow. The
// columns blocked_at and times_assigned keep their names from before the
// words claim and held ("Words" in docs/api.md).
func fromRow(row dbsqlc.KeyGetRow) lease.Key {
	return lease.Key{
		ID:              row.ID,
		Pool:            row.Pool,
		CreatedAt:       row.CreatedAt,
		ExpiresAt:       row.ExpiresAt,
		LastKeepAliveAt: row.LastKeepAliveAt,
		TimesClaimed:    row.TimesAssigned,
		LeaseToken:      row.LeaseToken,
		ClaimedAt:       row.BlockedAt,
		LeaseExpiresAt:  row.LeaseExpiresAt,
		Labels:          decodeLabels(row.Labels),
		CoolingUntil:    row.CoolingUntil,
		Name:            row.Name,
		SecretHint:      row.SecretHint,
		Seats:           int(row.Seats),
		SeatsHeld:       seatsHeld(row.SeatsHeld),
	}
}

// seatsHeld is a statement's seats_held: -1 where the statement does not
// count them.
func seatsHeld(n int32) *int {
	if n < 0 {
		return nil
	}
	v := int(n)
	return &v
}
