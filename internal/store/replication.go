package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/tokenorchestrator/tokenorchestrator/db/dbsqlc"
)

// Replication modes of the primary, as ReplicationState.Mode tells them:
// what an acknowledged write survives.
const (
	// ReplicationSynchronous: every commit waits until enough standbys
	// (synchronous_standby_names) have it; a failover to one of them loses
	// nothing acknowledged.
	ReplicationSynchronous = "synchronous"
	// ReplicationWaiting: synchronous_standby_names asks for more
	// synchronous standbys than are connected, so commits wait until
	// enough come back: nothing is acknowledged meanwhile.
	ReplicationWaiting = "waiting_for_standbys"
	// ReplicationAsynchronous: commits are acknowledged before any standby
	// has them; a failover may lose what was acknowledged just before it.
	ReplicationAsynchronous = "asynchronous"
	// ReplicationNone: no standby and none asked for; there is no copy to
	// fail over to.
	ReplicationNone = "none"
	// ReplicationUnknown: the role may not see its standbys' sync_state
	// (it needs pg_read_all_stats), or the server is itself a standby.
	ReplicationUnknown = "unknown"
)

// ReplicationModes lists every mode, for the metric's label values.
var ReplicationModes = []string{ReplicationSynchronous, ReplicationWaiting, ReplicationAsynchronous, ReplicationNone, ReplicationUnknown}

// ReplicationState is what the server the service writes to says about
// its replication.
type ReplicationState struct {
	SynchronousCommit       string
	SynchronousStandbyNames string
	InRecovery              bool
	// Standbys by pg_stat_replication.sync_state: sync and quorum ones
	// (Sync), potential, async, and those whose state the role may not see
	// (Unknown).
	Sync, Potential, Async, Unknown int
}

// ReplicationState reads the replication settings and standbys of the
// server the service writes to.
func (s *Store) ReplicationState(ctx context.Context) (ReplicationState, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	return readReplicationState(ctx, s.queries)
}

// ReadReplicationState is ReplicationState on one connection (or pool):
// the check a new connection passes before the service writes through it.
func ReadReplicationState(ctx context.Context, db dbsqlc.DBTX) (ReplicationState, error) {
	return readReplicationState(ctx, dbsqlc.New(db))
}

func readReplicationState(ctx context.Context, q *dbsqlc.Queries) (ReplicationState, error) {
	row, err := q.ReplicationStateGet(ctx)
	if err != nil {
		return ReplicationState{}, classify(err)
	}
	return ReplicationState{
		SynchronousCommit:       row.SynchronousCommit,
		SynchronousStandbyNames: row.SynchronousStandbyNames,
		InRecovery:              row.InRecovery,
		Sync:                    int(row.SyncStandbys),
		Potential:               int(row.PotentialStandbys),
		Async:                   int(row.AsyncStandbys),
		Unknown:                 int(row.UnknownStandbys),
	}, nil
}

// CommitsWaitForStandbys reports whether a commit waits for standbys at
// all: synchronous_commit above local, and synchronous_standby_names set.
func (r ReplicationState) CommitsWaitForStandbys() bool {
	switch r.SynchronousCommit {
	case "off", "local":
		return false
	}
	return strings.TrimSpace(r.SynchronousStandbyNames) != ""
}

// RequiredSyncStandbys is how many standbys must confirm a commit, from
// synchronous_standby_names: "ANY n (...)", "FIRST n (...)", "n (...)", or a
// plain list, which asks for one. 0 when none is asked for.
func (r ReplicationState) RequiredSyncStandbys() int {
	names := strings.TrimSpace(r.SynchronousStandbyNames)
	if names == "" {
		return 0
	}
	upper := strings.ToUpper(names)
	for _, method := range []string{"ANY", "FIRST"} {
		if strings.HasPrefix(upper, method+" ") || strings.HasPrefix(upper, method+"\t") {
			names = strings.TrimSpace(names[len(method):])
			break
		}
	}
	if open := strings.IndexByte(names, '('); open > 0 {
		if n, err := strconv.Atoi(strings.TrimSpace(names[:open])); err == nil && n > 0 {
			return n
		}
	}
	return 1
}

// Mode tells what an acknowledged write survives (the Replication...
// constants).
func (r ReplicationState) Mode() string {
	switch {
	case r.InRecovery:
		return ReplicationUnknown
	case !r.CommitsWaitForStandbys() && r.Sync+r.Potential+r.Async+r.Unknown == 0:
		return ReplicationNone
	case !r.CommitsWaitForStandbys():
		return ReplicationAsynchronous
	case r.Sync >= r.RequiredSyncStandbys():
		return ReplicationSynchronous
	case r.Unknown > 0:
		return ReplicationUnknown
	default:
		return ReplicationWaiting
	}
}

// ErrSynchronousStandbysMissing: a new connection reached a server whose
// synchronous_standby_names asks for more synchronous standbys than are
// streaming from it. It is refused (the database is unavailable, 503),
// because such a server is either waiting for its standbys, and every
// commit through it would wait too, or it has just restarted and may
// acknowledge commits before it waits for them: a primary killed and
// restarted by its HA manager while a standby is being promoted did, in
// the failover test, and the commits it acknowledged were gone once it
// rejoined as a standby.
var ErrSynchronousStandbysMissing = errors.New("the server has fewer synchronous standbys than synchronous_standby_names asks for")

// RequireSynchronousStandbys checks a new connection: it fails with
// ErrSynchronousStandbysMissing when the server's commits wait for more
// synchronous standbys than it has (ReplicationWaiting). A server whose
// standbys the role cannot see passes.
func RequireSynchronousStandbys(ctx context.Context, db dbsqlc.DBTX) error {
	st, err := ReadReplicationState(ctx, db)
	if err != nil {
		return err
	}
	if st.Mode() == ReplicationWaiting {
		return fmt.Errorf("%w: synchronous_standby_names = %q, %d streaming", ErrSynchronousStandbysMissing,
			st.SynchronousStandbyNames, st.Sync)
	}
	return nil
}
