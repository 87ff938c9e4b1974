package clientcli

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/xds" // registers the xds:/// resolver and the policies it names

	"github.com/routeguide-cluster/routeguide/balancer"
	"github.com/routeguide-cluster/routeguide/discovery"
	"github.com/routeguide-cluster/routeguide/internal/etcdauth"
	"github.com/routeguide-cluster/routeguide/internal/flagenv"
	"github.com/routeguide-cluster/routeguide/internal/tlsfiles"
	"github.com/routeguide-cluster/routeguide/internal/tracing"
)

// Config is what the flags before the command set.
type Config struct {
	// Target is the gRPC target: host:port, etcd:///SERVICE, or
	// xds:///SERVICE (from the xDS servers of XDSBootstrap).
	Target string
	// XDSBootstrap is the xDS bootstrap file of xds:/// targets; empty
	// means gRPC's GRPC_XDS_BOOTSTRAP or GRPC_XDS_BOOTSTRAP_CONFIG.
	XDSBootstrap string
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
	// UnleasedEntries resolves registry entries without a lease too, for
	// static endpoints written by hand; by default they are skipped.
	UnleasedEntries bool
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

// resolvedThroughXDS reports whether target is an xds:/// target, which
// gRPC's xDS resolver resolves from the servers of a bootstrap.
func resolvedThroughXDS(target string) bool {
	return strings.HasPrefix(target, "xds:")
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
	if resolvedThroughXDS(c.Target) && c.XDSBootstrap != "" {
		bootstrap, err := os.ReadFile(c.XDSBootstrap)
		if err != nil {
			return nil, fmt.Errorf("--xds-bootstrap: %w", err)
		}
		opts = append(opts, WithXDSBootstrap(bootstrap))
	}
	if resolvedThroughEtcd(c.Target) {
		etcd, err := c.EtcdAuth.EtcdConfig(c.Etcd)
		if err != nil {
			return nil, err
		}
		opts = append(opts, WithEtcdConfig(etcd))
		if c.UnleasedEntries {
			opts = append(opts, WithResolverOptions(discovery.WithUnleasedEntries()))
		}
	}
	return opts, nil
}

// Register adds the flags that set c to fs, its TLS and etcd credentials included.
func (c *Config) Register(fs *flag.FlagSet) {
	fs.StringVar(&c.Target, "target", c.Target, "server `target`: host:port, etcd:///SERVICE to find the nodes in etcd, or xds:///SERVICE to have them from the nodes over xDS")
	fs.StringVar(&c.XDSBootstrap, "xds-bootstrap", c.XDSBootstrap, "xDS bootstrap `file` for xds:/// targets (see xds-bootstrap); default: $GRPC_XDS_BOOTSTRAP")
	fs.Var((*flagenv.List)(&c.Etcd), "etcd", "comma-separated etcd `endpoints`, for etcd:/// targets")
	fs.DurationVar(&c.Timeout, "timeout", c.Timeout, "deadline of each RPC; chat has none")
	fs.BoolVar(&c.JSON, "json", c.JSON, "print JSON (see Output)")
	fs.StringVar(&c.MetricsListen, "metrics-listen", c.MetricsListen, "serve Prometheus metrics on `host:port` while load or chat runs (see Metrics); empty is off")
	fs.StringVar(&c.TLS.CAFile, tlsfiles.GRPCFlags+"-ca", c.TLS.CAFile, "connect over TLS, trusting the CA in this `file` (PEM) for the nodes' certificates")
	fs.StringVar(&c.TLS.CertFile, tlsfiles.GRPCFlags+"-cert", c.TLS.CertFile, "client certificate `file` (PEM) for nodes that require mutual TLS, with --tls-key")
	fs.StringVar(&c.TLS.KeyFile, tlsfiles.GRPCFlags+"-key", c.TLS.KeyFile, "private key `file` (PEM) of --tls-cert")
	fs.StringVar(&c.TLS.ServerName, tlsfiles.GRPCFlags+"-server-name", c.TLS.ServerName, "`name` the nodes' certificate must carry (default: the target's host, the service name for etcd:///SERVICE)")
	fs.BoolVar(&c.UnleasedEntries, "unleased-entries", c.UnleasedEntries, "for etcd:/// targets, also resolve registry entries that carry no lease (static endpoints written by hand); nodes always register under one, so by default they are skipped")
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
	resolver         []discovery.Option
	balancer         []balancer.Option
	tls              *tls.Config          // nil: plaintext
	etcd             discovery.EtcdConfig // its Endpoints are Dial's
	xdsBootstrap     []byte               // nil: gRPC's, from the environment
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

// WithResolverOptions adds options to the resolver of an etcd:/// target.
// Other targets have no such resolver and ignore them.
func WithResolverOptions(opts ...discovery.Option) DialOption {
	return func(s *dialSettings) { s.resolver = append(s.resolver, opts...) }
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

// WithXDSBootstrap resolves an xds:/// target from the servers that
// bootstrap (JSON) names, instead of the file the environment names.
func WithXDSBootstrap(bootstrap []byte) DialOption {
	return func(s *dialSettings) { s.xdsBootstrap = bootstrap }
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
// xds:///SERVICE targets by gRPC's xDS resolver, which takes balancing and
// retries from the nodes' xDS server instead of package balancer's service
// config (the attempt timeouts stay); other targets (host:port, dns:///name) are resolved by gRPC. Either way the
// connection uses the dial options of package balancer: round robin over
// healthy nodes, retries of idempotent calls, keepalive; opts add to them.
func Dial(_ context.Context, target string, etcdEndpoints []string, opts ...DialOption) (*Conn, error) {
	settings := newDialSettings(opts)
	creds := insecure.NewCredentials()
	if settings.tls != nil {
		creds = credentials.NewTLS(settings.tls)
	}
	policyOpts, err := balancer.DialOptions(settings.balancer...)
	if err != nil {
		return nil, err
	}
	dialOpts := append(settings.callInterceptors, policyOpts...)
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
		resolverOpts := append([]discovery.Option{discovery.WithLogger(quietLogger)}, settings.resolver...)
		if settings.events != nil {
			resolverOpts = append(resolverOpts, discovery.WithEvents(settings.events))
		}
		dialOpts = append(dialOpts, grpc.WithResolvers(discovery.NewBuilder(cli, resolverOpts...)))
	}
	if resolvedThroughXDS(target) && settings.xdsBootstrap != nil {
		// grpc-go's only way to a bootstrap other than the process's.
		builder, err := xds.NewXDSResolverWithConfigForTesting(settings.xdsBootstrap)
		if err != nil {
			return nil, fmt.Errorf("xds bootstrap: %w", err)
		}
		dialOpts = append(dialOpts, grpc.WithResolvers(builder))
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

// registryCheckTimeout bounds the first question a command asks etcd.
// Without it, a client whose etcd is down or silent waits for nodes until
// its calls' deadline, or for ever (chat), and then names no culprit.
const registryCheckTimeout = 2 * time.Second

// checkRegistry asks etcd how many nodes of target's service are registered,
// within registryCheckTimeout, and says in one sentence why the target cannot
// be reached when etcd does not answer or none is: a failure (exit 1), not
// bad usage.
func checkRegistry(ctx context.Context, cli *clientv3.Client, target string, endpoints []string) error {
	service := serviceOf(target)
	if service == "" {
		return usagef("target %s names no service; want %s:///SERVICE", target, discovery.Scheme)
	}
	prefix := discovery.Prefix(service)
	checkCtx, cancel := context.WithTimeout(ctx, registryCheckTimeout)
	defer cancel()
	resp, err := cli.Get(checkCtx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	at := strings.Join(endpoints, ",")
	switch {
	case err == nil && resp.Count == 0:
		return fmt.Errorf("no node is registered in etcd at %s (no key under %s)", at, prefix)
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case discovery.IsAuthError(err):
		return fmt.Errorf("etcd at %s: read %s: %w", at, prefix, err)
	case checkCtx.Err() != nil:
		return fmt.Errorf("etcd at %s is unreachable: no answer within %v", at, registryCheckTimeout)
	}
	return fmt.Errorf("etcd at %s: read %s: %v", at, prefix, err)
}

// serviceOf is the service an etcd:/// target names, as the resolver reads it.
func serviceOf(target string) string {
	u, err := url.Parse(target)
	if err != nil {
		return ""
	}
	return strings.Trim(u.Path, "/")
}

// quietLogger keeps the resolver's warnings (an etcd outage, a malformed
// entry) on stderr and its routine news off it.
var quietLogger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
