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
	}
	if reg != nil {
		reg.MustRegister(m.publishResults, m.publishBufferedBytes, m.subscribers, m.consumers,
			m.delivered, m.acks, m.unknownAcks, m.redeliveries, m.timeouts)
	}
	return m
}
