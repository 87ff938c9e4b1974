package devcluster_test

import (
	"testing"

	"github.com/routeguide-cluster/routeguide/discovery/xdsserver"
	"github.com/routeguide-cluster/routeguide/internal/clientcli"
	"github.com/routeguide-cluster/routeguide/internal/devcluster"
	"github.com/routeguide-cluster/routeguide/internal/load"
)

// xdsTarget is what xDS clients dial.
const xdsTarget = "xds:///routeguide"

// xdsBootstrap is the dial option of an xds:/// client of cluster: a
// bootstrap that names every node there is now, the first one first.
func xdsBootstrap(tb testing.TB, cluster *devcluster.Cluster) clientcli.DialOption {
	tb.Helper()
	var servers []string
	for _, n := range cluster.Nodes() {
		servers = append(servers, n.AdvertisedAddr())
	}
	bootstrap, err := xdsserver.Bootstrap(xdsserver.BootstrapConfig{Servers: servers, NodeID: tb.Name()})
	if err != nil {
		tb.Fatal(err)
	}
	return clientcli.WithXDSBootstrap(bootstrap)
}

// dialXDS connects to the cluster over xDS, as `client --target
// xds:///routeguide` does.
func dialXDS(t *testing.T, cluster *devcluster.Cluster) *clientcli.Conn {
	t.Helper()
	conn, err := clientcli.Dial(t.Context(), xdsTarget, nil, xdsBootstrap(t, cluster))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestXDSClientSplitsCallsRoundRobinOverThreeNodes(t *testing.T) {
	testRoundRobinSplit(t, dialXDS, 5)
}

// TestXDSClientDrainUnderLoadFailsNoCall is TestDrainUnderLoadFailsNoCall
// for a client that has the nodes from the xDS server of the first node:
// the drained node leaves the endpoints it is sent before it stops serving.
func TestXDSClientDrainUnderLoadFailsNoCall(t *testing.T) {
	for _, rpc := range []load.RPC{load.Get, load.Mix} {
		t.Run(string(rpc), func(t *testing.T) { testDrainUnderLoad(t, rpc, dialXDS) })
	}
}

// TestXDSClientTakesAJoinedNodeWithin250ms starts and drains 20 nodes under
// load from an xDS client, as BenchmarkJoinLatency does, and bounds the p99
// of the time from each node's key in etcd to its first answer.
func TestXDSClientTakesAJoinedNodeWithin250ms(t *testing.T) {
	template := nodeTemplate(t)
	cluster := startCluster(t, 2, template)
	conn := dialXDS(t, cluster)
	joins := 0
	delays := joinDelays(t, cluster, template, conn, func() bool { joins++; return joins <= 20 })
	p99 := percentile(delays, 99)
	t.Logf("%d joins: p50 %.1fms, p99 %.1fms", len(delays), percentile(delays, 50), p99)
	if p99 > 250 {
		t.Errorf("p99 %.1fms from a key in etcd to the node's first answer, want at most 250ms", p99)
	}
}
