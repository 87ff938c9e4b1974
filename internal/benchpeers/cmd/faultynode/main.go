// Command faultynode is our node, as cmd/node runs it from the same flags,
// with a gray fault on RouteGuide's calls (package grayfault): slow or
// failing while it stays registered and SERVING. It exists for the
// gray-failure benchmark only; the product's node has no such flag.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/routeguide-cluster/routeguide/internal/flagenv"
	"github.com/routeguide-cluster/routeguide/internal/node"
	"github.com/routeguide-cluster/routeguide/internal/testutils/grayfault"
)

func main() {
	cfg := node.DefaultConfig()
	fault := &grayfault.Fault{}
	fs := flag.NewFlagSet("faultynode", flag.ContinueOnError)
	cfg.Register(fs)
	fs.DurationVar(&fault.Delay, "fault-delay", 0, "hold every RouteGuide call this `long`")
	fs.IntVar(&fault.FailPercent, "fault-fail-percent", 0, "fail this `percent` of RouteGuide calls UNAVAILABLE")
	switched := fs.Bool("fault-switched", false, "start with the fault off; lines \"on\" and \"off\" on stdin switch it")
	if err := flagenv.Parse(fs, os.Args[1:], os.LookupEnv); err != nil {
		os.Exit(2)
	}
	if err := cfg.Validate(); err != nil || fault.FailPercent < 0 || fault.FailPercent > 100 || fault.Delay < 0 {
		fmt.Fprintf(os.Stderr, "faultynode: bad configuration: %v (fault %+v)\n", err, fault)
		os.Exit(2)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg.ServerOptions = fault.ServerOptions()
	if *switched {
		fault.Switch(false)
		go fault.FollowSwitches(os.Stdin) // ends with the process
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	n, err := node.New(cfg)
	if err == nil {
		err = n.Run(ctx)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "faultynode: %v\n", err)
		os.Exit(1)
	}
}
