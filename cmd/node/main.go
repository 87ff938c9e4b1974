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
	"strings"
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
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "gRPC listen `address`")
	fs.StringVar(&cfg.Advertise, "advertise", cfg.Advertise, "`host:port` registered in etcd (default: derived from --listen)")
	fs.Var((*listFlag)(&cfg.Etcd), "etcd", "comma-separated etcd `endpoints`; empty serves standalone, without registering")
	fs.StringVar(&cfg.Service, "service", cfg.Service, "service `name` to register under")
	fs.StringVar(&cfg.NodeID, "node-id", cfg.NodeID, "node `id` in etcd, logs and the routeguide-node header (default hostname:port)")
	fs.DurationVar(&cfg.LeaseTTL, "lease-ttl", cfg.LeaseTTL, "TTL of the etcd lease")
	fs.StringVar(&cfg.MetricsListen, "metrics-listen", cfg.MetricsListen, "metrics HTTP listen `address`; empty disables metrics")
	fs.StringVar(&cfg.FeaturesFile, "features", cfg.FeaturesFile, "features JSON `file` (default: the built-in data set)")
	fs.DurationVar(&cfg.DrainDelay, "drain-delay", cfg.DrainDelay, "how long a draining node keeps serving after leaving the registry")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout, "bound on the graceful stop; open calls are cut after it")
	fs.IntVar(&cfg.MaxMessageBytes, "max-msg-size", cfg.MaxMessageBytes, "largest message received or sent, in `bytes`")
	fs.IntVar(&cfg.Limits.RoutePoints, "max-route-points", cfg.Limits.RoutePoints, "points one RecordRoute may send; 0 for no bound")
	fs.IntVar(&cfg.Limits.ChatNotes, "max-chat-notes", cfg.Limits.ChatNotes, "notes one RouteChat may send; 0 for no bound")
	fs.IntVar(&cfg.NoteLimits.PerLocation, "max-notes-per-location", cfg.NoteLimits.PerLocation, "notes kept at one location, the oldest forgotten first; 0 for no bound when standalone")
	fs.Int64Var(&cfg.NoteLimits.Bytes, "max-notes-bytes", cfg.NoteLimits.Bytes, "memory all notes of a standalone node may take, in `bytes`; 0 for no bound")
	fs.IntVar(&cfg.NoteLimits.MessageBytes, "max-note-bytes", cfg.NoteLimits.MessageBytes, "largest message of one note, in `bytes`")
	fs.DurationVar(&cfg.NoteMaxAge, "notes-max-age", cfg.NoteMaxAge, "how long a cluster keeps a note in etcd")
	fs.IntVar(&cfg.NoteLimits.AnswerBytes, "max-chat-answer-bytes", cfg.NoteLimits.AnswerBytes, "most `bytes` of notes one RouteChat answer holds: the newest notes at the location that fit")
	fs.Var((*listFlag)(&cfg.NotesEtcd), "notes-etcd", "comma-separated `endpoints` of the etcd cluster that keeps the notes (default: --etcd's, on a connection of its own)")
	fs.Int64Var(&cfg.NotesBudget, "notes-budget", cfg.NotesBudget, "`bytes` of data the notes' etcd may hold while notes are posted; keep it well below etcd's --quota-backend-bytes")
	fs.IntVar(&cfg.Limits.NoteWrites, "max-note-writes", cfg.Limits.NoteWrites, "notes the node posts and answers at once; a client host may take a quarter")
	fs.DurationVar(&cfg.Limits.NoteWriteWait, "note-write-wait", cfg.Limits.NoteWriteWait, "how long a note waits for --max-note-writes before RESOURCE_EXHAUSTED")
	fs.IntVar(&cfg.MaxConcurrentStreams, "max-concurrent-streams", cfg.MaxConcurrentStreams, "calls one client connection may have open at once")
	fs.StringVar(&cfg.TLS.CertFile, "tls-cert", cfg.TLS.CertFile, "serve gRPC over TLS with the certificate in this `file` (PEM), with --tls-key")
	fs.StringVar(&cfg.TLS.KeyFile, "tls-key", cfg.TLS.KeyFile, "private key `file` (PEM) of --tls-cert")
	fs.StringVar(&cfg.TLS.ClientCAFile, "tls-client-ca", cfg.TLS.ClientCAFile, "mutual TLS: refuse clients without a certificate signed by the CA in this `file` (PEM)")
	cfg.EtcdAuth.Register(fs)
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

// listFlag is a comma-separated list flag; the empty string is the empty list.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(s string) error {
	*l = nil
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			*l = append(*l, item)
		}
	}
	return nil
}
