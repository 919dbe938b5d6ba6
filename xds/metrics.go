package xds

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	updates *prometheus.CounterVec
	acks    *prometheus.CounterVec
	nacks   *prometheus.CounterVec
	streams prometheus.Gauge
	refused prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "custos", Subsystem: "xds", Name: "config_updates_total",
			Help: "Configs offered to the xDS server by result (served, unchanged, rejected: the previous snapshot is kept).",
		}, []string{"result"}),
		acks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "custos", Subsystem: "xds", Name: "acks_total",
			Help: "Responses Envoy accepted, by resource type.",
		}, []string{"type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "custos", Subsystem: "xds", Name: "nacks_total",
			Help: "Responses Envoy refused (it keeps its previous configuration), by resource type.",
		}, []string{"type"}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "custos", Subsystem: "xds", Name: "streams",
			Help: "Open xDS streams.",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "custos", Subsystem: "xds", Name: "refused_requests_total",
			Help: "xDS requests refused because their node id is not in xds.node_ids.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.updates, m.acks, m.nacks, m.streams, m.refused)
	}
	return m
}
