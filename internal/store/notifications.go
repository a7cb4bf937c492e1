package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tokenorchestrator/tokenorchestrator/db/dbsqlc"
)

// ErrUnexpectedNotification: a notification on the channel of freed keys
// whose payload is not "<freed> <pool>". The listener stays usable.
var ErrUnexpectedNotification = errors.New("unexpected notification")

// Listener is one connection that LISTENs for the keys freed in pools that
// some replica waits on (see RegisterWaiters). It is taken out of the
// connection pool for good: a LISTEN session must not serve queries.
type Listener struct {
	conn *pgx.Conn
}

// ListenKeysFreed takes a connection of the pool and LISTENs on it. Close
// the Listener when done.
func (s *Store) ListenKeysFreed(ctx context.Context) (*Listener, error) {
	pooled, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, classify(err)
	}
	conn := pooled.Hijack()
	if err := dbsqlc.New(conn).ListenKeysFreed(ctx); err != nil {
		_ = conn.Close(context.Background())
		return nil, classify(err)
	}
	return &Listener{conn: conn}, nil
}

// Next waits for the next notification and returns the pool whose keys
// were freed. A malformed payload gives ErrUnexpectedNotification; any
// other error means the connection is gone.
func (l *Listener) Next(ctx context.Context) (string, error) {
	n, err := l.conn.WaitForNotification(ctx)
	if err != nil {
		return "", classify(err)
	}
	// The payload is "<freed> <pool>" (announce_freed, migration 00005).
	freed, pool, ok := strings.Cut(n.Payload, " ")
	if _, convErr := strconv.Atoi(freed); !ok || convErr != nil {
		return "", fmt.Errorf("%w: payload %q", ErrUnexpectedNotification, n.Payload)
	}
	return pool, nil
}

// Close closes the listening connection.
func (l *Listener) Close() {
	_ = l.conn.Close(context.Background())
}
