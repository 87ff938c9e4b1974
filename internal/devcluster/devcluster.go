// Package devcluster runs a whole RouteGuide cluster in one process: an
// embedded single-member etcd and several nodes that register in it like any
// node does. It is `node -dev`, the cluster for people without Docker, and
// the cluster that end-to-end tests start.
package devcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"text/tabwriter"

	"github.com/routeguide-cluster/routeguide/internal/localetcd"
	"github.com/routeguide-cluster/routeguide/internal/node"
)

// Config describes a cluster.
type Config struct {
	// Nodes is how many nodes to start.
	Nodes int
	// Node is the configuration every node starts from. The first node
	// listens on its Listen and MetricsListen ports, the next one on the
	// ports after those, and so on; port 0 gives every node a free port.
	// Etcd is replaced by the embedded etcd's URL.
	Node node.Config
	// EtcdAddr is where the embedded etcd serves clients (127.0.0.1:2379
	// for `node -dev`, 127.0.0.1:0 in tests).
	EtcdAddr string
	// Logger receives the cluster's and the nodes' logs; nil means slog.Default().
	Logger *slog.Logger
}

// Cluster is a running cluster. Close drains it.
type Cluster struct {
	cfg    Config
	etcd   *localetcd.Server
	dir    *dataDir
	logger *slog.Logger

	mu    sync.Mutex
	nodes []*running
}

type running struct {
	node   *node.Node
	cancel context.CancelFunc
	done   chan error
}

// Start starts etcd, then the nodes, and returns once every node is serving
// and registered. etcd's data goes in a directory of os.TempDir() that Close
// removes; Start removes those that clusters which died left behind.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	if cfg.Nodes < 1 {
		return nil, fmt.Errorf("--dev-nodes: %d; a cluster needs at least one node", cfg.Nodes)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	dir, err := newDataDir()
	if err != nil {
		return nil, err
	}
	etcd, err := localetcd.Start(localetcd.Config{Dir: dir.path, ClientAddr: cfg.EtcdAddr})
	if err != nil {
		dir.remove()
		return nil, err
	}
	c := &Cluster{cfg: cfg, etcd: etcd, dir: dir, logger: logger}
	for i := range cfg.Nodes {
		nodeCfg, err := c.nodeConfig(i)
		if err == nil {
			_, err = c.StartNode(ctx, nodeCfg)
		}
		if err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// nodeConfig is the configuration of node number i (from 0).
func (c *Cluster) nodeConfig(i int) (node.Config, error) {
	cfg := c.cfg.Node
	var err error
	if cfg.Listen, err = shiftPort(cfg.Listen, i); err != nil {
		return cfg, fmt.Errorf("--listen: %w", err)
	}
	if cfg.MetricsListen != "" {
		if cfg.MetricsListen, err = shiftPort(cfg.MetricsListen, i); err != nil {
			return cfg, fmt.Errorf("--metrics-listen: %w", err)
		}
	}
	if cfg.Advertise != "" {
		// Each node must register its own port, not the first node's.
		if cfg.Advertise, err = shiftPort(cfg.Advertise, i); err != nil {
			return cfg, fmt.Errorf("--advertise: %w", err)
		}
	}
	if cfg.NodeID != "" && c.cfg.Nodes > 1 {
		cfg.NodeID = fmt.Sprintf("%s-%d", cfg.NodeID, i+1)
	}
	return cfg, nil
}

// shiftPort returns addr with its port increased by i, on 127.0.0.1 when addr
// names no host: a development cluster is reachable from this machine only.
func shiftPort(addr string, i int) (string, error) {
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return "", fmt.Errorf("port %q is not a number", portText)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	if port != 0 {
		port += i
	}
	return net.JoinHostPort(host, strconv.Itoa(port)), nil
}

// EtcdURL is the URL of the embedded etcd.
func (c *Cluster) EtcdURL() string { return c.etcd.ClientURL() }

// Etcd is the embedded etcd server, for tests that stop it.
func (c *Cluster) Etcd() *localetcd.Server { return c.etcd }

// RestartEtcd starts the embedded etcd again, on the same data directory and
// client address, after a test has stopped it with Etcd().Close(); it stops
// it first if it still runs. The nodes' clients reconnect to the address
// they know. Call it from the goroutine that calls the Cluster's other
// methods.
func (c *Cluster) RestartEtcd() error {
	addr := c.etcd.ClientAddr()
	c.etcd.Close()
	etcd, err := localetcd.Start(localetcd.Config{Dir: c.dir.path, ClientAddr: addr})
	if err != nil {
		return fmt.Errorf("restart etcd: %w", err)
	}
	c.etcd = etcd
	return nil
}

// Nodes returns the nodes that are running, in the order they started.
func (c *Cluster) Nodes() []*node.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	nodes := make([]*node.Node, len(c.nodes))
	for i, r := range c.nodes {
		nodes[i] = r.node
	}
	return nodes
}

// StartNode starts one more node, registered in the cluster's etcd, and
// returns once it is serving and registered.
func (c *Cluster) StartNode(ctx context.Context, cfg node.Config) (*node.Node, error) {
	cfg.Etcd = []string{c.etcd.ClientURL()}
	if cfg.Logger == nil {
		cfg.Logger = c.logger
	}
	n, err := node.New(cfg)
	if err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r := &running{node: n, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- n.Run(runCtx) }()
	select {
	case <-n.Ready():
	case err := <-r.done:
		cancel()
		return nil, err
	case <-ctx.Done():
		cancel()
		<-r.done
		return nil, ctx.Err()
	}
	c.mu.Lock()
	c.nodes = append(c.nodes, r)
	c.mu.Unlock()
	return n, nil
}

// StopNode drains node n, as SIGTERM does, and waits until it has stopped.
func (c *Cluster) StopNode(n *node.Node) error {
	c.mu.Lock()
	var r *running
	for i, candidate := range c.nodes {
		if candidate.node == n {
			r = candidate
			c.nodes = append(c.nodes[:i], c.nodes[i+1:]...)
			break
		}
	}
	c.mu.Unlock()
	if r == nil {
		return errors.New("devcluster: no such node")
	}
	r.cancel()
	return <-r.done
}

// Close drains every node at once, then stops etcd and removes its data.
func (c *Cluster) Close() error {
	c.mu.Lock()
	nodes := c.nodes
	c.nodes = nil
	c.mu.Unlock()
	for _, r := range nodes {
		r.cancel()
	}
	var errs []error
	for _, r := range nodes {
		errs = append(errs, <-r.done)
	}
	c.etcd.Close()
	errs = append(errs, c.dir.remove())
	return errors.Join(errs...)
}

// Describe writes what runs and how to try it, for people.
func (c *Cluster) Describe(w io.Writer) {
	nodes := c.Nodes()
	fmt.Fprintf(w, "RouteGuide development cluster: etcd at %s, %d node%s\n\n", c.EtcdURL(), len(nodes), plural(len(nodes)))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  NODE ID\tGRPC\tMETRICS")
	for _, n := range nodes {
		metrics := n.MetricsAddr()
		if metrics == "" {
			metrics = "-"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", n.ID(), n.AdvertisedAddr(), metrics)
	}
	tw.Flush()
	etcdFlag := ""
	if c.EtcdURL() != "http://127.0.0.1:2379" {
		etcdFlag = " --etcd " + c.EtcdURL()
	}
	fmt.Fprintf(w, "\nTry, from another terminal:\n  go run ./cmd/client%s tour\n  go run ./cmd/client%s load --duration 10s\n\nCtrl-C drains every node and stops etcd.\n", etcdFlag, etcdFlag)
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
