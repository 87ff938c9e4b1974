package balancer

import (
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics reports what the policy does on every connection that dials with
// DialOptions(WithMetrics(m)), per endpoint address: picks, attempts that
// failed by the node's fault, ejections, the latency EWMA, the calls in
// flight and whether the endpoint is ejected; and how many endpoints are
// ready to take calls. It knows endpoints by address only; the node behind
// an address is the resolver's business. Two connections to one target
// share the series of an endpoint both use: counters add up, in-flight
// calls add up, latency is the higher, ejected is either.
type Metrics struct {
	id         string
	picks      *prometheus.CounterVec
	failures   *prometheus.CounterVec
	ejections  *prometheus.CounterVec
	ready      *prometheus.GaugeVec
	latencyDsc *prometheus.Desc
	inflight   *prometheus.Desc
	ejectedDsc *prometheus.Desc

	mu        sync.Mutex
	endpoints map[endpointSeries][]*load // the loads of each series' live endpoints
}

type endpointSeries struct{ target, addr string }

// add gives l the counters of target's endpoint addr, and counts it in the
// series' gauges until remove.
func (m *Metrics) add(target, addr string, l *load) {
	m.mu.Lock()
	defer m.mu.Unlock()
	key := endpointSeries{target, addr}
	m.endpoints[key] = append(m.endpoints[key], l)
	l.picks = m.picks.WithLabelValues(target, addr)
	failures, ejections := m.failures.WithLabelValues(target, addr), m.ejections.WithLabelValues(target, addr)
	l.failed, l.ejectedOnce = failures.Inc, ejections.Inc
}

// remove drops l from its series, and the series once no endpoint uses it:
// in a cluster whose nodes come and go on new addresses, a long-lived
// client would otherwise keep a series per address it ever saw.
func (m *Metrics) remove(target, addr string, l *load) {
	m.mu.Lock()
	defer m.mu.Unlock()
	key := endpointSeries{target, addr}
	loads := slices.DeleteFunc(m.endpoints[key], func(o *load) bool { return o == l })
	if len(loads) > 0 {
		m.endpoints[key] = loads
		return
	}
	delete(m.endpoints, key)
	for _, v := range []*prometheus.CounterVec{m.picks, m.failures, m.ejections} {
		v.DeleteLabelValues(target, addr)
	}
}

// endpointGauges are the gauges read from the live endpoints at scrape time,
// which costs the calls nothing.
type endpointGauges struct{ *Metrics }

func (m endpointGauges) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.latencyDsc
	ch <- m.inflight
	ch <- m.ejectedDsc
}

func (m endpointGauges) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for key, loads := range m.endpoints {
		var latency time.Duration
		var inflight int64
		ejected := 0.0
		for _, l := range loads {
			latency = max(latency, l.latency())
			inflight += l.inflight.Load()
			if l.ejected.Load() {
				ejected = 1
			}
		}
		ch <- prometheus.MustNewConstMetric(m.latencyDsc, prometheus.GaugeValue, latency.Seconds(), key.target, key.addr)
		ch <- prometheus.MustNewConstMetric(m.inflight, prometheus.GaugeValue, float64(inflight), key.target, key.addr)
		ch <- prometheus.MustNewConstMetric(m.ejectedDsc, prometheus.GaugeValue, ejected, key.target, key.addr)
	}
}

var (
	metricsByID sync.Map // id -> *Metrics, for the policy's config to name
	nextID      atomic.Uint64
)

// NewMetrics registers the balancer metrics into reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	labels := []string{"target", "addr"}
	m := &Metrics{
		id:        strconv.FormatUint(nextID.Add(1), 10),
		endpoints: map[endpointSeries][]*load{},
		picks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "routeguide_balancer_picks_total",
			Help: "Endpoints picked for call attempts, by target and endpoint address; each one's share of a target's picks is its share of the load.",
		}, labels),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "routeguide_balancer_failures_total",
			Help: "Call attempts that failed by the node's fault (UNAVAILABLE, INTERNAL, UNKNOWN, DATA_LOSS), which outlier ejection counts, by target and endpoint address.",
		}, labels),
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "routeguide_balancer_ejections_total",
			Help: "Times an endpoint was ejected for failing more calls than the outlier detection threshold, by target and endpoint address.",
		}, labels),
		ready: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "routeguide_balancer_ready_endpoints",
			Help: "Endpoints that are connected and healthy, so the policy picks them, by target.",
		}, []string{"target"}),
		latencyDsc: prometheus.NewDesc("routeguide_balancer_latency_seconds",
			"The policy's latency EWMA of an endpoint (peak-sensitive; decays over about a second), by target and endpoint address.", labels, nil),
		inflight: prometheus.NewDesc("routeguide_balancer_in_flight_calls",
			"Call attempts in flight on an endpoint, by target and endpoint address.", labels, nil),
		ejectedDsc: prometheus.NewDesc("routeguide_balancer_ejected",
			"1 while an endpoint is ejected for failing calls, else 0, by target and endpoint address.", labels, nil),
	}
	for _, c := range []prometheus.Collector{m.picks, m.failures, m.ejections, m.ready, endpointGauges{m}} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register balancer metrics: %w", err)
		}
	}
	metricsByID.Store(m.id, m)
	return m, nil
}

// metricsByIDString is the Metrics a policy config names, nil for none.
func metricsByIDString(id string) (*Metrics, error) {
	if id == "" {
		return nil, nil
	}
	m, ok := metricsByID.Load(id)
	if !ok {
		return nil, fmt.Errorf("no balancer.Metrics with id %q in this process", id)
	}
	return m.(*Metrics), nil
}
