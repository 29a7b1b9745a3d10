package milter

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	transactions *prometheus.CounterVec
	eom          *prometheus.HistogramVec
	inflight     prometheus.Gauge
}

func newMetrics() *metrics {
	return &metrics{
		transactions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pec_milter_transactions_total",
			Help: "Transactions decided at end-of-message, by role (pec-access, pec-reception, other) and outcome.",
		}, []string{"role", "outcome"}),
		eom: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pec_milter_end_of_message_seconds",
			Help:    "Time from end-of-message to the reply to Postfix (scan, sign, commit), by role.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"role"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pec_milter_end_of_message_inflight",
			Help: "End-of-message calls under way.",
		}),
	}
}

func (m *metrics) register(r prometheus.Registerer) error {
	return errors.Join(r.Register(m.transactions), r.Register(m.eom), r.Register(m.inflight))
}
