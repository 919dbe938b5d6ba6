package pgfilter

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	connections  *prometheus.CounterVec
	authFailures *prometheus.CounterVec
	active       prometheus.Gauge
	messages     *prometheus.CounterVec
	bytes        *prometheus.CounterVec
	cancels      *prometheus.CounterVec
	decisions    *prometheus.CounterVec
	// byOutcome holds the decisions counter of each outcome, looked up
	// once: statements are counted on the hot path.
	byOutcome map[string]prometheus.Counter
	parked    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "custos", Subsystem: "pg", Name: "connections_total",
			Help: "Client connections by outcome of the startup phase.",
		}, []string{"outcome"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "custos", Subsystem: "pg", Name: "auth_failures_total",
			Help: "Failed client authentications by reason.",
		}, []string{"reason"}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "custos", Subsystem: "pg", Name: "sessions_active",
			Help: "Authenticated sessions currently relaying.",
		}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "custos", Subsystem: "pg", Name: "messages_total",
			Help: "Relayed protocol messages by direction (added when a session ends).",
		}, []string{"direction"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "custos", Subsystem: "pg", Name: "bytes_total",
			Help: "Relayed bytes by direction (added when a session ends).",
		}, []string{"direction"}),
		cancels: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "custos", Subsystem: "pg", Name: "cancel_requests_total",
			Help: "Client cancel requests by outcome.",
		}, []string{"outcome"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "custos", Subsystem: "pg", Name: "statement_decisions_total",
			Help: "Statement decisions by outcome (allow, deny, approval_required).",
		}, []string{"outcome"}),
		parked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "custos", Subsystem: "pg", Name: "parked_statements_total",
			Help: "Statements parked for approval (requested) and how their wait ended.",
		}, []string{"outcome"}),
	}
	m.byOutcome = map[string]prometheus.Counter{}
	for _, o := range []string{"allow", "deny", "approval_required"} {
		m.byOutcome[o] = m.decisions.WithLabelValues(o)
	}
	if reg != nil {
		reg.MustRegister(m.connections, m.authFailures, m.active, m.messages, m.bytes, m.cancels, m.decisions, m.parked)
	}
	return m
}

// decision is the decisions counter of outcome.
func (m *metrics) decision(outcome string) prometheus.Counter {
	if c, ok := m.byOutcome[outcome]; ok {
		return c
	}
	return m.decisions.WithLabelValues(outcome)
}
