package node

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the node's Prometheus metrics.
type metrics struct {
	publishResults       *prometheus.CounterVec
	publishBufferedBytes prometheus.Gauge
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
	}
	if reg != nil {
		reg.MustRegister(m.publishResults, m.publishBufferedBytes)
	}
	return m
}
