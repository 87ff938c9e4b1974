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
	"os"
	"os/signal"
	"syscall"

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
	// The first signal drains the node. It also restores the default action,
	// before the drain starts, so that a second signal kills the node at once.
	signalled, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	context.AfterFunc(signalled, func() { stop(); cancel() })
	if opts.dev {
		err = runDev(ctx, cfg, opts.devNodes)
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
// 127.0.0.1:2379 and nodes nodes, until ctx ends.
func runDev(ctx context.Context, cfg node.Config, nodes int) error {
	cluster, err := devcluster.Start(ctx, devcluster.Config{Nodes: nodes, Node: cfg, EtcdAddr: "127.0.0.1:2379", Logger: cfg.Logger})
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
	opts := options{log: logOptions{format: "text", level: slog.LevelInfo}, devNodes: 3}
	logOpts := &opts.log
	fs := flag.NewFlagSet("node", flag.ContinueOnError)
	cfg.Register(fs)
	fs.Var(&logOpts.format, "log-format", "log `format`: text or json")
	fs.TextVar(&logOpts.level, "log-level", logOpts.level, "log `level`: debug, info, warn or error")
	fs.BoolVar(&opts.dev, "dev", false, "run a local cluster in this process: an embedded etcd on 127.0.0.1:2379 and --dev-nodes nodes on the ports from --listen and --metrics-listen up")
	fs.IntVar(&opts.devNodes, "dev-nodes", opts.devNodes, "`number` of nodes with --dev")

	err := flagenv.Parse(fs, args, lookup)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(stdout, "Usage: node [flags]\nEach flag may also be set by its variable, such as %s=30s; flags win.\n\n", flagenv.VarName("lease-ttl"))
		fs.SetOutput(stdout)
		fs.PrintDefaults()
	}
	if err == nil {
		// The etcd password has no flag, so that it is never on a command line.
		cfg.EtcdAuth.LookupPassword(lookup)
		err = cfg.Validate()
	}
	if err == nil && opts.dev && opts.devNodes < 1 {
		err = fmt.Errorf("--dev-nodes: %d; a cluster needs at least one node", opts.devNodes)
	}
	return cfg, opts, err
}

// options are the flags that are not part of a node's Config.
type options struct {
	log      logOptions
	dev      bool
	devNodes int
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
