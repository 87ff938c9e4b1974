package balancer

import (
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	grpcbalancer "google.golang.org/grpc/balancer"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
)

// Metrics reports what the policy does on every connection that dials with
// DialOptions(WithMetrics(m)): the picks it makes per endpoint address, and
// how many endpoints are ready to take calls. It knows endpoints by address
// only; the node behind an address is the resolver's business.
type Metrics struct {
	id    string
	picks *prometheus.CounterVec
	ready *prometheus.GaugeVec

	// subchannels counts the live subchannels of each pick series: two
	// connections to one target share a series, which goes with the last.
	mu          sync.Mutex
	subchannels map[pickSeries]int
}

type pickSeries struct{ target, addr string }

// counterFor returns the counter of target's picks of addr, for one more
// subchannel; release gives it back.
func (m *Metrics) counterFor(target, addr string) prometheus.Counter {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.subchannels[pickSeries{target, addr}]++
	return m.picks.WithLabelValues(target, addr)
}

// release drops the series of target's picks of addr once no subchannel
// uses it: in a cluster whose nodes come and go on new addresses, a
// long-lived client would otherwise keep a series per address it ever saw.
func (m *Metrics) release(target, addr string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	key := pickSeries{target, addr}
	if m.subchannels[key]--; m.subchannels[key] <= 0 {
		delete(m.subchannels, key)
		m.picks.DeleteLabelValues(target, addr)
	}
}

var (
	metricsByID sync.Map // id -> *Metrics, for the policy's config to name
	nextID      atomic.Uint64
)

// NewMetrics registers the balancer metrics into reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		id:          strconv.FormatUint(nextID.Add(1), 10),
		subchannels: map[pickSeries]int{},
		picks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "routeguide_balancer_picks_total",
			Help: "Endpoints picked for calls by the round-robin policy, by target and endpoint address.",
		}, []string{"target", "addr"}),
		ready: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "routeguide_balancer_ready_endpoints",
			Help: "Endpoints that are connected and healthy, so the policy picks them, by target.",
		}, []string{"target"}),
	}
	for _, c := range []prometheus.Collector{m.picks, m.ready} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register balancer metrics: %w", err)
		}
	}
	metricsByID.Store(m.id, m)
	return m, nil
}

// lbConfig is the policy's config in the service config. gRPC hands it to
// each connection's balancer, which is how a connection finds the Metrics
// its dialer chose: by id, since a config is JSON.
type lbConfig struct {
	serviceconfig.LoadBalancingConfig
	Metrics string `json:"metrics,omitempty"`
}

func (builder) ParseConfig(raw json.RawMessage) (serviceconfig.LoadBalancingConfig, error) {
	var cfg lbConfig
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return nil, fmt.Errorf("%s config: %w", Name, err)
	}
	if cfg.Metrics != "" {
		if _, ok := metricsByID.Load(cfg.Metrics); !ok {
			return nil, fmt.Errorf("%s config: no balancer.Metrics with id %q in this process", Name, cfg.Metrics)
		}
	}
	return &cfg, nil
}

func metricsFor(cfg serviceconfig.LoadBalancingConfig) *Metrics {
	c, ok := cfg.(*lbConfig)
	if !ok || c.Metrics == "" {
		return nil
	}
	m, _ := metricsByID.Load(c.Metrics)
	return m.(*Metrics)
}

// pickCounter counts the picks of one connection's endpoints. Counters are
// looked up once per subchannel, so a pick costs one map read and an add.
type pickCounter struct {
	metrics *Metrics
	target  string
	bySC    sync.Map // grpcbalancer.SubConn -> prometheus.Counter
}

// track wraps opts so that the counter of the subchannel for addrs is known
// from its creation to its shutdown.
func (p *pickCounter) track(addrs []resolver.Address, opts grpcbalancer.NewSubConnOptions, create func(grpcbalancer.NewSubConnOptions) (grpcbalancer.SubConn, error)) (grpcbalancer.SubConn, error) {
	if len(addrs) == 0 {
		return create(opts)
	}
	var created atomic.Pointer[grpcbalancer.SubConn]
	addr := addrs[0].Addr
	listener := opts.StateListener
	opts.StateListener = func(s grpcbalancer.SubConnState) {
		if s.ConnectivityState == connectivity.Shutdown {
			if sc := created.Load(); sc != nil {
				p.bySC.Delete(*sc)
				p.metrics.release(p.target, addr)
			}
		}
		if listener != nil {
			listener(s)
		}
	}
	sc, err := create(opts)
	if err != nil {
		return nil, err
	}
	p.bySC.Store(sc, p.metrics.counterFor(p.target, addr))
	created.Store(&sc) // only now may a shutdown release the counter
	return sc, nil
}

// wrap returns a picker that counts what picker picks, and records how many
// endpoints are ready.
func (p *pickCounter) wrap(picker grpcbalancer.Picker) grpcbalancer.Picker {
	p.metrics.ready.WithLabelValues(p.target).Set(float64(readyEndpoints(picker)))
	return countingPicker{Picker: picker, counter: p}
}

type countingPicker struct {
	grpcbalancer.Picker
	counter *pickCounter
}

func (cp countingPicker) Pick(info grpcbalancer.PickInfo) (grpcbalancer.PickResult, error) {
	res, err := cp.Picker.Pick(info)
	if err == nil {
		if c, ok := cp.counter.bySC.Load(res.SubConn); ok {
			c.(prometheus.Counter).Inc()
		}
	}
	return res, err
}
