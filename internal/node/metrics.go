package node

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/routeguide-cluster/routeguide/discovery"
	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/tlsfiles"
	"github.com/routeguide-cluster/routeguide/routeguide"
	"github.com/routeguide-cluster/routeguide/routeguide/notes"
	"github.com/routeguide-cluster/routeguide/routeguide/notes/etcdnotes"
)

// nodeMetrics are everything a node exports, in a registry of its own, so
// that several nodes in one process (node -dev, tests) do not mix their
// series and nothing else in the process adds to them.
type nodeMetrics struct {
	registry     *prometheus.Registry
	grpc         *grpcMetrics
	registration *discovery.RegistrationMetrics
	// view hears how the node's view of the registry (behind /sd) follows it.
	view *discovery.ResolverMetrics

	routeDistance prometheus.Histogram
	routePoints   prometheus.Histogram
	notesPosted   prometheus.Counter
	rejections    *prometheus.CounterVec
}

// grpcHandlingBuckets are the buckets of grpc_server_handling_seconds.
var grpcHandlingBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// newNodeMetrics makes the node's metrics, with those of its TLS files.
func newNodeMetrics(featureCount int, store notes.Store, tlsFiles *tlsfiles.Metrics) (*nodeMetrics, error) {
	reg := prometheus.NewRegistry()
	m := &nodeMetrics{
		registry: reg,
		// go-grpc-middleware's standard gRPC server metrics, with the
		// handling-time histogram that latency dashboards need.
		grpc: newGRPCMetrics(grpcHandlingBuckets),
		routeDistance: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "routeguide_route_distance_meters",
			Help:    "Distance per route recorded by RecordRoute, in metres.",
			Buckets: prometheus.ExponentialBuckets(100, 10, 7),
		}),
		routePoints: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "routeguide_route_points",
			Help:    "Points per route recorded by RecordRoute.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 10),
		}),
		notesPosted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "routeguide_notes_posted_total",
			Help: "Notes stored by RouteChat.",
		}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "routeguide_limit_rejections_total",
			Help: "Requests refused with RESOURCE_EXHAUSTED because a limit was reached, by limit.",
		}, []string{"limit"}),
	}
	for _, limit := range routeguide.LimitNames {
		m.rejections.WithLabelValues(limit) // every series exists from the start, at 0
	}
	collectorsToRegister := []prometheus.Collector{
		m.grpc, m.routeDistance, m.routePoints, m.notesPosted, m.rejections, tlsFiles,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "routeguide_features_loaded",
			Help: "Features in the node's feature database.",
		}, func() float64 { return float64(featureCount) }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	}
	switch store := store.(type) {
	case *notes.Memory:
		collectorsToRegister = append(collectorsToRegister, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "routeguide_notes_stored",
			Help: "Notes the node holds in memory.",
		}, func() float64 { return float64(store.Len()) }))
	case *etcdnotes.Store:
		// Counting the notes in etcd would read the whole prefix on every
		// scrape; what etcd holds is etcd's own metrics' business.
		collectorsToRegister = append(collectorsToRegister,
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "routeguide_notes_unreadable_total",
				Help: "Values under the notes prefix in etcd that were not a note, each time a post read one.",
			}, func() float64 { return float64(store.Stats().Skipped) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "routeguide_notes_prune_failures_total",
				Help: "Posts after which deleting the notes of a location that no answer could carry failed; a later post retries.",
			}, func() float64 { return float64(store.Stats().PruneFailures) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "routeguide_notes_unread_answers_total",
				Help: "Posts whose note was stored in etcd but whose answer could not be read whole; each failed with UNAVAILABLE rather than answer with part of it.",
			}, func() float64 { return float64(store.Stats().UnreadAnswers) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "routeguide_notes_future_reads_total",
				Help: "Reads of an answer at its post's revision that an etcd member refused, not having applied that revision yet, and that went again linearizable.",
			}, func() float64 { return float64(store.Stats().FutureReads) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "routeguide_notes_bad_bounds_total",
				Help: "Keys under the notes' bounds in etcd that declare no bounds a node could have, each time a post read one; they widen nothing.",
			}, func() float64 { return float64(store.Stats().BadBounds) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "routeguide_notes_bad_floors_total",
				Help: "Floors of a location in etcd that were no note key of that location; each was deleted and bounded no range.",
			}, func() float64 { return float64(store.Stats().BadFloors) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "routeguide_notes_too_many_bounds_total",
				Help: "Posts that found more declared bounds than a post reads; each answered within the node's own limits and pruned nothing.",
			}, func() float64 { return float64(store.Stats().TooManyBounds) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "routeguide_notes_prunes_refused_total",
				Help: "Prunes that etcd refused because a node declared bounds after their answer; a later post prunes again.",
			}, func() float64 { return float64(store.Stats().PrunesRefused) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "routeguide_notes_budget_used_bytes",
				Help: "Data the notes' etcd holds, as last measured while notes were posted (the largest DbSizeInUse of its members, plus what the node wrote since).",
			}, func() float64 { return float64(store.Usage().InUse) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "routeguide_notes_budget_bytes",
				Help: "The notes budget in force: --notes-budget, or 3/4 of etcd's quota if less. Notes are refused once the used bytes reach it.",
			}, func() float64 { return float64(store.Usage().Limit) }),
		)
	}
	for _, c := range collectorsToRegister {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	var err error
	if m.registration, err = discovery.NewRegistrationMetrics(reg); err != nil {
		return nil, err
	}
	if m.view, err = discovery.NewResolverMetrics(reg); err != nil {
		return nil, err
	}
	return m, nil
}

// The service's Observer.

func (m *nodeMetrics) RouteRecorded(s *pb.RouteSummary) {
	m.routeDistance.Observe(float64(s.Distance))
	m.routePoints.Observe(float64(s.PointCount))
}

func (m *nodeMetrics) NotePosted() { m.notesPosted.Inc() }

func (m *nodeMetrics) LimitRejected(limit string) { m.rejections.WithLabelValues(limit).Inc() }
