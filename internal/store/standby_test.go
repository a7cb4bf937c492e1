package store_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/lease"
	"github.com/tokenorchestrator/tokenorchestrator/internal/pgembed"
	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
)

// Without a standby, reports read the primary. A report database that is
// not in recovery, or cannot be reached, is refused with the reason, so
// reports answer 503 rather than read what may not be the primary's
// history, unless falling back to the primary is allowed. (Reads on a real
// standby: test/faults.)
func TestReportsReadWhereTheyMay(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{})
	require.Equal(t, store.Freshness{Source: store.SourcePrimary}, b.reports(t).Freshness())
	_, err := b.reports(t).Leases(b.ctx, time.Now().Add(-time.Hour), time.Now(), "", 10)
	require.NoError(t, err, "a report on the primary runs in a read-only transaction with its timeout")

	notStandby := setup(t, store.Config{Standby: b.pool})
	_, err = notStandby.store.Reports(b.ctx)
	require.ErrorIs(t, err, store.ErrReportsUnavailable)
	require.ErrorContains(t, err, "not a standby")

	// Nothing listens on a port just freed.
	port, err := pgembed.FreePort()
	require.NoError(t, err)
	gone, err := pgxpool.New(b.ctx, fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=2", port))
	require.NoError(t, err)
	t.Cleanup(gone.Close)
	down := setup(t, store.Config{Standby: gone})
	_, err = down.store.Reports(b.ctx)
	require.ErrorIs(t, err, store.ErrReportsUnavailable)
	require.ErrorContains(t, err, "cannot be read")
	_, err = down.store.StandbyStatus(b.ctx)
	require.ErrorIs(t, err, lease.ErrUnavailable)

	fallback := setup(t, store.Config{Standby: gone, ReportFallback: true})
	r, err := fallback.store.Reports(b.ctx)
	require.NoError(t, err)
	require.Equal(t, store.SourcePrimary, r.Freshness().Source)
}
