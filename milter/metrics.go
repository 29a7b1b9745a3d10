package milter

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gestore-pec/gestore/pec"
)

type metrics struct {
	transactions *prometheus.CounterVec
	eom          *prometheus.HistogramVec
	inflight     prometheus.Gauge

	// The reception point's own (issue 13): what arrives and what became of it.
	received  *prometheus.CounterVec
	anomalies *prometheus.CounterVec
	verify    prometheus.Histogram
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
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pec_reception_messages_total",
			Help: "Messages at the reception point by classification (busta, ricevuta, ordinaria, non-valida, relay, unknown) and outcome.",
		}, []string{"class", "outcome"}),
		anomalies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pec_reception_anomalies_total",
			Help: "Messages that were not valid PEC at the reception point (wrapped or refused), by reason (ordinary, dsn, signature, signer-unlisted, revoked, ...).",
		}, []string{"reason"}),
		verify: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pec_reception_verify_seconds",
			Help:    "Time to classify a message and run the trust check (signature, index, chain, CRL).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
	}
}

// observeReception counts one reception-point transaction. res may be nil (an error).
func (m *metrics) observeReception(class, outcome, reason string, res *pec.Received) {
	m.received.WithLabelValues(class, outcome).Inc()
	if reason != "" {
		m.anomalies.WithLabelValues(reason).Inc()
	}
	if res != nil && res.Timings.Verify > 0 {
		m.verify.Observe(res.Timings.Verify.Seconds())
	}
}

func (m *metrics) register(r prometheus.Registerer) error {
	return errors.Join(r.Register(m.transactions), r.Register(m.eom), r.Register(m.inflight),
		r.Register(m.received), r.Register(m.anomalies), r.Register(m.verify))
}
