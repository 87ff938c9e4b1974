// Package clientcli is the RouteGuide command-line client: it parses the
// flags and the command, dials the cluster, makes the calls and prints what
// comes back, for people or as JSON.
package clientcli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"time"

	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/routeguide-cluster/routeguide/discovery"
	"github.com/routeguide-cluster/routeguide/internal/etcdauth"
	"github.com/routeguide-cluster/routeguide/internal/flagenv"
	"github.com/routeguide-cluster/routeguide/internal/load"
	"github.com/routeguide-cluster/routeguide/internal/tracing"
	"github.com/routeguide-cluster/routeguide/routeguide/contract"
)

// Exit statuses.
const (
	ExitOK     = 0 // the command did what it was asked
	ExitFailed = 1 // an RPC failed, etcd is out of reach or holds no node, or the metrics listener could not start
	ExitUsage  = 2 // the command line or the input was wrong
)

// IO is where a command reads its input and writes its output. Results go to
// Stdout; usage, errors and the progress bar go to Stderr.
type IO struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// Option changes how Main runs.
type Option func(*cli)

// WithDial makes every command dial through dial instead of Dial.
func WithDial(dial DialFunc) Option {
	return func(c *cli) { c.dial = dial }
}

// withSeed makes record and tour draw their routes from a fixed seed.
func withSeed(seed uint64) Option {
	return func(c *cli) { c.rng = rand.New(rand.NewPCG(seed, seed)) }
}

// withProgress makes load report its progress to report as well.
func withProgress(report func(load.Progress)) Option {
	return func(c *cli) { c.onProgress = report }
}

// withMetricsAddr tells report the address the metrics server listens on,
// once it does: the port that --metrics-listen HOST:0 took.
func withMetricsAddr(report func(net.Addr)) Option {
	return func(c *cli) { c.onMetricsAddr = report }
}

// cli is one run of the client.
type cli struct {
	io         IO
	lookupEnv  func(string) (string, bool)
	dial       DialFunc
	cfg        Config
	rng        *rand.Rand
	onProgress func(load.Progress)

	// serveMetrics says that the command serves metrics when it connects:
	// it runs for long and --metrics-listen is set.
	serveMetrics  bool
	metrics       *metricsServer // while the command runs
	onMetricsAddr func(net.Addr)

	tracing *tracing.Provider // while the command runs; nil when tracing is off
}

// usageError is a mistake on the command line or in the input: exit 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// errHelp asks for the usage text and exit status 0.
var errHelp = flag.ErrHelp

// command is one thing the client does.
type command struct {
	name, args, summary string
	run                 func(c *cli, ctx context.Context, args []string) error
	// longRunning commands serve metrics with --metrics-listen; the others
	// are over before anyone could scrape them, and ignore it.
	longRunning bool
}

var commands = []command{
	{"get", "LAT LON", "print the feature at a point", (*cli).get, false},
	{"list", "LAT1 LON1 LAT2 LON2", "print every feature in the rectangle between two corners", (*cli).list, false},
	{"record", "N", "record a random route of N points over known features", (*cli).record, false},
	{"chat", "", "send the notes read from stdin, one \"LAT LON message\" a line,\nand print every note that comes back", (*cli).chat, true},
	{"tour", "", "call all four RPCs as the canonical RouteGuide client does,\nwith several GetFeature calls in flight at once", (*cli).tour, false},
	{"load", "[LOAD FLAGS]", "call from several workers at once and report ok, failed by\ncode, QPS, p50/p90/p99 latency and the calls each node answered", (*cli).load, true},
	{"xds-bootstrap", "ADDR...", "print the xDS bootstrap for xds:/// targets, in any language,\nof the nodes at ADDR... (TLS from --tls-ca; --node-id ID)", (*cli).xdsBootstrap, false},
}

// Main runs the client with args (without the program name) and returns the
// exit status: 0 on success, 1 when an RPC failed (or load and chat could not
// listen on --metrics-listen), 2 on bad usage. Flags take their defaults from
// the environment through lookupEnv (os.LookupEnv in a program). When ctx
// ends, the command stops; load still prints its summary.
func Main(ctx context.Context, args []string, stdio IO, lookupEnv func(string) (string, bool), opts ...Option) int {
	if stdio.Stdin == nil {
		stdio.Stdin = strings.NewReader("")
	}
	if lookupEnv == nil {
		lookupEnv = func(string) (string, bool) { return "", false }
	}
	c := &cli{
		io:        stdio,
		lookupEnv: lookupEnv,
		dial:      Dial,
		cfg:       DefaultConfig(),
		rng:       rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
	}
	for _, opt := range opts {
		opt(c)
	}
	return c.main(ctx, args)
}

func (c *cli) main(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	c.cfg.Register(fs)
	err := flagenv.Parse(fs, args, c.lookupEnv)
	if errors.Is(err, flag.ErrHelp) {
		c.usage()
		return ExitOK
	}
	var name string
	var rest []string
	if err == nil && fs.NArg() > 0 {
		// The flags before the command may come after it too, as kubectl's
		// and etcdctl's do; there they win.
		name, rest = fs.Arg(0), fs.Args()[1:]
		rest, err = takeFlags(fs, rest)
	}
	if err == nil {
		// The etcd password has no flag, so that it is never on a command line.
		c.cfg.EtcdAuth.LookupPassword(c.lookupEnv)
		err = c.cfg.Validate()
	}
	if err != nil {
		fmt.Fprintf(c.io.Stderr, "client: %v\n", err)
		return ExitUsage
	}
	if name == "" {
		fmt.Fprintln(c.io.Stderr, "client: no command given")
		fmt.Fprintln(c.io.Stderr)
		c.usage()
		return ExitUsage
	}
	if name == "help" {
		c.usage()
		return ExitOK
	}
	for _, cmd := range commands {
		if cmd.name == name {
			return c.exit(name, c.run(ctx, cmd, rest))
		}
	}
	fmt.Fprintf(c.io.Stderr, "client: unknown command %q\n\n", name)
	c.usage()
	return ExitUsage
}

// run runs cmd, and stops the metrics server, if it started one, once cmd is
// done: it serves for the whole life of the command, summary included.
// With --otlp-endpoint, it traces cmd (see traceCommand).
func (c *cli) run(ctx context.Context, cmd command, args []string) (err error) {
	c.serveMetrics = cmd.longRunning && c.cfg.MetricsListen != ""
	if c.tracing, err = tracing.Start(tracing.Config{Endpoint: c.cfg.OTLPEndpoint, ServiceName: TracingService, Logger: quietLogger}); err != nil {
		return err
	}
	ctx, end := c.traceCommand(ctx, cmd)
	err = cmd.run(c, ctx, args)
	end(err)
	if c.metrics != nil {
		c.metrics.Close()
		c.metrics = nil
	}
	return err
}

// TracingService is the service.name of the client's spans.
const TracingService = "routeguide-client"

// traceCommand starts the span under which the calls of cmd are traced, one
// trace for the whole command, and returns the function that ends it and
// exports what is left. load makes no such span: each of its calls starts a
// trace of its own, or one trace would hold them all.
func (c *cli) traceCommand(ctx context.Context, cmd command) (context.Context, func(error)) {
	var span trace.Span
	if c.tracing != nil && cmd.name != "load" {
		ctx, span = c.tracing.Tracer(TracingService).Start(ctx, "client "+cmd.name)
	}
	return ctx, func(err error) {
		if span != nil {
			if err != nil {
				span.SetStatus(otelcodes.Error, err.Error())
			}
			span.End()
		}
		// Bounded, so that a collector out of reach delays the exit by
		// this much at most; the command's own context may be over.
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		c.tracing.Shutdown(ctx)
	}
}

// exit reports err, the outcome of command name, and returns the exit status.
func (c *cli) exit(name string, err error) int {
	var usage usageError
	switch {
	case err == nil:
		return ExitOK
	case errors.Is(err, errHelp):
		c.usage()
		return ExitOK
	case errors.As(err, &usage):
		fmt.Fprintf(c.io.Stderr, "client %s: %v\n", name, err)
		return ExitUsage
	case errors.Is(err, errRPCsFailed): // load has printed its summary
		return ExitFailed
	default:
		fmt.Fprintf(c.io.Stderr, "client %s: %v\n", name, err)
		return ExitFailed
	}
}

// connect dials the configured target. A target that cannot be dialled is a
// usage error: gRPC dials lazily, so only the flags can be wrong here, but
// for etcd's client, which with a user authenticates at once, and for the
// first read of the registry: etcd refusing the user, out of reach, or
// without a node, is a failure (exit 1), as it is for a node. A
// command that serves metrics listens first, so that a port in use fails it
// (exit 1) before any call is made; the metrics server runs until the
// command returns.
func (c *cli) connect(ctx context.Context) (*Conn, error) {
	opts, err := c.cfg.dialOptions()
	if err != nil {
		return nil, usageError{err}
	}
	if c.serveMetrics {
		m, err := newClientMetrics()
		if err != nil {
			return nil, err
		}
		if c.metrics, err = serveMetrics(c.cfg.MetricsListen, m.registry); err != nil {
			return nil, err
		}
		if c.onMetricsAddr != nil {
			c.onMetricsAddr(c.metrics.Addr())
		}
		opts = append(opts, m.dialOptions()...)
	}
	if c.tracing != nil {
		opts = append(opts, WithGRPCOptions(c.tracing.DialOptions()...))
	}
	conn, err := c.dial(ctx, c.cfg.Target, c.cfg.Etcd, opts...)
	if err != nil {
		if discovery.IsAuthError(err) || errors.Is(err, context.DeadlineExceeded) {
			return nil, err
		}
		return nil, usageError{err}
	}
	if conn.etcd != nil {
		// Before any call waits for nodes: is etcd there, and a node in it?
		if err := checkRegistry(ctx, conn.etcd, c.cfg.Target, c.cfg.Etcd); err != nil {
			conn.Close()
			return nil, err
		}
	}
	return conn, nil
}

// takeFlags sets the flags of fs found in args, a command's arguments, and
// returns the other arguments in their order. Anything that does not name a
// flag of fs stays, so "-74.3" is a longitude and "--rpc" is load's; "--"
// ends the flags.
func takeFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var rest []string
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			return append(rest, args[i:]...), nil
		}
		name, value, hasValue := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(arg, "-"), "-"), "=")
		f := fs.Lookup(name)
		if !strings.HasPrefix(arg, "-") || f == nil {
			rest = append(rest, arg)
			continue
		}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); !hasValue && !(ok && b.IsBoolFlag()) {
			if i+1 == len(args) {
				return nil, fmt.Errorf("flag needs an argument: -%s", name)
			}
			i++
			value, hasValue = args[i], true
		}
		if !hasValue {
			value = "true"
		}
		if err := fs.Set(name, value); err != nil {
			return nil, fmt.Errorf("invalid value %q for flag -%s: %v", value, name, err)
		}
	}
	return rest, nil
}

// wantArgs checks the positional arguments of a command, and turns -h into a
// request for help.
func wantArgs(args []string, n int, names string) error {
	for _, a := range args {
		if a == "-h" || a == "-help" || a == "--help" {
			return errHelp
		}
	}
	if len(args) != n {
		if n == 0 {
			return usagef("takes no arguments, got %q", args)
		}
		return usagef("want %s, got %d argument%s", names, len(args), plural(len(args)))
	}
	return nil
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func (c *cli) usage() {
	w := c.io.Stderr
	fmt.Fprint(w, "Usage: client [FLAGS] COMMAND [ARGS]\n\n")
	fmt.Fprint(w, "A client for a RouteGuide cluster. Coordinates are decimal degrees.\n\nCommands:\n")
	for _, cmd := range commands {
		lines := strings.Split(cmd.summary, "\n")
		fmt.Fprintf(w, "  %-26s %s\n", strings.TrimSpace(cmd.name+" "+cmd.args), lines[0])
		for _, line := range lines[1:] {
			fmt.Fprintf(w, "  %-26s %s\n", "", line)
		}
	}
	fmt.Fprintf(w, "  %-26s %s\n", "help", "print this text")

	fmt.Fprint(w, "\nFlags, before or after the command:\n")
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	defaults := DefaultConfig()
	defaults.Register(fs)
	fs.SetOutput(w)
	fs.PrintDefaults()

	fmt.Fprint(w, "\nLoad flags, after \"load\":\n")
	lfs := flag.NewFlagSet("load", flag.ContinueOnError)
	registerLoad(lfs, new(load.Config))
	lfs.SetOutput(w)
	lfs.PrintDefaults()
	fmt.Fprintf(w, `
  mix is %s. Each record sends
  %d points of known features; each chat sends %d notes at random points.

Output:
  Text for people by default; [node ID] names the node that answered (from
  the %s response header). With --json, get, record, tour and
  load print one JSON object; list and chat print JSON lines, one object per
  feature or note as it arrives. load draws a progress bar on stderr when
  stderr is a terminal.

Metrics:
  With --metrics-listen HOST:PORT, load and chat serve Prometheus metrics at
  http://HOST:PORT/metrics for as long as they run:
    grpc_client_started_total, grpc_client_handled_total,
    grpc_client_msg_sent_total, grpc_client_msg_received_total and the
    grpc_client_handling_seconds histogram (go-grpc-middleware);
    routeguide_resolver_endpoints, routeguide_resolver_updates_total,
    routeguide_resolver_watch_restarts_total,
    routeguide_resolver_malformed_entries_total and
    routeguide_resolver_unleased_entries_total, by service (etcd:/// only);
    routeguide_client_calls_total by node_id (from the %s header,
    "unknown" when no node answered), grpc_method and grpc_code;
    and the Go and process collectors.
  They listen before they dial: a port in use exits 1. get, list, record and
  tour end before anyone could scrape them, and ignore the flag.

Security:
  --tls-ca connects over TLS; with --tls-cert and --tls-key, over mutual
  TLS. The nodes of etcd:///SERVICE must show a certificate for SERVICE,
  or for the name given with --tls-server-name. etcd is reached
  over TLS with https:// endpoints and --etcd-ca (and --etcd-cert,
  --etcd-key when it asks for a client certificate); --etcd-username takes
  its password from %s or --etcd-password-file, never
  from a flag.

Environment:
  Every flag may also be set by %s<FLAG>, upper case with underscores
  (%s=127.0.0.1:50051, %s=32); flags win.

Exit status: 0 on success, 1 when an RPC failed, etcd did not answer
within 2s or holds no node, or the metrics port is in use, 2 on bad usage.

Examples:
  client --target 127.0.0.1:50051 get 40.7484405 -73.9856644
  client --target 127.0.0.1:50051 list 40 -75 42 -73
  client --target 127.0.0.1:50051 record 20
  printf '40.9 -74.3 hello\n40.9 -74.3 again\n' | client --target 127.0.0.1:50051 chat
  client --target 127.0.0.1:50051 tour
  client --target 127.0.0.1:50051 load --rpc get --concurrency 8 --requests 10000
  client --target 127.0.0.1:50051 load --rpc mix --concurrency 32 --duration 30s --json
  client --metrics-listen 127.0.0.1:9100 load --duration 5m
`, mixDescription, load.RoutePoints, load.ChatNotes, contract.NodeHeader, contract.NodeHeader,
		etcdauth.PasswordVar, flagenv.Prefix, flagenv.VarName("target"), flagenv.VarName("concurrency"))
}

const mixDescription = "70% get, 10% list, 10% record and 10% chat"
