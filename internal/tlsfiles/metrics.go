package tlsfiles

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics export, for every role a process loads files for, when the first
// certificate of those files expires, and how often changed files were
// refused. Register it in the registry the process serves. A nil *Metrics
// records nothing.
type Metrics struct {
	expiry  *prometheus.Desc
	refused *prometheus.CounterVec

	mu      sync.Mutex
	watched []expiring
}

// expiring is a watched set of files, whatever it holds.
type expiring interface {
	expiry() (role string, notAfter time.Time)
}

// NewMetrics makes the metrics; they have series once files are opened.
func NewMetrics() *Metrics {
	return &Metrics{
		expiry: prometheus.NewDesc("routeguide_tls_certificate_expiry_timestamp_seconds",
			"When the first certificate of the files in use for a role expires (its not-after time), in seconds since the epoch.",
			[]string{"role"}, nil),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "routeguide_tls_reload_failures_total",
			Help: "Changed TLS files that were refused (a key that is not the certificate's, a file cut short, an expired certificate), by role; the files loaded before stay in use.",
		}, []string{"role"}),
	}
}

func (m *Metrics) watch(w expiring) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.watched = append(m.watched, w)
	role, _ := w.expiry()
	m.refused.WithLabelValues(role) // at 0 from the start
}

func (m *Metrics) refuse(role string) {
	if m != nil {
		m.refused.WithLabelValues(role).Inc()
	}
}

// Describe is part of prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.expiry
	m.refused.Describe(ch)
}

// Collect is part of prometheus.Collector. It reads the files again when
// their interval has passed, so that a scrape sees a renewal even before a
// handshake uses it.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	watched := m.watched
	m.mu.Unlock()
	for _, w := range watched {
		role, notAfter := w.expiry()
		ch <- prometheus.MustNewConstMetric(m.expiry, prometheus.GaugeValue, float64(notAfter.Unix()), role)
	}
	m.refused.Collect(ch)
}
