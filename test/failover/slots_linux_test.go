package failover

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// starveSlots takes every connection slot of the node for d, as another
// program's connection leak would, and keeps ending the service's own
// sessions meanwhile, so that the service must connect again while no
// slot is free (SQLSTATE 53300, too_many_connections). The slot fillers
// connect as a superuser, so that the slots reserved for superusers,
// which the service (a superuser here) could take, are taken too. It
// returns how many connections it held at most and how many of the
// service's sessions it ended.
func starveSlots(t *testing.T, n *node, d time.Duration) (held, ended int) {
	t.Helper()
	var mu sync.Mutex
	var conns []*pgx.Conn
	defer func() {
		for _, c := range conns {
			_ = c.Close(context.Background())
		}
	}()
	// fill opens connections until the node refuses one.
	fill := func() {
		for len(conns) < 2000 {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			cfg, err := pgx.ParseConfig(n.url())
			if err != nil {
				fatalf(t, "%v", err)
			}
			cfg.RuntimeParams["application_name"] = "failover slot filler"
			c, err := pgx.ConnectConfig(ctx, cfg)
			cancel()
			if err != nil {
				var pgErr *pgconn.PgError
				if !errors.As(err, &pgErr) || pgErr.Code != "53300" {
					t.Logf("  filling %s's connection slots: %v", n.name, err)
				}
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}
	fill()
	if len(conns) == 0 {
		fatalf(t, "no connection to %s to take its slots with", n.name)
	}
	held = len(conns)
	until := time.Now().Add(d)
	for time.Now().Before(until) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		var n int
		err := conns[0].QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE application_name LIKE 'token-orchestrator%'`).Scan(&n)
		cancel()
		if err != nil {
			t.Logf("  ending the service's sessions: %v", err)
		}
		ended += n
		// The slots the service's sessions held are taken before it
		// connects again, most of the time: the race is the point.
		fill()
		held = max(held, len(conns))
		time.Sleep(200 * time.Millisecond)
	}
	return held, ended
}
