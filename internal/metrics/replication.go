package metrics

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
)

var (
	replicationModeDesc = prometheus.NewDesc("tokenorchestrator_db_replication_mode",
		"1 for the replication mode of the database the service writes to, 0 for the others: synchronous (a commit is acknowledged once the synchronous standbys have it; a failover loses nothing acknowledged), waiting_for_standbys (fewer synchronous standbys are connected than synchronous_standby_names asks for: commits wait), asynchronous (acknowledged before any standby has it; a failover may lose it), none (no standby), unknown (the role cannot see its standbys: grant it pg_read_all_stats). Database-wide: see the README on summing across replicas.",
		[]string{"mode"}, nil)
	replicationStandbysDesc = prometheus.NewDesc("tokenorchestrator_db_standbys",
		"Standbys streaming from the database the service writes to, by pg_stat_replication.sync_state: sync (sync and quorum: they confirm commits), potential, async, unknown (not visible to the role). Database-wide: see the README on summing across replicas.",
		[]string{"sync_state"}, nil)
	replicationSettingsDesc = prometheus.NewDesc("tokenorchestrator_db_replication_settings",
		"Always 1; the labels carry the settings the commits of the database the service writes to run under. Database-wide: see the README on summing across replicas.",
		[]string{"synchronous_commit", "synchronous_standby_names"}, nil)
)

// WatchReplication exports, at every scrape, the replication mode of the
// database the service writes to, its standbys and its settings, like the
// other database-wide gauges.
func (m *Metrics) WatchReplication(state func(context.Context) (store.ReplicationState, error), logger *slog.Logger) {
	m.registry.MustRegister(&replicationCollector{state: state, logger: logger, shared: m.exportShared})
}

type replicationCollector struct {
	state  func(context.Context) (store.ReplicationState, error)
	logger *slog.Logger
	shared func() bool
}

func (c *replicationCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- replicationModeDesc
	ch <- replicationStandbysDesc
	ch <- replicationSettingsDesc
}

func (c *replicationCollector) Collect(ch chan<- prometheus.Metric) {
	if !c.shared() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := c.state(ctx)
	if err != nil {
		c.logger.Warn("replication state unavailable", "error", err)
		return
	}
	mode := st.Mode()
	for _, m := range store.ReplicationModes {
		v := 0.0
		if m == mode {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(replicationModeDesc, prometheus.GaugeValue, v, m)
	}
	for state, n := range map[string]int{"sync": st.Sync, "potential": st.Potential, "async": st.Async, "unknown": st.Unknown} {
		ch <- prometheus.MustNewConstMetric(replicationStandbysDesc, prometheus.GaugeValue, float64(n), state)
	}
	ch <- prometheus.MustNewConstMetric(replicationSettingsDesc, prometheus.GaugeValue, 1, st.SynchronousCommit, st.SynchronousStandbyNames)
}
