package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tokenorchestrator/tokenorchestrator/internal/pgembed"
)

// standbySettings are the standby's choices documented in docs/operations.md
// ("Reads on a standby"): its snapshots do not hold back the primary's
// cleanup (no feedback), and replay waits for a report rather than cancel
// it, so the standby falls behind while a long report runs instead.
// A standby needs max_connections and the like at least as high as its
// primary's, so it starts from the primary's settings.
func standbySettings(s heldSchedule) map[string]string {
	settings := map[string]string{
		"hot_standby_feedback":        "off",
		"max_standby_streaming_delay": fmt.Sprintf("%ds", int((s.total() + time.Minute).Seconds())),
	}
	for name, value := range clusterSettings {
		settings[name] = value
	}
	return settings
}

// standbyHeld runs the held-snapshot schedule on the service with the
// snapshot held on a streaming standby of the harness's cluster, as a long
// report reading from REPORT_DATABASE_URL would: the primary, where the
// claims run, should not notice.
func (h *harness) standbyHeld(ctx context.Context, poolSize, clients int, s heldSchedule) (heldRun, error) {
	if h.cluster == nil {
		return heldRun{}, errors.New("needs the harness's own cluster (no -database-url) to make a standby of it")
	}
	holdOn := func(ctx context.Context, url string) (string, []string, func(), error) {
		dataDir := filepath.Join(h.tmp, "standby")
		_ = os.RemoveAll(dataDir)
		standby, err := pgembed.Start(ctx, pgembed.Config{DataDir: dataDir, StandbyOf: h.adminURL, Settings: standbySettings(s)})
		if err != nil {
			return "", nil, nil, fmt.Errorf("standby: %w", err)
		}
		cleanup := func() {
			_ = standby.Stop()
			_ = os.RemoveAll(dataDir)
		}
		standbyURL := withDatabase(standby.URL(), benchDB)
		if err := replayWait(ctx, url, standbyURL); err != nil {
			cleanup()
			return "", nil, nil, err
		}
		return standbyURL, []string{"REPORT_DATABASE_URL=" + standbyURL}, cleanup, nil
	}
	r, err := h.heldServiceOn(ctx, "service (HTTP), snapshot on a standby", poolSize, clients, s, holdOn)
	if err == nil {
		r.finish(s)
	}
	return r, err
}

// replayWait waits until the standby has replayed what the primary had
// written when it was called.
func replayWait(ctx context.Context, primaryURL, standbyURL string) error {
	p, err := pgx.Connect(ctx, primaryURL)
	if err != nil {
		return err
	}
	defer p.Close(ctx)
	var lsn string
	if err := p.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsn); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		conn, err := pgx.Connect(ctx, standbyURL)
		if err == nil {
			var replayed bool
			err = conn.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", lsn).Scan(&replayed)
			conn.Close(ctx)
			if err == nil && replayed {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return fmt.Errorf("the standby did not replay up to %s: %w", lsn, err)
			}
			return fmt.Errorf("the standby did not replay up to %s", lsn)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// standbySection sets the run with the snapshot on the standby against the
// one with the snapshot on the primary, when both ran.
func standbySection(run heldRun, onPrimary []heldRun, s heldSchedule) string {
	var b strings.Builder
	fmt.Fprintf(&b, `## Held snapshot on a standby

The held-snapshot schedule again (%s of load, a snapshot held from %s for
%s), with the snapshot held on a streaming hot standby of the cluster made
by pg_basebackup, as a long report reading from REPORT_DATABASE_URL holds
one; the servers have REPORT_DATABASE_URL set, and the claims run on the
primary. The standby runs with hot_standby_feedback=off and
max_standby_streaming_delay=%s, the choices docs/operations.md explains. The
standby's server shares the machine's cores with everything else.

`, s.total(), s.leadIn, s.hold, standbySettings(s)["max_standby_streaming_delay"])
	lowest := func(r heldRun) (float64, bool) {
		low, ok := 0.0, false
		for _, w := range r.windows {
			if w.phase == underHold && (!ok || w.ratio < low) {
				low, ok = w.ratio, true
			}
		}
		return low, ok
	}
	if low, ok := lowest(run); ok {
		fmt.Fprintf(&b, "- snapshot on the standby: the lowest window under the hold ran at %.0f%% of the rate before it\n", low*100)
	}
	if len(onPrimary) > 0 {
		if low, ok := lowest(onPrimary[0]); ok {
			fmt.Fprintf(&b, "- snapshot on the primary (the held-snapshot section above, same schedule): %.0f%%\n", low*100)
		}
	}
	b.WriteString("\nTargets, as for the snapshot on the primary:\n\n")
	for _, t := range heldTargets(run, true) {
		fmt.Fprintf(&b, "- %s %s: %s\n", mark(t.met), t.goal, t.actual)
	}
	b.WriteString("\n| window | phase | cycles/s | ratio | claim p99 |\n|---|---|---:|---:|---:|\n")
	for _, w := range run.windows {
		fmt.Fprintf(&b, "| %s–%s | %s | %.0f | %.2f | %s |\n", seconds(w.start), seconds(w.start+s.window), w.phase, w.rate, w.ratio, ms(w.claimP99))
	}
	b.WriteString("\n")
	return b.String()
}
