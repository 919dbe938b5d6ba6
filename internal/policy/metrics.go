package policy

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	decisions   *prometheus.CounterVec
	errors      *prometheus.CounterVec
	evalSeconds prometheus.Histogram
	reloads     *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "custos", Subsystem: "policy", Name: "decisions_total",
			Help: "Decisions by outcome (allow, approve, deny) and whether they came from the cache.",
		}, []string{"outcome", "cached"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "custos", Subsystem: "policy", Name: "errors_total",
			Help: "Decisions that failed and were denied, by kind (input, eval, timeout, canceled, undefined, malformed).",
		}, []string{"kind"}),
		evalSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "custos", Subsystem: "policy", Name: "evaluation_seconds",
			Help:    "Time of policy evaluations (cache misses).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25},
		}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "custos", Subsystem: "policy", Name: "loads_total",
			Help: "Policy loads and reloads by result (ok, error).",
		}, []string{"result"}),
	}
	if reg != nil {
		reg.MustRegister(m.decisions, m.errors, m.evalSeconds, m.reloads)
	}
	return m
}
