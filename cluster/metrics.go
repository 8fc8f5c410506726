package cluster

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics exist whether or not a Registerer was given, so that the code
// that updates them needs no checks; unregistered they cost nothing.
type metrics struct {
	reg            prometheus.Registerer
	registered     []prometheus.Collector
	members        prometheus.Gauge
	updates        prometheus.Counter
	departures     *prometheus.CounterVec
	suspicions     prometheus.Counter
	refutations    *prometheus.CounterVec
	joinFailures   prometheus.Counter
	sendFailures   prometheus.Counter
	standingLosses prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		reg: reg,
		members: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "streamgate_cluster_members",
			Help: "Live cluster members this node knows, itself included.",
		}),
		updates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamgate_cluster_state_updates_total",
			Help: "Newer node states taken from other members.",
		}),
		departures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamgate_cluster_departures_total",
			Help: "Members gone, by reason: left (announced) or dead (declared by failure detection).",
		}, []string{"reason"}),
		standingLosses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamgate_cluster_standing_losses_total",
			Help: "Times this node stopped acting on its claims because its membership was in doubt (frozen, cut off, suspected).",
		}),
		suspicions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamgate_cluster_suspicions_total",
			Help: "Probes of a member by this node that failed and made it suspect.",
		}),
		refutations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamgate_cluster_refutations_total",
			Help: "Times this node refuted being suspected or declared dead by others. A death learned by push/pull arrives as a suspicion, so accusation=\"suspect\" may also follow a false death, during which the others had dropped this node's state and claims.",
		}, []string{"accusation"}),
		joinFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamgate_cluster_join_failures_total",
			Help: "Attempts to join the seeds, while alone, that reached no other node.",
		}),
		sendFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamgate_cluster_state_send_failures_total",
			Help: "Direct state sends that failed (push/pull repairs them).",
		}),
	}
	m.departures.WithLabelValues("left")
	m.departures.WithLabelValues("dead")
	m.refutations.WithLabelValues("suspect")
	m.refutations.WithLabelValues("dead")
	if reg == nil {
		return m, nil
	}
	for _, col := range []prometheus.Collector{m.members, m.updates, m.departures, m.suspicions, m.refutations, m.joinFailures, m.sendFailures, m.standingLosses} {
		if err := reg.Register(col); err != nil {
			m.unregister()
			return nil, fmt.Errorf("cluster: register metrics: %w", err)
		}
		m.registered = append(m.registered, col)
	}
	return m, nil
}

// unregister lets another Cluster in the same process register again.
func (m *metrics) unregister() {
	for _, col := range m.registered {
		m.reg.Unregister(col)
	}
	m.registered = nil
}
