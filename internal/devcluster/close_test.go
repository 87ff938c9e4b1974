package devcluster_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/routeguide-cluster/routeguide/discovery"
	"github.com/routeguide-cluster/routeguide/internal/clientcli"
	"github.com/routeguide-cluster/routeguide/internal/devcluster"
	"github.com/routeguide-cluster/routeguide/internal/load"
	"github.com/routeguide-cluster/routeguide/internal/testutils/nodetest"
)

// TestCloseLeavesNoGoroutine runs a cluster through what `node -dev` does:
// start, serve a client, drain one node, close.
func TestCloseLeavesNoGoroutine(t *testing.T) {
	before := goleak.IgnoreCurrent()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	template := nodetest.Config(t)
	template.DrainDelay = 0
	cluster, err := devcluster.Start(ctx, devcluster.Config{Nodes: 3, Node: template, EtcdAddr: "127.0.0.1:0", Logger: template.Logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cluster.Close() }) // if the test stops early; closing again does nothing
	conn, err := clientcli.Dial(ctx, "etcd:///routeguide", clientcli.WithEtcdConfig(discovery.EtcdConfig{Endpoints: []string{cluster.EtcdURL()}}))
	if err != nil {
		t.Fatal(err)
	}
	res, err := load.Run(ctx, conn, load.Config{RPC: load.Mix, Concurrency: 4, Requests: 200, Timeout: 5 * time.Second})
	if err != nil || res.OK != 200 {
		t.Errorf("load: %+v, %v", res, err)
	}
	if err := cluster.StopNode(cluster.Nodes()[0]); err != nil {
		t.Errorf("StopNode: %v", err)
	}
	if err := conn.Close(); err != nil {
		t.Errorf("close the client: %v", err)
	}
	if err := cluster.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	goleak.VerifyNone(t, before)
}
