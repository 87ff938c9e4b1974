package main

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/routeguide-cluster/routeguide/internal/devcluster"
	"github.com/routeguide-cluster/routeguide/internal/node"
)

// joinExample is the docs' command that adds a node to `node -dev`.
var joinExample = regexp.MustCompile("`go run ./cmd/node (--etcd http://127.0.0.1:2379 --listen [^`]+)`")

// TestREADMEJoinExampleTakesNoPortOfTheDevCluster starts the cluster of
// `node -dev` with its defaults, but for the gRPC and etcd ports (a test
// takes no fixed port), and checks that the node of every join example in
// README.md and docs/ (the README must have one), with its defaults, would
// listen on none of the cluster's ports, nor on the port where deploy/'s
// Prometheus is published.
func TestREADMEJoinExampleTakesNoPortOfTheDevCluster(t *testing.T) {
	none := func(string) (string, bool) { return "", false }
	var joins []node.Config
	for _, file := range docFiles(t) {
		text, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		examples := joinExample.FindAllSubmatch(text, -1)
		if len(examples) == 0 && filepath.Base(file) == "README.md" {
			t.Fatalf("README.md has no join example matching %s", joinExample)
		}
		for _, m := range examples {
			join, _, err := parseConfig(strings.Fields(string(m[1])), none, io.Discard)
			if err != nil {
				t.Fatalf("%s: the join example %q: %v", file, m[1], err)
			}
			joins = append(joins, join)
		}
	}
	dev, opts, err := parseConfig([]string{"-dev"}, none, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	dev.Listen = "127.0.0.1:0"
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cluster, err := devcluster.Start(ctx, devcluster.Config{Nodes: opts.devNodes, Node: dev, EtcdAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()

	taken := map[string]string{"9090": "deploy/'s Prometheus"}
	for _, n := range cluster.Nodes() {
		_, port, _ := net.SplitHostPort(n.MetricsAddr())
		taken[port] = "the metrics of dev node " + n.ID()
	}
	_, devEtcdPort, _ := net.SplitHostPort(opts.devEtcdListen)
	taken[devEtcdPort] = "the dev cluster's etcd"
	taken["50051"] = "the dev cluster's first node"
	for _, join := range joins {
		for flag, addr := range map[string]string{"--listen": join.Listen, "--metrics-listen": join.MetricsListen} {
			_, port, err := net.SplitHostPort(addr)
			if err != nil {
				t.Fatalf("the join example's %s %q: %v", flag, addr, err)
			}
			if what, ok := taken[port]; ok {
				t.Errorf("the join example's %s %s takes the port of %s", flag, addr, what)
			}
		}
	}
}
