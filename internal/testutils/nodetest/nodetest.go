// Package nodetest starts real RouteGuide nodes for the tests of other
// packages: standalone (no etcd), on an ephemeral 127.0.0.1 port, stopped
// when the test ends.
package nodetest

import (
	"context"
	"log/slog"
	"testing"

	"github.com/routeguide-cluster/routeguide/internal/node"
)

// Start runs a standalone node with id until the test ends, and returns once
// it serves. change, when given, adjusts the configuration first.
func Start(tb testing.TB, id string, change ...func(*node.Config)) *node.Node {
	tb.Helper()
	cfg := node.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Etcd = nil
	cfg.MetricsListen = ""
	cfg.NodeID = id
	cfg.DrainDelay = 0
	cfg.Logger = slog.New(slog.DiscardHandler)
	for _, f := range change {
		f(&cfg)
	}
	n, err := node.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("node %s: %v", id, err)
		}
	})
	select {
	case <-n.Ready():
	case err := <-done:
		tb.Fatalf("node %s stopped before it was ready: %v", id, err)
	}
	return n
}
