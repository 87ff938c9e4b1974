// Package xdsserver serves the nodes registered under a service to proxyless
// gRPC clients of any language over xDS (ADS, gRFC A27): xds:///<service>
// resolves to a listener, a route, a round-robin cluster and one endpoint per
// node a discovery.View lists, with go-control-plane's snapshot cache.
package xdsserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/routeguide-cluster/routeguide/discovery"
	"github.com/routeguide-cluster/routeguide/internal/callpolicy"
)

// Source is the registry as the server follows it; *discovery.View is one.
type Source interface {
	// Current returns the registered nodes (nil until the registry has been
	// read once) and a channel closed at their next change.
	Current() (endpoints []discovery.Endpoint, changed <-chan struct{})
}

// Retry is the retry policy of the methods in Config.RetryMethods.
type Retry struct {
	// On lists the status codes retried, as xDS spells them
	// ("unavailable", "cancelled", ...), comma-separated.
	On string
	// MaxAttempts counts the first attempt: 4 means up to 3 retries.
	MaxAttempts int
	// BaseBackoff and MaxBackoff space the attempts out.
	BaseBackoff, MaxBackoff time.Duration
}

// Config describes what the server serves.
type Config struct {
	// Service is the name clients dial (xds:///<Service>) and the registry
	// service whose nodes are served; the listener, route and cluster are
	// named after it.
	Service string
	// RetryMethods are full method names (/package.Service/Method) retried
	// under Retry; other calls are never retried.
	RetryMethods []string
	Retry        Retry
	// EndpointPolicy, when set, names a gRPC balancing policy that a client
	// which registered it uses over the endpoints (gRFC A52, a TypedStruct);
	// every other client, and every other language, uses round robin.
	EndpointPolicy string
	// LeastRequest lists least_request (gRFC A48: the fewer calls in flight
	// of two random nodes) after EndpointPolicy, for the clients that have
	// it and not EndpointPolicy; needs EndpointPolicy.
	LeastRequest bool
	// OutlierDetection, when set, is the cluster's (gRFC A50), for the
	// clients that implement it, with A50's defaults for its zero fields.
	OutlierDetection *OutlierDetection
	// Logger hears of rejected resources and skipped endpoints; nil means
	// slog.Default().
	Logger *slog.Logger
}

// OutlierDetection is gRFC A50's outlier ejection by failure percentage,
// the type package balancer's policy takes too: a node that failed more
// than the threshold of its calls in an interval is out for a while.
type OutlierDetection = callpolicy.OutlierDetection

// FailurePercentageEjection is OutlierDetection's one algorithm.
type FailurePercentageEjection = callpolicy.FailurePercentageEjection

// Validate reports the first problem with c.
func (c Config) Validate() error {
	if od := c.OutlierDetection; od != nil {
		if err := od.Validate(); err != nil {
			return fmt.Errorf("xds %w", err)
		}
	}
	switch {
	case c.LeastRequest && c.EndpointPolicy == "":
		return errors.New("xds least request: lists a policy after the endpoint policy, which is not set")
	case c.Service == "" || strings.Contains(c.Service, "/"):
		return fmt.Errorf("xds service %q: must be non-empty and without '/'", c.Service)
	case strings.Contains(c.EndpointPolicy, "/"):
		return fmt.Errorf("xds endpoint policy %q: a gRPC policy name has no '/'", c.EndpointPolicy)
	case len(c.RetryMethods) > 0 && (c.Retry.On == "" || c.Retry.MaxAttempts < 2 || c.Retry.BaseBackoff <= 0 || c.Retry.MaxBackoff < c.Retry.BaseBackoff):
		return fmt.Errorf("xds retry %+v: needs status codes, at least 2 attempts and backoffs with 0 < base <= max", c.Retry)
	}
	for _, m := range c.RetryMethods {
		if err := callpolicy.ValidateFullMethod(m); err != nil {
			return fmt.Errorf("xds retry %w", err)
		}
	}
	return nil
}

// MaxRequestBytes is the largest xDS request a server of this package
// should take (grpc.MaxRecvMsgSize): room for an Envoy's node metadata,
// which lists its extensions, or a NACK's long error text.
const MaxRequestBytes = 64 << 10

// ServiceName is the gRPC service Register serves, as method names spell it.
var ServiceName = discoverypb.AggregatedDiscoveryService_ServiceDesc.ServiceName

// Server is an ADS server. New prepares it, Register puts it on a gRPC
// server, Follow feeds it, and Close ends its streams.
type Server struct {
	cfg    Config
	logger *slog.Logger
	static [3]types.Resource // listener, route, cluster
	cache  cache.SnapshotCache
	ads    serverv3.Server

	ctx     context.Context // ends every stream
	cancel  context.CancelFunc
	done    chan struct{} // closed when Follow's goroutine returns
	started atomic.Bool

	streams atomic.Int64
	nacks   nackGuard
}

// snapshotKey is the one node key of the cache: every client is served the
// same resources, whatever node id its bootstrap names.
const snapshotKey = "all"

type oneKey struct{}

func (oneKey) ID(*corev3.Node) string { return snapshotKey }

// New validates cfg and builds the server; nothing runs until Follow.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	listener, route, cluster, err := staticResources(cfg)
	if err != nil {
		return nil, fmt.Errorf("xds resources: %w", err)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:    cfg,
		logger: logger,
		static: [3]types.Resource{listener, route, cluster},
		// ads: answer only once a request names every resource it needs.
		cache:  cache.NewSnapshotCache(true, oneKey{}, nil),
		ctx:    ctx,
		cancel: cancel,
		done:   make(chan struct{}),
		nacks:  nackGuard{logger: logger, rejected: map[int64]map[string]string{}},
	}
	// Checked now, though nothing is served until Follow has read the
	// registry: a client that asks meanwhile waits, keeping what another
	// node served it, where an empty list would fail its every call.
	if _, err := newSnapshot(s.static, &endpointv3.ClusterLoadAssignment{ClusterName: cfg.Service}); err != nil {
		cancel()
		return nil, err
	}
	s.ads = serverv3.NewServer(ctx, s.cache, serverv3.CallbackFuncs{
		StreamOpenFunc: func(context.Context, int64, string) error {
			s.streams.Add(1)
			return nil
		},
		StreamClosedFunc: func(id int64, _ *corev3.Node) {
			s.streams.Add(-1)
			s.nacks.forget(id)
		},
		StreamRequestFunc: func(id int64, req *discoverypb.DiscoveryRequest) error {
			return s.nacks.check(id, req, s.currentVersion(req.GetTypeUrl()))
		},
	})
	return s, nil
}

// Register serves ADS on r; call it before r serves.
func (s *Server) Register(r grpc.ServiceRegistrar) {
	discoverypb.RegisterAggregatedDiscoveryServiceServer(r, s.ads)
}

// Follow starts serving what src lists, and every change of it, until
// Close. Until the registry has been read once, nothing is served: clients
// wait (an empty registry, once read, is served as an empty list). Call it
// once.
func (s *Server) Follow(src Source) {
	if s.started.Swap(true) {
		panic("xdsserver: Follow called twice")
	}
	go func() {
		defer close(s.done)
		for {
			eps, changed := src.Current()
			if eps != nil {
				if err := s.publish(eps); err != nil {
					// Never serve what a client would reject; keep the last good resources.
					s.logger.Error("keeping the last xDS resources", "error", err)
				}
			}
			select {
			case <-changed:
			case <-s.ctx.Done():
				return
			}
		}
	}()
}

// Close ends every xDS stream (clients keep what they have and reconnect,
// to this node or another) and stops following the registry.
func (s *Server) Close() {
	s.cancel()
	if s.started.Load() {
		<-s.done
	}
}

// Streams is the number of xDS streams open now.
func (s *Server) Streams() int { return int(s.streams.Load()) }

// publish serves eps from now on.
func (s *Server) publish(eps []discovery.Endpoint) error {
	cla, err := loadAssignment(s.cfg.Service, s.servable(eps))
	if err != nil {
		return err
	}
	snap, err := newSnapshot(s.static, cla)
	if err != nil {
		return err
	}
	return s.cache.SetSnapshot(s.ctx, snapshotKey, snap)
}

// servable drops the endpoints whose host is not an IP address: gRPC
// clients take only IPs in EDS, and C-core rejects the whole assignment for
// one name.
func (s *Server) servable(eps []discovery.Endpoint) []discovery.Endpoint {
	out := make([]discovery.Endpoint, 0, len(eps))
	for _, ep := range eps {
		if ap, err := netip.ParseAddrPort(ep.Addr); err != nil || ap.Port() == 0 {
			s.logger.Warn("not serving a node over xDS: its address is not IP:port", "key", ep.Key, "addr", ep.Addr)
			continue
		}
		out = append(out, ep)
	}
	return out
}

// currentVersion is the version of typeURL's resources served now.
func (s *Server) currentVersion(typeURL string) string {
	snap, err := s.cache.GetSnapshot(snapshotKey)
	if err != nil {
		return ""
	}
	return snap.GetVersion(typeURL)
}

// nackGuard breaks the loop of go-control-plane's snapshot cache, which
// answers a rejection (NACK) with the very version rejected, at once and
// for ever. The first rejection of a version on a stream is logged and let
// through; a second one ends the stream with an error, so the client
// retries after its backoff rather than at once (docs/DESIGN.md, "xDS for
// any language").
type nackGuard struct {
	logger *slog.Logger
	mu     sync.Mutex
	// rejected holds, per stream and type, the version last rejected.
	rejected map[int64]map[string]string
}

// errRejectedTwice is what a client that rejects a version twice is told.
var errRejectedTwice = errors.New("rejected the same xDS resources twice")

func (g *nackGuard) check(stream int64, req *discoverypb.DiscoveryRequest, current string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	typeURL := req.GetTypeUrl()
	if req.GetErrorDetail() == nil {
		if byType := g.rejected[stream]; byType != nil {
			delete(byType, typeURL)
			if len(byType) == 0 {
				delete(g.rejected, stream)
			}
		}
		return nil
	}
	byType := g.rejected[stream]
	if byType[typeURL] == current {
		return status.Errorf(codes.FailedPrecondition, "%v: %s version %s: %s; retry after backoff", errRejectedTwice, typeURL, current, req.GetErrorDetail().GetMessage())
	}
	if byType == nil {
		byType = map[string]string{}
		g.rejected[stream] = byType
	}
	byType[typeURL] = current
	g.logger.Error("an xDS client rejected our resources", "type", typeURL, "version", current,
		"client", req.GetNode().GetId(), "error", req.GetErrorDetail().GetMessage())
	return nil
}

func (g *nackGuard) forget(stream int64) {
	g.mu.Lock()
	delete(g.rejected, stream)
	g.mu.Unlock()
}
