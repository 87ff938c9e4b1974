package clientcli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/routeguide-cluster/routeguide/balancer"
	"github.com/routeguide-cluster/routeguide/discovery"
)

// Config is what the flags before the command set. TLS (--tls-ca,
// --tls-cert, --tls-key), etcd authentication and --metrics-listen will be
// fields here, read by the Dial that uses them.
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
	}
	return nil
}

// register adds the flags that set c to fs.
func (c *Config) register(fs *flag.FlagSet) {
	fs.StringVar(&c.Target, "target", c.Target, "server `target`: host:port, or etcd:///SERVICE to find the nodes in etcd")
	fs.Var((*listFlag)(&c.Etcd), "etcd", "comma-separated etcd `endpoints`, for etcd:/// targets")
	fs.DurationVar(&c.Timeout, "timeout", c.Timeout, "deadline of each RPC; chat has none")
	fs.BoolVar(&c.JSON, "json", c.JSON, "print JSON (see Output)")
}

// listFlag is a comma-separated list; the empty string is the empty list.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(s string) error {
	*l = nil
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			*l = append(*l, item)
		}
	}
	return nil
}

// DialFunc opens the client connection for a target. Every command dials
// through one, so that resolution, balancing and credentials live in one
// place.
type DialFunc func(ctx context.Context, target string, etcdEndpoints []string) (*Conn, error)

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
// healthy nodes, retries of idempotent calls, keepalive.
func Dial(_ context.Context, target string, etcdEndpoints []string) (*Conn, error) {
	opts := append(balancer.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	conn := &Conn{}
	if strings.HasPrefix(target, discovery.Scheme+":") {
		if len(etcdEndpoints) == 0 {
			return nil, fmt.Errorf("target %s is resolved through etcd, but --etcd is empty", target)
		}
		cli, err := discovery.NewEtcdClient(discovery.EtcdConfig{Endpoints: etcdEndpoints})
		if err != nil {
			return nil, err
		}
		conn.etcd = cli
		opts = append(opts, grpc.WithResolvers(discovery.NewBuilder(cli, discovery.WithLogger(quietLogger))))
	}
	cc, err := grpc.NewClient(target, opts...)
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
