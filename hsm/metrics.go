package hsm

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics of every signer of a keyring. Label values are bounded: outcome is ok, error or
// unavailable; kind is an UnavailableError kind or "sign" (the token refused the operation)
// or "input" (bad digest or options from the caller).
type metrics struct {
	signatures *prometheus.CounterVec
	errors     *prometheus.CounterVec
	wait       prometheus.Histogram
	ok         prometheus.Counter // signatures{outcome="ok"}, looked up once
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		signatures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pec_hsm_signatures_total",
			Help: "Signatures asked of the signing keys, by outcome (ok, error, unavailable).",
		}, []string{"outcome"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pec_hsm_errors_total",
			Help: "Signing errors by kind (session_wait, session_open, token_down, reopen, lost, sign, input).",
		}, []string{"kind"}),
		wait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pec_hsm_session_wait_seconds",
			Help:    "Time spent waiting for a free PKCS#11 session.",
			Buckets: []float64{.00001, .0001, .001, .005, .01, .05, .1, .5, 1, 5},
		}),
	}
	if reg != nil {
		m.signatures = register(reg, m.signatures)
		m.errors = register(reg, m.errors)
		m.wait = register(reg, m.wait)
	}
	m.ok = m.signatures.WithLabelValues("ok")
	return m
}

// register registers c, or returns the collector already registered under the same name (a
// second keyring in one process, as in tests or pecctl, shares the series).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if old, ok := are.ExistingCollector.(C); ok {
				return old
			}
		}
		panic(err) // a different collector with the same name: a programming error
	}
	return c
}

// done counts one signature attempt.
func (m *metrics) done(err error) {
	if err == nil {
		m.ok.Inc()
		return
	}
	var ue *UnavailableError
	if errors.As(err, &ue) {
		m.signatures.WithLabelValues("unavailable").Inc()
		m.errors.WithLabelValues(ue.Kind).Inc()
		return
	}
	m.signatures.WithLabelValues("error").Inc()
	var ie inputError
	if errors.As(err, &ie) {
		m.errors.WithLabelValues("input").Inc()
	} else {
		m.errors.WithLabelValues("sign").Inc()
	}
}

// inputError is a bad digest length or unsupported option given by the caller.
type inputError struct{ msg string }

func (e inputError) Error() string { return "hsm: " + e.msg }
