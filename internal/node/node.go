// Package node runs one RouteGuide node: the gRPC server with health checking,
// reflection and its interceptors, from start to a drained stop.
package node

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/routeguide"
	"github.com/routeguide-cluster/routeguide/routeguide/features"
	"github.com/routeguide-cluster/routeguide/routeguide/notes"
)

// Node is one RouteGuide server. New prepares it and takes its port; Run
// serves until its context ends, then drains.
type Node struct {
	cfg      Config
	id       string
	logger   *slog.Logger
	listener net.Listener
	server   *grpc.Server
	health   *health.Server
	features *features.DB
	ready    chan struct{}
}

// New validates cfg, loads the features and listens on cfg.Listen, so that a
// bad file or a port in use is reported before anything is served.
func New(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	db := features.Default()
	if cfg.FeaturesFile != "" {
		var err error
		if db, err = features.Load(cfg.FeaturesFile); err != nil {
			return nil, err
		}
	}
	listener, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen for gRPC: %w", err)
	}
	id := cfg.NodeID
	if id == "" {
		id = defaultNodeID(listener.Addr())
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("node_id", id)

	n := &Node{
		cfg:      cfg,
		id:       id,
		logger:   logger,
		listener: listener,
		health:   health.NewServer(),
		features: db,
		ready:    make(chan struct{}),
	}
	n.server = n.newGRPCServer(notes.NewMemory(cfg.NoteLimits))
	return n, nil
}

func (n *Node) newGRPCServer(store notes.Store) *grpc.Server {
	headerUnary, headerStream := nodeHeaderInterceptors(n.id)
	logUnary, logStream := logInterceptors(n.logger)
	recoverUnary, recoverStream := recoveryInterceptors(n.logger, n.id)
	server := grpc.NewServer(
		grpc.MaxRecvMsgSize(n.cfg.MaxMessageBytes),
		grpc.MaxSendMsgSize(n.cfg.MaxMessageBytes),
		// The header goes first so that every response carries it; recovery
		// sits innermost so the logger sees the Internal status it makes.
		grpc.ChainUnaryInterceptor(headerUnary, logUnary, recoverUnary),
		grpc.ChainStreamInterceptor(headerStream, logStream, recoverStream),
	)
	pb.RegisterRouteGuideServer(server, routeguide.NewServer(routeguide.Config{
		Features: n.features,
		Notes:    store,
		Limits:   n.cfg.Limits,
	}))
	healthpb.RegisterHealthServer(server, n.health)
	reflection.Register(server)
	// Not serving until Run says so: a health probe must not pass before then.
	n.setServing(healthpb.HealthCheckResponse_NOT_SERVING)
	return server
}

// HealthService is the service name whose health a node reports besides the
// server as a whole (""). Clients check it (see package balancer).
var HealthService = pb.RouteGuide_ServiceDesc.ServiceName

func (n *Node) setServing(status healthpb.HealthCheckResponse_ServingStatus) {
	n.health.SetServingStatus("", status)
	n.health.SetServingStatus(HealthService, status)
}

// ID is the node id, as sent in the routeguide-node header.
func (n *Node) ID() string { return n.id }

// Addr is the address the gRPC server listens on.
func (n *Node) Addr() net.Addr { return n.listener.Addr() }

// Ready is closed once the node is serving.
func (n *Node) Ready() <-chan struct{} { return n.ready }

// Run serves until ctx ends and then drains: health turns NOT_SERVING, the
// node keeps serving for the drain delay so clients move away, and the server
// stops gracefully within the shutdown timeout. It returns nil after a clean
// drain, or the error that stopped serving.
func (n *Node) Run(ctx context.Context) error {
	served := make(chan error, 1)
	go func() { served <- n.server.Serve(n.listener) }()
	n.setServing(healthpb.HealthCheckResponse_SERVING)
	n.logger.Info("serving", "addr", n.listener.Addr().String(), "features", n.features.Len())
	close(n.ready)

	select {
	case err := <-served:
		n.server.Stop()
		return fmt.Errorf("serve gRPC: %w", err)
	case <-ctx.Done():
	}
	n.drain()
	<-served
	return nil
}

func (n *Node) drain() {
	n.logger.Info("draining", "drain_delay", n.cfg.DrainDelay.String())
	// Shutdown turns every status NOT_SERVING and keeps it there, and health
	// watchers hear of it at once.
	n.health.Shutdown()
	wait(n.cfg.DrainDelay)

	stopped := make(chan struct{})
	go func() {
		n.server.GracefulStop()
		close(stopped)
	}()
	timer := time.NewTimer(n.cfg.ShutdownTimeout)
	defer timer.Stop()
	select {
	case <-stopped:
		n.logger.Info("stopped")
	case <-timer.C:
		n.logger.Warn("graceful stop timed out; closing open calls", "shutdown_timeout", n.cfg.ShutdownTimeout.String())
		n.server.Stop()
		<-stopped
	}
}

func wait(d time.Duration) {
	if d <= 0 {
		return
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	<-timer.C
}

// defaultNodeID is hostname:port, unique per host and port.
func defaultNodeID(addr net.Addr) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "node"
	}
	port := 0
	if tcp, ok := addr.(*net.TCPAddr); ok {
		port = tcp.Port
	}
	return host + ":" + strconv.Itoa(port)
}
