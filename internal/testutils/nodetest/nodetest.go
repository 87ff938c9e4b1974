// Package nodetest starts real RouteGuide nodes in the test process for the
// tests of other packages, on ephemeral 127.0.0.1 ports, stopped when the
// test ends: one standalone (no etcd), or a cluster as `node -dev` runs it.
package nodetest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/routeguide-cluster/routeguide/internal/devcluster"
	"github.com/routeguide-cluster/routeguide/internal/node"
	"github.com/routeguide-cluster/routeguide/internal/testutils"
)

// Config is the configuration test nodes start from: free ports, no metrics
// listener, a short lease and drain, and logs at Warn and above in the
// test's output.
func Config(tb testing.TB) node.Config {
	cfg := node.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.MetricsListen = ""
	cfg.LeaseTTL = 3 * time.Second
	cfg.DrainDelay = 200 * time.Millisecond
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.Logger = slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	return cfg
}

// StartCluster starts an embedded etcd on a free port and n nodes from
// template, as `node -dev` does, and closes them all when the test ends.
func StartCluster(tb testing.TB, n int, template node.Config) *devcluster.Cluster {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), 30*time.Second)
	defer cancel()
	c, err := devcluster.Start(ctx, devcluster.Config{Nodes: n, Node: template, EtcdAddr: "127.0.0.1:0", Logger: template.Logger})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := c.Close(); err != nil {
			tb.Errorf("close the cluster: %v", err)
		}
	})
	return c
}

// Start runs a standalone node with id until the test ends, and returns once
// it serves. change, when given, adjusts the configuration first.
func Start(tb testing.TB, id string, change ...func(*node.Config)) *node.Node {
	tb.Helper()
	cfg := Config(tb)
	cfg.Etcd = nil
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
	testutils.Run(tb, "node "+id, n)
	return n
}
