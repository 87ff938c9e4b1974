package clientcli

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/routeguide-cluster/routeguide/balancer"
	"github.com/routeguide-cluster/routeguide/discovery"
	"github.com/routeguide-cluster/routeguide/internal/etcdauth"
	"github.com/routeguide-cluster/routeguide/internal/flagenv"
	"github.com/routeguide-cluster/routeguide/internal/tlsfiles"
	"github.com/routeguide-cluster/routeguide/internal/tracing"
)

// Config is what the flags before the command set.
type Config struct {
	// Target is the gRPC target: host:port, or etcd:///SERVICE.
	Target string
	// Etcd lists the etcd endpoints that etcd:/// targets are resolved from.
	Etcd []string
	// Timeout is the deadline of each RPC (chat excepted: it lasts as long
	// as its input).
	Timeout time.Duration
	// JSON asks for JSON output instead of text for people.
	JSON bool
	// MetricsListen is where load and chat serve Prometheus metrics while
	// they run, as host:port. Empty turns metrics off.
	MetricsListen string
	// TLS, when anything in it is set, connects to the nodes over TLS:
	// --tls-ca, --tls-cert and --tls-key (mutual TLS), and
	// --tls-server-name, the name the nodes' certificate must carry when
	// it is not the target's host: gRPC checks a node against the target's
	// authority, which for etcd:///routeguide is "routeguide", not the IP
	// dialled.
	TLS tlsfiles.Client
	// EtcdAuth is how etcd:/// targets reach a secured etcd.
	EtcdAuth etcdauth.Config
	// OTLPEndpoint, when set, is the host:port of the OTLP/gRPC collector
	// the client exports a trace of its calls to (package tracing).
	OTLPEndpoint string
}

// DefaultConfig is the configuration when no flag is given.
func DefaultConfig() Config {
	return Config{
		Target:  "etcd:///routeguide",
		Etcd:    []string{"http://127.0.0.1:2379"},
		Timeout: 10 * time.Second,
	}
}

// Validate reports the first problem with c, naming the flag at fault.
func (c Config) Validate() error {
	switch {
	case c.Target == "":
		return errors.New("--target: must not be empty")
	case c.Timeout <= 0:
		return fmt.Errorf("--timeout: %v must be positive", c.Timeout)
	case c.MetricsListen != "" && discovery.CheckAddr(c.MetricsListen, discovery.ListenAddr) != nil:
		return fmt.Errorf("--metrics-listen: %q is not a host:port address", c.MetricsListen)
	}
	if err := tracing.CheckEndpoint(c.OTLPEndpoint); err != nil {
		return err
	}
	if err := c.TLS.Validate(tlsfiles.GRPCFlags); err != nil {
		return err
	}
	return c.EtcdAuth.ValidateFor(c.Etcd)
}

// resolvedThroughEtcd reports whether target is an etcd:///SERVICE target,
// which Dial resolves with discovery's resolver.
func resolvedThroughEtcd(target string) bool {
	return strings.HasPrefix(target, discovery.Scheme+":")
}

// dialOptions reads the TLS files into the options that secure a Dial: TLS
// to the nodes, and TLS and a user for etcd.
func (c Config) dialOptions() ([]DialOption, error) {
	var opts []DialOption
	nodeTLS, err := c.TLS.Config(tlsfiles.GRPCFlags)
	if err != nil {
		return nil, err
	}
	if nodeTLS != nil {
		opts = append(opts, WithTLS(nodeTLS))
	}
	if resolvedThroughEtcd(c.Target) {
		etcd, err := c.EtcdAuth.EtcdConfig(c.Etcd)
		if err != nil {
			return nil, err
		}
		opts = append(opts, WithEtcdConfig(etcd))
	}
	return opts, nil
}

// Register adds the flags that set c to fs, its TLS and etcd credentials included.
func (c *Config) Register(fs *flag.FlagSet) {
	fs.StringVar(&c.Target, "target", c.Target, "server `target`: host:port, or etcd:///SERVICE to find the nodes in etcd")
	fs.Var((*flagenv.List)(&c.Etcd), "etcd", "comma-separated etcd `endpoints`, for etcd:/// targets")
	fs.DurationVar(&c.Timeout, "timeout", c.Timeout, "deadline of each RPC; chat has none")
	fs.BoolVar(&c.JSON, "json", c.JSON, "print JSON (see Output)")
	fs.StringVar(&c.MetricsListen, "metrics-listen", c.MetricsListen, "serve Prometheus metrics on `host:port` while load or chat runs (see Metrics); empty is off")
	fs.StringVar(&c.TLS.CAFile, tlsfiles.GRPCFlags+"-ca", c.TLS.CAFile, "connect over TLS, trusting the CA in this `file` (PEM) for the nodes' certificates")
	fs.StringVar(&c.TLS.CertFile, tlsfiles.GRPCFlags+"-cert", c.TLS.CertFile, "client certificate `file` (PEM) for nodes that require mutual TLS, with --tls-key")
	fs.StringVar(&c.TLS.KeyFile, tlsfiles.GRPCFlags+"-key", c.TLS.KeyFile, "private key `file` (PEM) of --tls-cert")
	fs.StringVar(&c.TLS.ServerName, tlsfiles.GRPCFlags+"-server-name", c.TLS.ServerName, "`name` the nodes' certificate must carry (default: the target's host, the service name for etcd:///SERVICE)")
	tracing.RegisterEndpoint(fs, &c.OTLPEndpoint)
	c.EtcdAuth.Register(fs)
}

// DialFunc opens the client connection for a target. Every command dials
// through one, so that resolution, balancing and credentials live in one
// place. It must honour opts: they carry the client's metrics.
type DialFunc func(ctx context.Context, target string, etcdEndpoints []string, opts ...DialOption) (*Conn, error)

// DialOption adds to what Dial does.
type DialOption func(*dialSettings)

// dialSettings is what the DialOptions of one Dial ask for.
type dialSettings struct {
	// callInterceptors wrap package balancer's, so they see each call once
	// however many attempts balancer makes of it.
	callInterceptors []grpc.DialOption
	grpc             []grpc.DialOption
	events           discovery.ResolverEvents // nil: nobody listens
	balancer         []balancer.Option
	tls              *tls.Config          // nil: plaintext
	etcd             discovery.EtcdConfig // its Endpoints are Dial's
}

func newDialSettings(opts []DialOption) dialSettings {
	var s dialSettings
	for _, opt := range opts {
		opt(&s)
	}
	return s
}

// WithGRPCOptions adds gRPC dial options, interceptors for example, to those
// Dial always uses.
func WithGRPCOptions(opts ...grpc.DialOption) DialOption {
	return func(s *dialSettings) { s.grpc = append(s.grpc, opts...) }
}

// withCallInterceptors adds interceptors that see whole calls: they are
// outside the ones of package balancer that time out and make again an
// attempt of an idempotent call.
func withCallInterceptors(unary grpc.UnaryClientInterceptor, stream grpc.StreamClientInterceptor) DialOption {
	return func(s *dialSettings) {
		s.callInterceptors = append(s.callInterceptors, grpc.WithChainUnaryInterceptor(unary), grpc.WithChainStreamInterceptor(stream))
	}
}

// WithResolverEvents reports how the resolver of an etcd:/// target follows
// the registry to events, a *discovery.ResolverMetrics for example. Other
// targets have no such resolver and ignore it.
func WithResolverEvents(events discovery.ResolverEvents) DialOption {
	return func(s *dialSettings) { s.events = events }
}

// WithTLS connects to the nodes over TLS with cfg instead of plaintext.
func WithTLS(cfg *tls.Config) DialOption {
	return func(s *dialSettings) { s.tls = cfg }
}

// WithEtcdConfig makes an etcd:/// target reach etcd with the TLS and user
// of cfg; the endpoints stay Dial's.
func WithEtcdConfig(cfg discovery.EtcdConfig) DialOption {
	return func(s *dialSettings) { s.etcd = cfg }
}

// WithBalancerMetrics makes the balancing policy report its picks and ready
// endpoints to m.
func WithBalancerMetrics(m *balancer.Metrics) DialOption {
	return func(s *dialSettings) { s.balancer = append(s.balancer, balancer.WithMetrics(m)) }
}

// Conn is a connection to the cluster, with the etcd client that keeps an
// etcd:/// target resolved; Close closes both.
type Conn struct {
	*grpc.ClientConn
	etcd *clientv3.Client // nil for targets that gRPC resolves by itself
}

// Close closes the connection, then the etcd client it resolved through.
func (c *Conn) Close() error {
	err := c.ClientConn.Close()
	if c.etcd != nil {
		if etcdErr := c.etcd.Close(); err == nil {
			err = etcdErr
		}
	}
	return err
}

// Dial is the DialFunc that Main uses unless told otherwise. etcd:///SERVICE
// targets are resolved from the etcd endpoints with discovery's resolver;
// other targets (host:port, dns:///name) are resolved by gRPC. Either way the
// connection uses the dial options of package balancer: round robin over
// healthy nodes, retries of idempotent calls, keepalive; opts add to them.
func Dial(_ context.Context, target string, etcdEndpoints []string, opts ...DialOption) (*Conn, error) {
	settings := newDialSettings(opts)
	creds := insecure.NewCredentials()
	if settings.tls != nil {
		creds = credentials.NewTLS(settings.tls)
	}
	dialOpts := append(settings.callInterceptors, balancer.DialOptions(settings.balancer...)...)
	dialOpts = append(dialOpts, grpc.WithTransportCredentials(creds))
	dialOpts = append(dialOpts, settings.grpc...)
	conn := &Conn{}
	if resolvedThroughEtcd(target) {
		if len(etcdEndpoints) == 0 {
			return nil, fmt.Errorf("target %s is resolved through etcd, but --etcd is empty", target)
		}
		etcdCfg := settings.etcd
		etcdCfg.Endpoints = etcdEndpoints
		cli, err := discovery.NewEtcdClient(etcdCfg)
		if err != nil {
			return nil, err
		}
		conn.etcd = cli
		resolverOpts := []discovery.Option{discovery.WithLogger(quietLogger)}
		if settings.events != nil {
			resolverOpts = append(resolverOpts, discovery.WithEvents(settings.events))
		}
		dialOpts = append(dialOpts, grpc.WithResolvers(discovery.NewBuilder(cli, resolverOpts...)))
	}
	cc, err := grpc.NewClient(target, dialOpts...)
	if err != nil {
		if conn.etcd != nil {
			conn.etcd.Close()
		}
		return nil, fmt.Errorf("dial %s: %w", target, err)
	}
	conn.ClientConn = cc
	return conn, nil
}

// quietLogger keeps the resolver's warnings (an etcd outage, a malformed
// entry) on stderr and its routine news off it.
var quietLogger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
