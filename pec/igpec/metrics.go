package igpec

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	failures   prometheus.Counter
	failN      atomic.Int64
	success    prometheus.Gauge
	rejected   prometheus.Gauge
	duration   prometheus.Histogram
	collectors []prometheus.Collector
}

// (Long on purpose: metric definitions only.)
func newMetrics(x *Index) *metrics {
	m := &metrics{
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pec_index_refresh_failures_total",
			Help: "Loads of the providers index that failed; the last good copy stayed in use.",
		}),
		success: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pec_index_last_success_timestamp_seconds",
			Help: "Unix time of the last successful load of the providers index.",
		}),
		rejected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pec_index_rejected_records",
			Help: "Malformed records left out of the providers index in use.",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pec_index_load_duration_seconds",
			Help:    "Time to load and build a snapshot of the providers index.",
			Buckets: prometheus.ExponentialBuckets(0.005, 4, 8),
		}),
	}
	age := func() float64 {
		if s := x.cur.Load(); s != nil {
			return x.now().Sub(s.Loaded).Seconds()
		}
		return 0
	}
	m.collectors = []prometheus.Collector{
		m.failures, m.success, m.rejected, m.duration,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pec_index_snapshot_age_seconds",
			Help: "Age of the providers index copy in use (RFC 6109 §4.5: refresh at least daily).",
		}, age),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pec_index_snapshot_stale",
			Help: "1 when the providers index copy in use is older than index.max_age.",
		}, func() float64 {
			if age() > x.cfg.MaxAge.Seconds() {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pec_index_records",
			Help: "Provider records in the index in use.",
		}, func() float64 {
			if s := x.cur.Load(); s != nil {
				return float64(len(s.Records))
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pec_index_domains",
			Help: "Certified domains in the index in use.",
		}, func() float64 {
			if s := x.cur.Load(); s != nil {
				return float64(s.Domains())
			}
			return 0
		}),
	}
	return m
}

func (m *metrics) register(reg prometheus.Registerer) error {
	for _, c := range m.collectors {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// failed counts a failed load in the metric and in a plain counter tests can read.
func (m *metrics) failed() {
	m.failures.Inc()
	m.failN.Add(1)
}

func (m *metrics) failuresValue() float64 { return float64(m.failN.Load()) }
