package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tokenorchestrator/tokenorchestrator/internal/lease"
)

// classify turns a database error into the domain's: no row is
// lease.ErrKeyNotFound, and anything that says the database could not be
// reached or did not answer in time is lease.ErrUnavailable, as is a
// conflict that persisted through retries (the caller may try again).
// Other errors pass through.
func classify(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, pgx.ErrNoRows):
		return lease.ErrKeyNotFound
	case unavailable(err), conflicted(err):
		return fmt.Errorf("%w: %w", lease.ErrUnavailable, err)
	default:
		return err
	}
}

// conflictTries is how often a statement that failed on a conflict is run.
const conflictTries = 3

// conflicted reports whether a statement failed on a deadlock or a
// serialization failure. PostgreSQL then rolled back the whole statement
// (every statement of the store runs in a transaction of its own), so
// running it again is safe.
func conflicted(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40P01" || pgErr.Code == "40001")
}

// retryConflicts runs f, and again when it failed on a conflict, up to
// conflictTries times in all.
func retryConflicts[T any](ctx context.Context, f func() (T, error)) (T, error) {
	for try := 1; ; try++ {
		v, err := f()
		if err == nil || !conflicted(err) || try == conflictTries || ctx.Err() != nil {
			return v, err
		}
	}
}

func unavailable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrSynchronousStandbysMissing) {
		return true
	}
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) {
		return true
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "57P01", // admin_shutdown
			"57P02", // crash_shutdown
			"57P03", // cannot_connect_now
			"53300", // too_many_connections
			"57014": // query_canceled: our statement timeout
			return true
		}
		// Class 08: connection exceptions.
		return len(pgErr.Code) == 5 && pgErr.Code[:2] == "08"
	}
	// pgconn reports a connection lost mid-statement this way, and a request
	// sent on a closed connection is always safe to retry.
	return pgconn.SafeToRetry(err) || pgconn.Timeout(err) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, io.ErrUnexpectedEOF)
}
