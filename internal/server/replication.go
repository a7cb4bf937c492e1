package server

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tokenorchestrator/tokenorchestrator/internal/startstop"
	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
)

// replicationCheckInterval is how often the replication mode is read for
// the log; the metric reads it at every scrape.
const replicationCheckInterval = 10 * time.Second

// replicationWatch logs the replication mode of the database the service
// writes to whenever it changes into one that an operator must know of:
// asynchronous standbys (a failover may lose writes the service
// acknowledged), synchronous standbys missing (commits wait), or standbys
// the role cannot see. One line per change, not one per check.
type replicationWatch struct {
	startstop.Runner
	state  func(context.Context) (store.ReplicationState, error)
	logger *slog.Logger
}

func (w *replicationWatch) Start(ctx context.Context) error { return w.StartFunc(ctx, w.run) }

func (w *replicationWatch) run(ctx context.Context) {
	last := ""
	for {
		if st, err := w.state(ctx); err == nil {
			last = w.report(last, st)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(replicationCheckInterval):
		}
	}
}

// report logs the state if its mode differs from the last one logged, and
// returns its mode.
func (w *replicationWatch) report(last string, st store.ReplicationState) string {
	mode := st.Mode()
	if mode == last {
		return last
	}
	attrs := []any{"mode", mode, "synchronous_commit", st.SynchronousCommit,
		"synchronous_standby_names", st.SynchronousStandbyNames,
		"sync_standbys", st.Sync, "potential_standbys", st.Potential, "async_standbys", st.Async}
	switch mode {
	case store.ReplicationAsynchronous:
		w.logger.Warn("the database's standbys are asynchronous: a failover can lose claims, releases and keep-alives "+
			"acknowledged just before it, and hand a held key to a second client (docs/guarantees.md)", attrs...)
	case store.ReplicationWaiting:
		w.logger.Warn("the database waits for more synchronous standbys than are connected: writes wait until enough are back", attrs...)
	case store.ReplicationUnknown:
		w.logger.Warn("the replication of the database cannot be told: its standbys' sync_state is hidden from this role "+
			"(grant it pg_read_all_stats) or the server is a standby", attrs...)
	default:
		if last != "" {
			w.logger.Info("the database's replication mode changed", attrs...)
		}
	}
	return mode
}

// refuseUnreplicatedPrimary is the AfterConnect of the pool the service
// writes through: a connection to a server whose synchronous standbys are
// missing is closed at once (store.RequireSynchronousStandbys), and the
// request that wanted it answered 503, so that nothing is acknowledged
// there that a failover would lose.
func refuseUnreplicatedPrimary(ctx context.Context, conn *pgx.Conn) error {
	return store.RequireSynchronousStandbys(ctx, conn)
}
