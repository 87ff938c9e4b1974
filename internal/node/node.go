// Package node runs one RouteGuide node: the gRPC server with health checking,
// reflection and its interceptors, its registration in etcd, and its drain.
package node

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/admin"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/routeguide-cluster/routeguide/balancer"
	"github.com/routeguide-cluster/routeguide/discovery"
	"github.com/routeguide-cluster/routeguide/discovery/xdsserver"
	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/tlsfiles"
	"github.com/routeguide-cluster/routeguide/internal/tracing"
	"github.com/routeguide-cluster/routeguide/routeguide"
	"github.com/routeguide-cluster/routeguide/routeguide/contract"
	"github.com/routeguide-cluster/routeguide/routeguide/features"
	"github.com/routeguide-cluster/routeguide/routeguide/notes"
	"github.com/routeguide-cluster/routeguide/routeguide/notes/etcdnotes"
)

// Node is one RouteGuide server. New prepares it and takes its port; Run
// serves until its context ends, then drains.
type Node struct {
	cfg       Config
	id        string
	advertise string // the gRPC address registered in etcd
	logger    *slog.Logger
	listener  net.Listener
	server    *grpc.Server
	health    *health.Server
	features  *features.DB
	etcd      *clientv3.Client // the registry's; nil for a standalone node
	notesEtcd *clientv3.Client // the notes'; nil for a standalone node
	registrar *discovery.Registrar
	ready     chan struct{}
	serving   atomic.Bool

	metrics         *nodeMetrics
	metricsListener net.Listener // nil when metrics are off
	httpServer      *http.Server
	admin           *grpc.Server // gRPC's admin services on the metrics listener; nil without DebugEndpoints
	adminCleanup    func()
	view            *discovery.View     // the registry, for /sd and xDS; nil when standalone
	xds             *xdsserver.Server   // the registry for xDS clients; nil when standalone
	tls             *tlsfiles.ServerTLS // of the gRPC server; nil serves plaintext
	tracing         *tracing.Provider   // nil when tracing is off
}

// New validates cfg, loads the features and listens on cfg.Listen, so that a
// bad file or a port in use is reported before anything is served.
func New(cfg Config) (_ *Node, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	db := features.Default()
	if cfg.FeaturesFile != "" {
		if db, err = features.Load(cfg.FeaturesFile); err != nil {
			return nil, err
		}
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	n := &Node{cfg: cfg, health: health.NewServer(), features: db, ready: make(chan struct{})}
	// Whatever New opened is closed again when a later step fails.
	defer func() {
		if err != nil {
			n.closeOpened()
		}
	}()
	if n.listener, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("listen for gRPC: %w", err)
	}
	port := n.listener.Addr().(*net.TCPAddr).Port
	if n.id = cfg.NodeID; n.id == "" {
		n.id = defaultNodeID(port)
	}
	n.logger = logger.With("node_id", n.id)
	// Every TLS file is read again when it changes (tlsfiles.Reload).
	tlsMetrics := tlsfiles.NewMetrics()
	reload := tlsfiles.Reload{Interval: cfg.TLSReloadInterval, Logger: n.logger, Metrics: tlsMetrics}
	if n.tls, err = cfg.TLS.Open(tlsfiles.GRPCFlags, reload); err != nil {
		return nil, err
	}
	n.tracing, err = tracing.Start(tracing.Config{
		Endpoint:    cfg.OTLPEndpoint,
		ServiceName: TracingService,
		InstanceID:  n.id,
		Version:     cfg.Version,
		Logger:      n.logger,
	})
	if err != nil {
		return nil, err
	}
	if len(cfg.Etcd) > 0 {
		if n.advertise, err = discovery.AdvertiseAddr(cfg.Advertise, cfg.Listen, cfg.AdvertiseNetwork, port, nil); err != nil {
			return nil, err
		}
		if n.etcd, n.notesEtcd, err = dialEtcd(cfg, reload, n.tracing); err != nil {
			return nil, err
		}
		if n.xds, err = newXDSServer(cfg, n.logger); err != nil {
			return nil, err
		}
	}
	store, err := newNoteStore(cfg, n.notesEtcd, n.logger)
	if err != nil {
		return nil, err
	}
	if n.metrics, err = newNodeMetrics(db.Len(), store, tlsMetrics); err != nil {
		return nil, err
	}
	if cfg.MetricsListen != "" {
		if n.metricsListener, err = net.Listen("tcp", cfg.MetricsListen); err != nil {
			return nil, fmt.Errorf("listen for metrics: %w", err)
		}
	}
	n.server = n.newGRPCServer(store)
	if n.metricsListener != nil {
		if cfg.DebugEndpoints {
			n.admin = grpc.NewServer()
			if n.adminCleanup, err = admin.Register(n.admin); err != nil {
				return nil, fmt.Errorf("register gRPC's admin services: %w", err)
			}
		}
		n.httpServer = &http.Server{Handler: n.httpHandler(), ReadHeaderTimeout: 10 * time.Second}
		if n.admin != nil {
			// gRPC clients of the admin services speak HTTP/2 without TLS.
			n.httpServer.Protocols = new(http.Protocols)
			n.httpServer.Protocols.SetHTTP1(true)
			n.httpServer.Protocols.SetUnencryptedHTTP2(true)
		}
	}
	return n, nil
}

// TracingService is the service.name of the node's spans.
const TracingService = "routeguide-node"

// dialEtcd returns the node's two etcd clients: one for the registry (its
// registration, lease keepalive and watch) and one for the notes, on a
// connection of its own, to --notes-etcd when set, so that no note traffic
// ever queues before the registry's. Only the notes' calls are traced, as
// children of the RouteChat that makes them: the registry's keepalives
// would add a trace every few seconds, and no call waits on them.
func dialEtcd(cfg Config, reload tlsfiles.Reload, traces *tracing.Provider) (registry, notes *clientv3.Client, err error) {
	creds, err := cfg.EtcdAuth.Open(reload) // one set of files for both clients
	if err != nil {
		return nil, nil, err
	}
	notesEndpoints := cfg.NotesEtcd
	if len(notesEndpoints) == 0 {
		notesEndpoints = cfg.Etcd
	}
	for _, c := range []struct {
		client    **clientv3.Client
		endpoints []string
		opts      []grpc.DialOption
	}{{&registry, cfg.Etcd, nil}, {&notes, notesEndpoints, traces.DialOptions()}} {
		etcdCfg, err := creds.For(c.endpoints)
		if err == nil {
			*c.client, err = discovery.NewEtcdClient(etcdCfg, c.opts...)
		}
		if err != nil {
			if registry != nil {
				registry.Close()
			}
			return nil, nil, err
		}
	}
	return registry, notes, nil
}

// newXDSServer serves the registry to xDS clients of any language on the
// node's gRPC port (docs/DESIGN.md, "xDS for any language"), with the retry
// policy of package balancer, and its policy for the Go clients that link it.
func newXDSServer(cfg Config, logger *slog.Logger) (*xdsserver.Server, error) {
	// The clients of other languages eject as package balancer's policy
	// does, in a cluster of three too.
	od := balancer.DefaultOutlierDetection
	return xdsserver.New(xdsserver.Config{
		Service:      cfg.Service,
		RetryMethods: contract.IdempotentMethods,
		Retry: xdsserver.Retry{
			On:          strings.ToLower(strings.Join(balancer.RetryableCodes, ",")),
			MaxAttempts: balancer.RetryMaxAttempts,
			BaseBackoff: balancer.RetryInitialBackoff,
			MaxBackoff:  balancer.RetryMaxBackoff,
		},
		EndpointPolicy:   balancer.Name,
		LeastRequest:     true,
		OutlierDetection: &od,
		Logger:           logger,
	})
}

// closeOpened closes what New opened, after a failure.
func (n *Node) closeOpened() {
	if n.xds != nil {
		n.xds.Close()
	}
	for _, l := range []net.Listener{n.listener, n.metricsListener} {
		if l != nil {
			l.Close()
		}
	}
	n.closeEtcd()
	n.tracing.Shutdown(context.Background()) // nothing was traced yet
}

// newNoteStore returns where RouteChat keeps its notes: in etcd when the
// node is part of a cluster, so that every node answers with the same notes
// in the same order, and in memory when it serves alone.
func newNoteStore(cfg Config, etcd *clientv3.Client, logger *slog.Logger) (notes.Store, error) {
	if etcd == nil {
		return notes.NewMemory(cfg.NoteLimits), nil
	}
	ecfg := etcdnotes.DefaultConfig()
	ecfg.Prefix = NotesPrefix(cfg.Service)
	ecfg.Limits = cfg.NoteLimits
	ecfg.MaxAge = cfg.NoteMaxAge
	ecfg.Budget = cfg.NotesBudget
	ecfg.CacheBytes = cfg.NotesCacheBytes
	ecfg.WriteRate = cfg.NotesWriteRate
	ecfg.Logger = logger
	return etcdnotes.New(etcd, ecfg)
}

// NotesPrefix is the etcd prefix under which the nodes of service share
// RouteChat notes. It is beside the registry, not inside it, so that
// resolvers listing the registry never read notes.
func NotesPrefix(service string) string { return service + "-notes/" }

func (n *Node) newGRPCServer(store notes.Store) *grpc.Server {
	// Without a metrics listener nobody could read the gRPC metrics, so the
	// node does not pay for them.
	var metrics *grpcMetrics
	if n.metricsListener != nil {
		metrics = n.metrics.grpc
	}
	serverLimit, bound := receiveLimits(n.cfg, n.xds != nil)
	unary, stream := callInterceptors(n.logger, n.id, metrics, bound)
	opts := append(balancer.ServerOptions(), boundOptions(n.cfg, serverLimit)...)
	opts = append(opts,
		grpc.UnaryInterceptor(unary),
		grpc.StreamInterceptor(stream),
	)
	opts = append(opts, TransportOptions(n.features)...) // see serveropts.go
	opts = append(opts, n.tracing.ServerOptions()...)
	opts = append(opts, n.cfg.ServerOptions...)
	if n.tls != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(n.tls.Config())))
	}
	server := grpc.NewServer(opts...)
	pb.RegisterRouteGuideServer(server, routeguide.NewServer(routeguide.Config{
		Features: n.features,
		Notes:    store,
		Limits:   n.cfg.Limits,
		Observer: n.metrics,
	}))
	healthpb.RegisterHealthServer(server, n.health)
	reflection.Register(server)
	if n.xds != nil {
		n.xds.Register(server)
	}
	// Every method's series exist from the start, at zero.
	n.metrics.grpc.initialize(server)
	// Not serving until Run says so: a health probe must not pass before then.
	n.setServing(healthpb.HealthCheckResponse_NOT_SERVING)
	return server
}

func (n *Node) setServing(status healthpb.HealthCheckResponse_ServingStatus) {
	n.health.SetServingStatus("", status)
	n.health.SetServingStatus(contract.HealthService, status)
}

// ID is the node id, as sent in the routeguide-node header.
func (n *Node) ID() string { return n.id }

// Addr is the address the gRPC server listens on.
func (n *Node) Addr() net.Addr { return n.listener.Addr() }

// AdvertisedAddr is the gRPC address registered in etcd; empty for a
// standalone node.
func (n *Node) AdvertisedAddr() string { return n.advertise }

// Ready is closed once the node is serving and, unless it is standalone,
// registered in etcd for the first time.
func (n *Node) Ready() <-chan struct{} { return n.ready }

// Registered reports whether the node's key is live in etcd now. A
// standalone node is never registered.
func (n *Node) Registered() bool { return n.registrar != nil && n.registrar.Live() }

// Run serves until ctx ends and then drains (see drain). Call it once. A node registers
// only once it serves and its health is SERVING, and keeps serving its
// clients whatever etcd does. Run returns nil after a clean drain, or the
// error that stopped the node: the gRPC server failed, or another live node
// holds its id.
func (n *Node) Run(ctx context.Context) error {
	served := make(chan error, 1)
	go func() { served <- n.server.Serve(n.listener) }()
	n.setServing(healthpb.HealthCheckResponse_SERVING)
	n.serving.Store(true)
	n.logger.Info("serving", "addr", n.listener.Addr().String(), "advertise", n.advertise, "features", n.features.Len(), "tls", n.tlsMode())

	var registered <-chan struct{}
	var failed <-chan error
	if n.etcd != nil {
		if err := n.checkEtcdAccess(ctx); err != nil {
			n.stopNow()
			return fmt.Errorf("register in etcd: %w", err)
		}
		reg, err := discovery.StartRegistrar(discovery.Registration{
			Client:   n.etcd,
			Service:  n.cfg.Service,
			Addr:     n.advertise,
			Metadata: discovery.Metadata{NodeID: n.id, MetricsAddr: n.MetricsAddr(), Version: n.cfg.Version},
			TTL:      n.cfg.LeaseTTL,
			Logger:   n.logger,
			Events:   n.metrics.registration,
		})
		if err != nil {
			n.stopNow()
			return err
		}
		n.registrar = reg
		registered, failed = reg.Registered(), reg.Failed()
		n.view = discovery.WatchService(n.etcd, n.cfg.Service, discovery.WithLogger(n.logger), discovery.WithEvents(n.metrics.view))
		n.xds.Follow(n.view)
	} else {
		close(n.ready)
	}
	// Started only now: its handlers read the registrar and the view.
	if n.httpServer != nil {
		go n.httpServer.Serve(n.metricsListener)
	}

	for {
		select {
		case err := <-served:
			n.stopNow()
			return fmt.Errorf("serve gRPC: %w", err)
		case err := <-failed:
			n.stopNow()
			return fmt.Errorf("register in etcd: %w", err)
		case <-registered:
			registered = nil
			close(n.ready)
		case <-ctx.Done():
			n.drain()
			<-served
			return nil
		}
	}
}

// checkEtcdAccess fails when etcd refuses the node's credentials or
// permissions. The Registrar retries every etcd error forever, by design:
// etcd out of reach, a lost lease and a lost leader all pass. Refused
// credentials do not pass, and a node that retried them would serve
// unregistered, with nothing but a warning now and then to tell why. So the
// node asks once, before its first registration, and stops at once on an
// access error. Any other error (etcd out of reach) is left to the
// Registrar, which waits for etcd; an access error that arises only later
// (a role changed at run time) is retried and logged like any other.
func (n *Node) checkEtcdAccess(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, accessCheckTimeout)
	defer cancel()
	prefix := discovery.Prefix(n.cfg.Service)
	err := discovery.CheckAccess(ctx, n.etcd, prefix+n.id, prefix)
	if err == nil {
		// RouteChat keeps its notes beside the registry: a role that
		// covers only the registry would fail every chat.
		notesPrefix := NotesPrefix(n.cfg.Service)
		err = discovery.CheckAccess(ctx, n.notesEtcd, notesPrefix+n.id, notesPrefix)
	}
	if discovery.IsAuthError(err) {
		n.logger.Error("etcd refuses the node", "error", err)
		return err
	}
	if err != nil {
		n.logger.Warn("could not check access to etcd; registering anyway", "error", err)
	}
	return nil
}

// accessCheckTimeout bounds checkEtcdAccess: with etcd out of reach it
// delays only the start of the Registrar, which could not register either.
const accessCheckTimeout = 5 * time.Second

// tlsMode says, for the logs, how the gRPC server authenticates.
func (n *Node) tlsMode() string {
	switch {
	case n.tls == nil:
		return "off"
	case n.tls.Mutual():
		return "mutual"
	default:
		return "server"
	}
}

// MetricsAddr is the advertised address of the metrics listener: the
// advertised host (127.0.0.1 for a standalone node) with the port the
// metrics listener took. Empty when metrics are off.
func (n *Node) MetricsAddr() string {
	if n.metricsListener == nil {
		return ""
	}
	host := "127.0.0.1"
	if n.advertise != "" {
		host, _, _ = net.SplitHostPort(n.advertise)
	}
	port := n.metricsListener.Addr().(*net.TCPAddr).Port
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// stopNow stops everything without a drain, after a failure.
func (n *Node) stopNow() {
	n.serving.Store(false)
	n.server.Stop()
	if n.registrar != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		n.registrar.Deregister(ctx)
		cancel()
	}
	n.closeRest()
}

// closeEtcd closes the node's etcd clients, the registry's and the notes'.
func (n *Node) closeEtcd() {
	for _, c := range []*clientv3.Client{n.etcd, n.notesEtcd} {
		if c != nil {
			c.Close()
		}
	}
}

// closeRest stops what outlives the gRPC server: the xDS server, the
// registry view, the etcd clients, the tracer, which exports the last calls'
// spans, and the metrics server, which answers until the very end so that
// the last scrape sees the drain.
func (n *Node) closeRest() {
	if n.xds != nil {
		n.xds.Close()
	}
	if n.view != nil {
		n.view.Close()
	}
	n.closeEtcd()
	// Bounded like the metrics server's shutdown, and beside it, so that a
	// collector out of reach adds nothing to the drain.
	traced := make(chan struct{})
	go func() {
		defer close(traced)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := n.tracing.Shutdown(ctx); err != nil {
			n.logger.Warn("could not export the last spans", "error", err)
		}
	}()
	defer func() { <-traced }()
	if n.httpServer != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := n.httpServer.Shutdown(ctx); err != nil {
			n.httpServer.Close()
		}
	}
	if n.admin != nil {
		n.admin.Stop()
		n.adminCleanup()
	}
}

// drain leaves the cluster without failing a call: the lease is revoked, so
// the key disappears at once and resolvers drop the node; health turns
// NOT_SERVING, so clients that watch it stop picking the node at once; the
// node keeps serving for the drain delay, for the clients that have not yet
// heard; then the server stops gracefully, waiting for open calls until the
// shutdown timeout, and cuts what is left.
func (n *Node) drain() {
	n.logger.Info("draining", "drain_delay", n.cfg.DrainDelay.String())
	if n.registrar != nil {
		// A revoke takes milliseconds; when etcd is out of reach, waiting
		// longer only delays the drain, and the key goes when the lease
		// expires, within the TTL.
		ctx, cancel := context.WithTimeout(context.Background(), revokeTimeout)
		if err := n.registrar.Deregister(ctx); err != nil {
			n.logger.Warn("could not revoke the lease; the key expires with it", "error", err, "lease_ttl", n.cfg.LeaseTTL.String())
		}
		cancel()
	}
	// Shutdown turns every status NOT_SERVING and keeps it there, and health
	// watchers hear of it at once.
	n.health.Shutdown()
	n.serving.Store(false)
	wait(n.cfg.DrainDelay)
	if n.xds != nil {
		// xDS streams never end by themselves and would hold the graceful
		// stop; their clients keep what they were last sent and reconnect.
		n.xds.Close()
	}

	stopped := make(chan struct{})
	go func() {
		n.server.GracefulStop()
		close(stopped)
	}()
	timer := time.NewTimer(n.cfg.ShutdownTimeout)
	defer timer.Stop()
	select {
	case <-stopped:
	case <-timer.C:
		n.logger.Warn("graceful stop timed out; closing open calls", "shutdown_timeout", n.cfg.ShutdownTimeout.String())
		n.server.Stop()
		<-stopped
	}
	n.closeRest()
	n.logger.Info("stopped")
}

// revokeTimeout bounds the lease revoke at the start of a drain.
const revokeTimeout = 2 * time.Second

func wait(d time.Duration) {
	if d <= 0 {
		return
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	<-timer.C
}

// defaultNodeID is hostname:port, unique per host and port.
func defaultNodeID(port int) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "node"
	}
	return host + ":" + strconv.Itoa(port)
}
