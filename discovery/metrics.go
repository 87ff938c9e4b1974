package discovery

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// RegistrationMetrics reports a Registrar's state as Prometheus metrics. It
// implements RegistrationEvents: pass it as Registration.Events.
type RegistrationMetrics struct {
	registered    prometheus.Gauge
	registrations prometheus.Counter
	failures      prometheus.Counter
	lastKeepAlive prometheus.Gauge
}

// NewRegistrationMetrics registers the registration metrics into reg.
func NewRegistrationMetrics(reg prometheus.Registerer) (*RegistrationMetrics, error) {
	m := &RegistrationMetrics{
		registered: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "routeguide_registered",
			Help: "1 while this node's key is live in etcd, 0 otherwise.",
		}),
		registrations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "routeguide_registrations_total",
			Help: "Successful registrations of this node in etcd, registrations after a loss included.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "routeguide_lease_keepalive_failures_total",
			Help: "Times the lease keepalive ended without the node ending it: the lease expired or was revoked, or etcd was out of reach for longer than the TTL.",
		}),
		lastKeepAlive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "routeguide_lease_last_keepalive_timestamp_seconds",
			Help: "Unix time of the last keepalive response from etcd for this node's lease.",
		}),
	}
	if err := registerAll(reg, m.registered, m.registrations, m.failures, m.lastKeepAlive); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *RegistrationMetrics) Registered() {
	m.registrations.Inc()
	m.registered.Set(1)
}
func (m *RegistrationMetrics) Unregistered() { m.registered.Set(0) }
func (m *RegistrationMetrics) KeptAlive()    { m.lastKeepAlive.Set(float64(time.Now().UnixNano()) / 1e9) }
func (m *RegistrationMetrics) LeaseLost()    { m.failures.Inc() }

// ResolverMetrics reports how resolvers follow the registry as Prometheus
// metrics, labelled by service. It implements ResolverEvents: pass it to
// NewBuilder with WithEvents.
type ResolverMetrics struct {
	endpoints *prometheus.GaugeVec
	updates   *prometheus.CounterVec
	restarts  *prometheus.CounterVec
	malformed *prometheus.CounterVec
	unleased  *prometheus.CounterVec
}

// NewResolverMetrics registers the resolver metrics into reg.
func NewResolverMetrics(reg prometheus.Registerer) (*ResolverMetrics, error) {
	labels := []string{"service"}
	m := &ResolverMetrics{
		endpoints: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "routeguide_resolver_endpoints",
			Help: "Endpoints the resolver currently knows.",
		}, labels),
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "routeguide_resolver_updates_total",
			Help: "Lists of endpoints the resolver handed to gRPC.",
		}, labels),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "routeguide_resolver_watch_restarts_total",
			Help: "Times the resolver listed and watched the registry again after its watch failed.",
		}, labels),
		malformed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "routeguide_resolver_malformed_entries_total",
			Help: "Registry values the resolver skipped because they were malformed.",
		}, labels),
		unleased: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "routeguide_resolver_unleased_entries_total",
			Help: "Registry entries the resolver skipped because they carry no lease (a node's entry always has one).",
		}, labels),
	}
	if err := registerAll(reg, m.endpoints, m.updates, m.restarts, m.malformed, m.unleased); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *ResolverMetrics) Updated(service string, n int) {
	m.endpoints.WithLabelValues(service).Set(float64(n))
	m.updates.WithLabelValues(service).Inc()
	// A series exists only once touched: touch the rarer ones too, so that
	// a dashboard shows 0 rather than nothing until the first event.
	m.restarts.WithLabelValues(service)
	m.malformed.WithLabelValues(service)
	m.unleased.WithLabelValues(service)
}
func (m *ResolverMetrics) WatchRestarted(service string) { m.restarts.WithLabelValues(service).Inc() }
func (m *ResolverMetrics) Malformed(service string)      { m.malformed.WithLabelValues(service).Inc() }
func (m *ResolverMetrics) Unleased(service string)       { m.unleased.WithLabelValues(service).Inc() }

func registerAll(reg prometheus.Registerer, collectors ...prometheus.Collector) error {
	for _, c := range collectors {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register metrics: %w", err)
		}
	}
	return nil
}
