// Package migrate applies the embedded schema migrations with goose.
package migrate

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/tokenorchestrator/tokenorchestrator/migrations"
)

// newProvider builds a goose provider over the pool. The session locker holds
// a PostgreSQL advisory lock while migrating, so replicas that start together
// apply each migration exactly once and the others wait for them.
func newProvider(pool *pgxpool.Pool) (*goose.Provider, func() error, error) {
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return nil, nil, fmt.Errorf("migration locker: %w", err)
	}
	db := stdlib.OpenDBFromPool(pool)
	provider, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS, goose.WithSessionLocker(locker))
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("migration provider: %w", err)
	}
	return provider, db.Close, nil
}

// Up applies every pending migration.
func Up(ctx context.Context, pool *pgxpool.Pool) error {
	provider, closeDB, err := newProvider(pool)
	if err != nil {
		return err
	}
	defer closeDB()
	if _, err := provider.Up(ctx); err != nil {
		return fmt.Errorf("apply migrations: %w", err)
	}
	return nil
}

// Pending reports whether some migration has not been applied yet.
func Pending(ctx context.Context, pool *pgxpool.Pool) (bool, error) {
	provider, closeDB, err := newProvider(pool)
	if err != nil {
		return false, err
	}
	defer closeDB()
	return provider.HasPending(ctx)
}
