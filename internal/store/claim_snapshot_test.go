package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/db/dbsqlc"
	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
)

// A claim takes a free key whose row another transaction changed and
// committed after the claim's statement began: a key claimed and released
// meanwhile is free in its newest version, which the claim locks. The
// claim updated the locked row by its address, which the statement's
// snapshot does not see in that version, and so answered no key although
// it had locked a free one (seen once in 21,000 cycles of 64 clients).
// Here the claim is held between its snapshot and its scan by a statement
// trigger of the test's, which waits for a lock that another session holds
// while it claims and releases the pool's one key.
// heldAfterSnapshot installs a statement trigger of the test's on
// key_state that makes every UPDATE of it wait, once its statement has
// taken its snapshot and before it reads a row, for a lock that holder
// holds; blocked is a connection whose statements wait so, and wait
// returns once one does.
func heldAfterSnapshot(t *testing.T, b *bundle) (holder, blocked *pgx.Conn, wait func()) {
	t.Helper()
	_, err := b.pool.Exec(b.ctx, `
		CREATE FUNCTION test_wait() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
		    PERFORM pg_advisory_xact_lock_shared(7411);
		    RETURN NULL;
		END $$;
		CREATE TRIGGER test_wait BEFORE UPDATE ON key_state FOR EACH STATEMENT EXECUTE FUNCTION test_wait();`)
	require.NoError(t, err)
	holder, err = pgx.Connect(b.ctx, b.pool.Config().ConnString())
	require.NoError(t, err)
	t.Cleanup(func() { holder.Close(context.Background()) })
	_, err = holder.Exec(b.ctx, "SELECT pg_advisory_lock(7411)")
	require.NoError(t, err)
	blocked, err = pgx.Connect(b.ctx, b.pool.Config().ConnString())
	require.NoError(t, err)
	t.Cleanup(func() { blocked.Close(context.Background()) })
	var pid uint32
	require.NoError(t, blocked.QueryRow(b.ctx, "SELECT pg_backend_pid()").Scan(&pid))
	return holder, blocked, func() {
		require.Eventually(t, func() bool {
			var waiting bool
			err := b.pool.QueryRow(b.ctx, "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid).Scan(&waiting)
			return err == nil && waiting
		}, 10*time.Second, 10*time.Millisecond, "the statement waits, its snapshot taken")
	}
}

func TestClaimTakesAKeyReleasedAfterItsStatementBegan(t *testing.T) {
	t.Parallel()
	for _, labelled := range []bool{false, true} {
		t.Run(map[bool]string{false: "claim", true: "labelled claim"}[labelled], func(t *testing.T) {
			t.Parallel()
			b := setup(t, store.Config{})
			keys, err := b.store.CreateKeys(b.ctx, "p", []store.NewKey{{Labels: map[string]string{"tier": "paid"}}})
			require.NoError(t, err)
			// One claim of the pool's one key, as KeyClaim or KeyClaimLabelled.
			claim := func(conn dbsqlc.DBTX) ([]uuid.UUID, []int64, error) {
				var ids []uuid.UUID
				var tokens []int64
				if labelled {
					rows, err := dbsqlc.New(conn).KeyClaimLabelled(b.ctx, dbsqlc.KeyClaimLabelledParams{
						Pool: "p", Label: "tier=paid", StartPosition: 0, OtherLabels: []string{}, Max: 1, LeaseTtlSeconds: 60})
					for _, r := range rows {
						ids, tokens = append(ids, r.ID), append(tokens, *r.LeaseToken)
					}
					return ids, tokens, err
				}
				rows, err := dbsqlc.New(conn).KeyClaim(b.ctx, dbsqlc.KeyClaimParams{Pool: "p", StartPosition: 0, Max: 1, LeaseTtlSeconds: 60})
				for _, r := range rows {
					ids, tokens = append(ids, r.ID), append(tokens, *r.LeaseToken)
				}
				return ids, tokens, err
			}
			holder, claimer, wait := heldAfterSnapshot(t, b)

			type result struct {
				ids    []uuid.UUID
				tokens []int64
				err    error
			}
			done := make(chan result, 1)
			go func() {
				ids, tokens, err := claim(claimer)
				done <- result{ids, tokens, err}
			}()
			wait()

			// Meanwhile the key is claimed and released, each committed.
			_, taken, err := claim(holder)
			require.NoError(t, err)
			require.Len(t, taken, 1)
			_, err = dbsqlc.New(holder).KeyReleaseMany(b.ctx, dbsqlc.KeyReleaseManyParams{
				Ids: []uuid.UUID{keys[0].ID}, LeaseTokens: taken, CooldownSeconds: []float64{0}})
			require.NoError(t, err)
			_, err = holder.Exec(b.ctx, "SELECT pg_advisory_unlock(7411)")
			require.NoError(t, err)

			r := <-done
			require.NoError(t, r.err)
			require.Equal(t, []uuid.UUID{keys[0].ID}, r.ids, "the claim takes the key, free in its newest version")
			got, err := b.store.Get(b.ctx, keys[0].ID)
			require.NoError(t, err)
			require.Equal(t, r.tokens[0], *got.LeaseToken, "and holds it")
		})
	}
}

// A claim of both seats of a key, one of which another transaction claimed
// and released after the claim's statement began: one seat is updated by
// its address, the other by key and seat, each once.
func TestClaimTakesBothSeatsWhenOneChangedAfterItsStatementBegan(t *testing.T) {
	t.Parallel()
	b := setup(t, store.Config{})
	keys, err := b.store.CreateSeats(b.ctx, "p", 1, 2)
	require.NoError(t, err)
	holder, claimer, wait := heldAfterSnapshot(t, b)
	type result struct {
		rows []dbsqlc.KeyClaimRow
		err  error
	}
	done := make(chan result, 1)
	go func() {
		rows, err := dbsqlc.New(claimer).KeyClaim(b.ctx, dbsqlc.KeyClaimParams{Pool: "p", StartPosition: 0, Max: 2, LeaseTtlSeconds: 60})
		done <- result{rows, err}
	}()
	wait()
	q := dbsqlc.New(holder)
	taken, err := q.KeyClaim(b.ctx, dbsqlc.KeyClaimParams{Pool: "p", StartPosition: 0, Max: 1, LeaseTtlSeconds: 60})
	require.NoError(t, err)
	require.Len(t, taken, 1)
	_, err = q.KeyReleaseMany(b.ctx, dbsqlc.KeyReleaseManyParams{
		Ids: []uuid.UUID{keys[0].ID}, LeaseTokens: []int64{*taken[0].LeaseToken}, CooldownSeconds: []float64{0}})
	require.NoError(t, err)
	_, err = holder.Exec(b.ctx, "SELECT pg_advisory_unlock(7411)")
	require.NoError(t, err)

	r := <-done
	require.NoError(t, r.err)
	require.Len(t, r.rows, 2, "both seats")
	require.NotEqual(t, *r.rows[0].LeaseToken, *r.rows[1].LeaseToken)
	got, err := b.store.Get(b.ctx, keys[0].ID)
	require.NoError(t, err)
	require.Equal(t, 2, *got.SeatsHeld)
	var assigned int
	require.NoError(t, b.pool.QueryRow(b.ctx,
		"SELECT count(*) FROM key_events WHERE key_id = $1 AND event = 'assigned' AND lease_token = ANY ($2)",
		keys[0].ID, []int64{*r.rows[0].LeaseToken, *r.rows[1].LeaseToken}).Scan(&assigned))
	require.Equal(t, 2, assigned, "each lease recorded once")
}
