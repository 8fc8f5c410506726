package node

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the node's Prometheus metrics.
type metrics struct {
	publishResults       *prometheus.CounterVec
	publishBufferedBytes prometheus.Gauge
	subscribers          prometheus.Gauge
	consumers            prometheus.Gauge
	delivered            prometheus.Counter
	acks                 prometheus.Counter
	unknownAcks          prometheus.Counter
	redeliveries         prometheus.Counter
	timeouts             prometheus.Counter
	buffered             prometheus.Gauge
	assignmentChanges    prometheus.Counter
	shardsClaimed        prometheus.Gauge
	handoffSeconds       prometheus.Histogram
	voided               prometheus.Counter
	// Dead letters (deadletter.go): labelled by subscription, of which
	// only those an admin gave a dead-letter topic ever get a series.
	deadLettered       *prometheus.CounterVec
	deadLetterFailures prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		publishResults: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamgate_publish_results_total",
			Help: "Publish results sent to clients, by gRPC code.",
		}, []string{"code"}),
		publishBufferedBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "streamgate_publish_buffered_bytes",
			Help: "Bytes of messages handed to the backend and not yet confirmed.",
		}),
		subscribers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "streamgate_subscribe_subscribers",
			Help: "Open Subscribe streams on this node.",
		}),
		consumers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "streamgate_subscribe_backend_consumers",
			Help: "Subscriptions this node reads from the backend.",
		}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamgate_subscribe_delivered_messages_total",
			Help: "Messages sent to subscribers, redeliveries included.",
		}),
		acks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamgate_subscribe_acked_messages_total",
			Help: "Messages acked by subscribers.",
		}),
		unknownAcks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamgate_subscribe_unknown_acks_total",
			Help: "Acks and nacks for ids the stream did not hold (ignored).",
		}),
		redeliveries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamgate_subscribe_handed_back_messages_total",
			Help: "In-flight messages handed back for redelivery (nack, subscriber gone or timed out).",
		}),
		timeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamgate_subscribe_ack_timeouts_total",
			Help: "Subscribers disconnected for holding a message past the ack timeout.",
		}),
		buffered: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "streamgate_subscribe_buffered_messages",
			Help: "Fetched messages waiting for delivery on this node.",
		}),
		assignmentChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamgate_cluster_assignment_changes_total",
			Help: "Shards whose owning subscriber changed, as seen by this node.",
		}),
		shardsClaimed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "streamgate_cluster_shards_claimed",
			Help: "Shards this node claims (reads, or holds in flight).",
		}),
		handoffSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "streamgate_cluster_handoff_seconds",
			Help:    "Time to save a moved shard's position before letting another node read it.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8),
		}),
		voided: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamgate_subscribe_voided_messages_total",
			Help: "In-flight messages made void because their shard moved under this node or its log was reset; they are delivered again.",
		}),
	}
	m.deadLettered = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "streamgate_subscribe_dead_lettered_messages_total",
		Help: "Messages published to their subscription's dead-letter topic and acked (after max_delivery_attempts).",
	}, []string{"subscription"})
	m.deadLetterFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "streamgate_subscribe_dead_letter_failures_total",
		Help: "Publishes to a dead-letter topic that failed; the message stays held and is published again.",
	})
	if reg != nil {
		reg.MustRegister(m.deadLettered, m.deadLetterFailures)
		reg.MustRegister(m.publishResults, m.publishBufferedBytes, m.subscribers, m.consumers,
			m.delivered, m.acks, m.unknownAcks, m.redeliveries, m.timeouts,
			m.buffered, m.assignmentChanges, m.shardsClaimed, m.handoffSeconds, m.voided)
	}
	return m
}
