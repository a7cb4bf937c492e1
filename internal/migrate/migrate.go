// Package migrate applies the embedded schema migrations with goose.
package migrate

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/tokenorchestrator/tokenorchestrator/migrations"
)

// withProvider runs f with a goose provider over the pool. The session
// locker holds a PostgreSQL advisory lock while migrating, so replicas that
// start together apply each migration exactly once and the others wait for
// them.
func withProvider[T any](pool *pgxpool.Pool, f func(*goose.Provider) (T, error)) (T, error) {
	var zero T
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return zero, fmt.Errorf("migration locker: %w", err)
	}
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	provider, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS, goose.WithSessionLocker(locker))
	if err != nil {
		return zero, fmt.Errorf("migration provider: %w", err)
	}
	return f(provider)
}

// Up applies every pending migration.
func Up(ctx context.Context, pool *pgxpool.Pool) error {
	_, err := Apply(ctx, pool)
	return err
}

// Apply applies every pending migration and returns their versions.
func Apply(ctx context.Context, pool *pgxpool.Pool) ([]int64, error) {
	return withProvider(pool, func(p *goose.Provider) ([]int64, error) {
		results, err := p.Up(ctx)
		if err != nil {
			return nil, fmt.Errorf("apply migrations: %w", err)
		}
		versions := make([]int64, len(results))
		for i, r := range results {
			versions[i] = r.Source.Version
		}
		return versions, nil
	})
}

// ErrNothingToRollBack: no migration is applied.
var ErrNothingToRollBack = errors.New("no migration is applied")

// RollBack undoes the most recently applied migration, dropping what it
// created, data included, and returns its version.
func RollBack(ctx context.Context, pool *pgxpool.Pool) (int64, error) {
	return withProvider(pool, func(p *goose.Provider) (int64, error) {
		result, err := p.Down(ctx)
		if errors.Is(err, goose.ErrNoNextVersion) {
			return 0, ErrNothingToRollBack
		}
		if err != nil {
			return 0, fmt.Errorf("roll back: %w", err)
		}
		return result.Source.Version, nil
	})
}

// Migration is one migration and whether the database has it.
type Migration struct {
	Version int64
	// File is the migration's file name.
	File string
	// AppliedAt is zero while the migration is pending.
	AppliedAt time.Time
}

// Applied reports whether the migration is applied.
func (m Migration) Applied() bool { return !m.AppliedAt.IsZero() }

// Status lists every migration in order.
func Status(ctx context.Context, pool *pgxpool.Pool) ([]Migration, error) {
	return withProvider(pool, func(p *goose.Provider) ([]Migration, error) {
		statuses, err := p.Status(ctx)
		if err != nil {
			return nil, fmt.Errorf("migration status: %w", err)
		}
		migrations := make([]Migration, len(statuses))
		for i, s := range statuses {
			migrations[i] = Migration{Version: s.Source.Version, File: filepath.Base(s.Source.Path)}
			if s.State == goose.StateApplied {
				migrations[i].AppliedAt = s.AppliedAt
			}
		}
		return migrations, nil
	})
}

// ErrPending says that some migration has not been applied yet.
var ErrPending = errors.New("migrations pending")

// Pending reports whether some migration has not been applied yet.
func Pending(ctx context.Context, pool *pgxpool.Pool) (bool, error) {
	return withProvider(pool, func(p *goose.Provider) (bool, error) { return p.HasPending(ctx) })
}
