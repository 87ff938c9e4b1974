package clientcli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
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
type DialFunc func(ctx context.Context, target string, etcdEndpoints []string) (*grpc.ClientConn, error)

// roundRobin spreads calls over every address a target resolves to.
const roundRobin = `{"loadBalancingConfig": [{"round_robin": {}}]}`

// Dial is the DialFunc that Main uses unless told otherwise. It connects
// without TLS to a host:port target (or any target gRPC resolves by itself),
// balancing round robin over its addresses. etcd:/// targets are refused
// until etcd resolution is built in.
func Dial(_ context.Context, target string, _ []string) (*grpc.ClientConn, error) {
	if strings.HasPrefix(target, "etcd:") {
		return nil, errors.New("etcd:/// targets need etcd resolution, which is not built in yet; pass --target host:port")
	}
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(roundRobin),
	)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", target, err)
	}
	return conn, nil
}
