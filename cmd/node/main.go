// Command node serves RouteGuide as one node of a cluster, configured by flags
// or by ROUTEGUIDE_<FLAG> environment variables; SIGINT or SIGTERM drain it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/routeguide-cluster/routeguide/discovery"
	"github.com/routeguide-cluster/routeguide/internal/devcluster"
	"github.com/routeguide-cluster/routeguide/internal/flagenv"
	"github.com/routeguide-cluster/routeguide/internal/node"
)

func main() {
	os.Exit(run())
}

// run is the whole program; it returns the exit status: 2 for a usage error,
// 1 for a failure to start or serve.
func run() int {
	cfg, opts, err := parseConfig(os.Args[1:], os.LookupEnv, os.Stdout)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "node: %v\n", err)
		return 2
	}
	cfg.Logger = slog.New(opts.log.handler(os.Stderr))
	// A closed stdout or stderr (node -dev | tee, then Ctrl-C) must not kill
	// a draining node: with SIGPIPE notified, Go fails the write with EPIPE
	// instead of dying of the signal, and logging drops what it cannot write.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	// The first signal drains the node. It also restores the default action,
	// before the drain starts, so that a second signal kills the node at once.
	signalled, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	context.AfterFunc(signalled, func() { stop(); cancel() })
	if opts.dev {
		err = runDev(ctx, cfg, opts)
	} else {
		err = runNode(ctx, cfg)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "node: %v\n", err)
		return 1
	}
	return 0
}

func runNode(ctx context.Context, cfg node.Config) error {
	n, err := node.New(cfg)
	if err != nil {
		return err
	}
	return n.Run(ctx)
}

// runDev runs the one-command local cluster: an embedded etcd on
// --dev-etcd-listen and --dev-nodes nodes, until ctx ends.
func runDev(ctx context.Context, cfg node.Config, opts options) error {
	cluster, err := devcluster.Start(ctx, devcluster.Config{Nodes: opts.devNodes, Node: cfg, EtcdAddr: opts.devEtcdListen, Logger: cfg.Logger})
	if err != nil {
		return err
	}
	cluster.Describe(os.Stdout)
	<-ctx.Done()
	return cluster.Close()
}

// parseConfig reads the flags, with the environment as their defaults, into a
// validated node.Config. For -h it writes the usage to stdout and returns
// flag.ErrHelp.
func parseConfig(args []string, lookup func(string) (string, bool), stdout io.Writer) (node.Config, options, error) {
	cfg := node.DefaultConfig()
	opts := options{log: logOptions{format: "text", level: slog.LevelInfo}, devNodes: 3, devEtcdListen: "127.0.0.1:2379"}
	logOpts := &opts.log
	fs := flag.NewFlagSet("node", flag.ContinueOnError)
	cfg.Register(fs)
	fs.Var(&logOpts.format, "log-format", "log `format`: text or json")
	fs.TextVar(&logOpts.level, "log-level", logOpts.level, "log `level`: debug, info, warn or error")
	fs.BoolVar(&opts.dev, "dev", false, "run a local cluster in this process: an embedded etcd on --dev-etcd-listen and --dev-nodes nodes on the ports from --listen up, with metrics on ports the system picks (or from --metrics-listen up, when given)")
	fs.IntVar(&opts.devNodes, "dev-nodes", opts.devNodes, "`number` of nodes with --dev")
	fs.StringVar(&opts.devEtcdListen, "dev-etcd-listen", opts.devEtcdListen, "`address` where the embedded etcd of --dev serves clients; a loopback address unless --dev-etcd-insecure-listen")
	fs.BoolVar(&opts.devEtcdInsecure, "dev-etcd-insecure-listen", false, "let --dev-etcd-listen be an address other hosts reach: the embedded etcd has no TLS and no users, so whoever reaches it can rewrite the registry")

	err := flagenv.Parse(fs, args, lookup)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(stdout, "Usage: node [flags]\nEach flag may also be set by its variable, such as %s=30s; flags win.\n\n", flagenv.VarName("lease-ttl"))
		fs.SetOutput(stdout)
		fs.PrintDefaults()
	}
	if err == nil && fs.NArg() > 0 {
		// The flag package stops at the first argument and would quietly
		// leave every flag after it unread.
		err = fmt.Errorf("unexpected argument %q: node takes flags only", fs.Arg(0))
	}
	if err == nil && opts.dev && !flagenv.Given(fs, "metrics-listen", lookup) {
		// The nodes of a development cluster share this machine with a
		// node that joins it on the default port, and with Prometheus.
		cfg.MetricsListen = "127.0.0.1:0"
	}
	if err == nil {
		// The etcd password has no flag, so that it is never on a command line.
		cfg.EtcdAuth.LookupPassword(lookup)
		err = cfg.Validate()
	}
	if err == nil {
		err = opts.validate(fs, lookup)
	}
	return cfg, opts, err
}

// options are the flags that are not part of a node's Config.
type options struct {
	log           logOptions
	dev           bool
	devNodes      int
	devEtcdListen string
	// devEtcdInsecure lets the development etcd listen beyond this host.
	devEtcdInsecure bool
}

// validate checks the flags of --dev, naming the one at fault.
func (o options) validate(fs *flag.FlagSet, lookup func(string) (string, bool)) error {
	if !o.dev {
		for _, name := range []string{"dev-nodes", "dev-etcd-listen", "dev-etcd-insecure-listen"} {
			if flagenv.Given(fs, name, lookup) {
				return fmt.Errorf("--%s: needs --dev", name)
			}
		}
		return nil
	}
	if o.devNodes < 1 {
		return fmt.Errorf("--dev-nodes: %d; a cluster needs at least one node", o.devNodes)
	}
	if discovery.CheckAddr(o.devEtcdListen, discovery.ListenAddr) != nil {
		return fmt.Errorf("--dev-etcd-listen: %q is not a host:port address", o.devEtcdListen)
	}
	if host, _, _ := net.SplitHostPort(o.devEtcdListen); !discovery.IsLoopbackHost(host) && !o.devEtcdInsecure {
		return fmt.Errorf("--dev-etcd-listen: %q is not a loopback address, and the development etcd has no TLS and no users: whoever reaches it can rewrite the registry; add --dev-etcd-insecure-listen to listen there all the same", o.devEtcdListen)
	}
	return nil
}

type logOptions struct {
	format logFormat
	level  slog.Level
}

func (o logOptions) handler(w io.Writer) slog.Handler {
	opts := &slog.HandlerOptions{Level: o.level}
	if o.format == "json" {
		return slog.NewJSONHandler(w, opts)
	}
	return slog.NewTextHandler(w, opts)
}

// logFormat is a flag that accepts only the formats there is a handler for.
type logFormat string

func (f *logFormat) String() string { return string(*f) }

func (f *logFormat) Set(s string) error {
	if s != "text" && s != "json" {
		return errors.New(`must be "text" or "json"`)
	}
	*f = logFormat(s)
	return nil
}
