package pgfilter

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/custos-dev/custos/internal/policy"
)

type metrics struct {
	connections  *prometheus.CounterVec
	authFailures *prometheus.CounterVec
	active       prometheus.Gauge
	messages     *prometheus.CounterVec
	bytes        *prometheus.CounterVec
	cancels      *prometheus.CounterVec
	decisions    *prometheus.CounterVec
	// The decisions counter of each outcome, looked up once: statements
	// are counted on the hot path.
	decAllow, decDeny, decApproval prometheus.Counter
	parked                         *prometheus.CounterVec
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
	m.decAllow = m.decisions.WithLabelValues("allow")
	m.decDeny = m.decisions.WithLabelValues("deny")
	m.decApproval = m.decisions.WithLabelValues("approval_required")
	if reg != nil {
		reg.MustRegister(m.connections, m.authFailures, m.active, m.messages, m.bytes, m.cancels, m.decisions, m.parked)
	}
	return m
}

// decided counts a statement decision under its outcome (Decision.Label).
func (m *metrics) decided(d *policy.Decision) {
	switch d.Outcome() {
	case policy.OutcomeDeny:
		m.decDeny.Inc()
	case policy.OutcomeApprove:
		m.decApproval.Inc()
	default:
		m.decAllow.Inc()
	}
}
