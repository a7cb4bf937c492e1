package store

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/lease"
)

// A deadlock or a serialization failure rolls the statement back whole: it
// is run again, and when it keeps failing the caller is told the database is
// unavailable for now (503 with Retry-After), never an internal error.
func TestConflictsAreRetriedThenUnavailable(t *testing.T) {
	t.Parallel()
	for _, code := range []string{"40P01", "40001"} {
		conflict := &pgconn.PgError{Code: code, Message: "conflict"}
		tries := 0
		n, err := retryConflicts(context.Background(), func() (int, error) {
			tries++
			if tries < conflictTries {
				return 0, conflict
			}
			return 7, nil
		})
		require.NoError(t, err, code)
		require.Equal(t, 7, n)
		require.Equal(t, conflictTries, tries)

		tries = 0
		_, err = retryConflicts(context.Background(), func() (int, error) { tries++; return 0, conflict })
		require.Equal(t, conflictTries, tries)
		require.ErrorIs(t, classify(err), lease.ErrUnavailable, code)
	}

	// Other errors are not retried.
	tries := 0
	_, err := retryConflicts(context.Background(), func() (int, error) {
		tries++
		return 0, &pgconn.PgError{Code: "23505"}
	})
	require.Equal(t, 1, tries)
	require.False(t, errors.Is(classify(err), lease.ErrUnavailable))
}
