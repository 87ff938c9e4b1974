package clustertest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/routeguide-cluster/routeguide/discovery"
	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/clientcli"
	"github.com/routeguide-cluster/routeguide/internal/devcluster"
	"github.com/routeguide-cluster/routeguide/internal/load"
	"github.com/routeguide-cluster/routeguide/internal/node"
	"github.com/routeguide-cluster/routeguide/internal/testutils/etcdtest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/loadtest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/nodetest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/poll"
)

// target is what clients dial, as the client command does by default.
const target = "etcd:///routeguide"

// somewhere is a point with a feature, for single calls.
var somewhere = &pb.Point{Latitude: 409146138, Longitude: -746188906}

// dial connects to the cluster the way the client command does.
func dial(t *testing.T, c *devcluster.Cluster) *clientcli.Conn {
	t.Helper()
	conn, err := clientcli.Dial(t.Context(), target, clientcli.WithEtcdConfig(discovery.EtcdConfig{Endpoints: []string{c.EtcdURL()}}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func ids(nodes []*node.Node) []string {
	var ids []string
	for _, n := range nodes {
		ids = append(ids, n.ID())
	}
	return ids
}

// getFeature makes one GetFeature call and returns the node that answered.
func getFeature(ctx context.Context, conn grpc.ClientConnInterface, opts ...grpc.CallOption) (string, error) {
	var header, trailer metadata.MD
	_, err := pb.NewRouteGuideClient(conn).GetFeature(ctx, somewhere, append(opts, grpc.Header(&header), grpc.Trailer(&trailer))...)
	return load.NodeOf(header, trailer), err
}

// waitAllAnswer makes calls until every node in want has answered one: from
// then on, the client's round robin holds them all.
func waitAllAnswer(t *testing.T, conn grpc.ClientConnInterface, want ...string) {
	t.Helper()
	seen := map[string]bool{}
	poll.Until(t, 10*time.Second, fmt.Sprintf("every one of %v to answer", want), func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		if id, err := getFeature(ctx, conn); err == nil {
			seen[id] = true
		}
		for _, id := range want {
			if !seen[id] {
				return false
			}
		}
		return true
	})
}

// TestDrainUnderLoadFailsNoCall drains one node of three while eight workers
// call without pause. The drained node answers its share until the drain
// begins; then its clients must stop picking it within the drain delay,
// while it still serves, and no call may fail. GetFeature is retried on
// UNAVAILABLE, which could hide a bad drain; the mix has RecordRoute and
// RouteChat streams, which are never retried.
func TestDrainUnderLoadFailsNoCall(t *testing.T) {
	for _, rpc := range []load.RPC{load.Get, load.Mix} {
		t.Run(string(rpc), func(t *testing.T) { testDrainUnderLoad(t, rpc, dial) })
	}
}

// testDrainUnderLoad is TestDrainUnderLoadFailsNoCall for a client that
// dial connects.
func testDrainUnderLoad(t *testing.T, rpc load.RPC, dial func(*testing.T, *devcluster.Cluster) *clientcli.Conn) {
	template := nodetest.Config(t)
	template.DrainDelay = time.Second
	cluster := nodetest.StartCluster(t, 3, template)
	conn := dial(t, cluster)
	waitAllAnswer(t, conn, ids(cluster.Nodes())...)
	victim := cluster.Nodes()[1]
	others := slices.DeleteFunc(ids(cluster.Nodes()), func(id string) bool { return id == victim.ID() })

	// The log sees the unary calls only: all of get, 70% of the mix.
	calls := loadtest.NewLog(conn)
	loadStart := time.Now()
	background := loadtest.Start(t, calls, load.Config{RPC: rpc, Concurrency: 8, Duration: time.Minute, Timeout: 5 * time.Second})
	// The policy picks by load, so the share of one node of three varies
	// with the machine's noise: wait for calls, not a third of them.
	poll.Until(t, 20*time.Second, "the node to be drained to answer 100 calls", func() bool {
		return calls.Count(victim.ID(), loadStart, time.Time{}) >= 100
	})

	drainStart := time.Now()
	if err := cluster.StopNode(victim); err != nil {
		t.Fatalf("StopNode: %v", err)
	}
	stopped := time.Now()
	// The load goes on over the two nodes left.
	poll.Until(t, 10*time.Second, "500 calls after the drain", func() bool { return calls.Count("", stopped, time.Time{}) >= 500 })
	res := background.Stop(t)

	if res.Failed != 0 {
		t.Errorf("%d of %d calls failed during the drain: %v", res.Failed, res.OK+res.Failed, res.Errors)
	}
	if res.ByNode[victim.ID()] == 0 {
		t.Errorf("by_node %v: the drained node %s answered no call", res.ByNode, victim.ID())
	}
	if n := calls.Count(victim.ID(), stopped, time.Time{}); n != 0 {
		t.Errorf("%s answered %d calls after it stopped", victim.ID(), n)
	}
	for _, id := range others {
		if calls.Count(id, stopped, time.Time{}) == 0 {
			t.Errorf("%s answered no call after the drain", id)
		}
	}
	left := calls.Last(victim.ID()).Sub(drainStart)
	if left >= template.DrainDelay {
		t.Errorf("the drained node answered its last call %v after the drain began: the client kept picking it past the drain delay of %v", left, template.DrainDelay)
	}
	t.Logf("last response from the drained node %v after StopNode was called (drain delay %v); StopNode took %v; the node answered %d calls after the drain began",
		left.Round(time.Microsecond), template.DrainDelay, stopped.Sub(drainStart).Round(time.Millisecond),
		calls.Count(victim.ID(), drainStart, time.Time{}))
	t.Logf("load: ok=%d failed=%d qps=%.0f p50=%v p99=%v by_node=%v", res.OK, res.Failed, res.QPS, res.P50, res.P99, res.ByNode)
}

// TestCallsSpreadOverThreeNodes: alike nodes each take a share of the calls,
// though not exactly a third: the policy picks by latency and calls in
// flight, which vary from call to call on a busy machine.
func TestCallsSpreadOverThreeNodes(t *testing.T) {
	testCallsSpread(t, dial, 40)
}

// testCallsSpread makes 3000 calls over three nodes from a client that dial
// connects, and wants each node within percent of a third of them.
func testCallsSpread(t *testing.T, dial func(*testing.T, *devcluster.Cluster) *clientcli.Conn, percent int) {
	cluster := nodetest.StartCluster(t, 3, nodetest.Config(t))
	conn := dial(t, cluster)
	nodes := ids(cluster.Nodes())
	waitAllAnswer(t, conn, nodes...)

	const calls = 3000
	res, err := load.Run(t.Context(), conn, load.Config{RPC: load.Get, Concurrency: 8, Requests: calls, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != calls {
		t.Fatalf("ok=%d failed=%d %v, want %d calls OK", res.OK, res.Failed, res.Errors, calls)
	}
	share := calls / len(nodes)
	for _, id := range nodes {
		if got := res.ByNode[id]; got < share*(100-percent)/100 || got > share*(100+percent)/100 {
			t.Errorf("%s answered %d calls, want %d ± %d%%; by_node %v", id, got, share, percent, res.ByNode)
		}
	}
	if len(res.ByNode) != len(nodes) {
		t.Errorf("by_node %v names other nodes than %v", res.ByNode, nodes)
	}
	t.Logf("by_node %v", res.ByNode)
}

// TestNewNodeServesWithinASecondOfRegistering measures, under load, the time
// from a new node's key appearing in etcd to the first response from it.
func TestNewNodeServesWithinASecondOfRegistering(t *testing.T) {
	template := nodetest.Config(t)
	cluster := nodetest.StartCluster(t, 2, template)
	const trials = 5
	joins := 0
	delays := joinDelays(t, cluster, template, dial(t, cluster), func() bool { joins++; return joins <= trials })
	if worst := delays[len(delays)-1]; worst >= time.Second {
		t.Errorf("a new node answered its first call %v after its key appeared, want < 1s (all: %v)", worst, delays)
	}
	t.Logf("key written → first response from the new node, %d trials: min %v, median %v, max %v",
		trials, delays[0], delays[trials/2], delays[trials-1])
}

// joinDelays starts nodes while more says so, under load from conn, and
// returns, sorted, the time from each one's key appearing in etcd to its
// first answer.
func joinDelays(b testing.TB, cluster *devcluster.Cluster, template node.Config, conn *clientcli.Conn, more func() bool) []time.Duration {
	waitNodesAnswer(b, conn, len(cluster.Nodes()))
	registry := etcdtest.StartWatch(b, cluster.EtcdURL(), discovery.Prefix("routeguide"))
	calls := loadtest.NewLog(conn)
	run := loadtest.Start(b, calls, load.Config{RPC: load.Get, Concurrency: 8, Duration: time.Hour, Timeout: 5 * time.Second})

	var delays []time.Duration
	for i := 0; more(); i++ {
		cfg := template
		cfg.NodeID = fmt.Sprintf("join-%d", i+1)
		key := discovery.Prefix(cfg.Service) + cfg.NodeID
		n, err := cluster.StartNode(context.Background(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		poll.Until(b, 5*time.Second, "the watch to see "+key, func() bool { return !registry.PutAt(key).IsZero() })
		poll.Until(b, 5*time.Second, cfg.NodeID+" to answer a call", func() bool { return !calls.First(cfg.NodeID).IsZero() })
		delays = append(delays, calls.First(cfg.NodeID).Sub(registry.PutAt(key)))
		if err := cluster.StopNode(n); err != nil {
			b.Fatal(err)
		}
	}
	if res := run.Stop(b); res.Failed != 0 {
		b.Errorf("%d calls failed while nodes joined and left: %v", res.Failed, res.Errors)
	}
	slices.Sort(delays)
	return delays
}

func TestNoNodesFailsFastNamingTheService(t *testing.T) {
	template := nodetest.Config(t)
	cluster := nodetest.StartCluster(t, 1, template)
	if err := cluster.StopNode(cluster.Nodes()[0]); err != nil {
		t.Fatal(err)
	}
	conn := dial(t, cluster)

	const deadline = 5 * time.Second
	ctx, cancel := context.WithTimeout(t.Context(), deadline)
	defer cancel()
	start := time.Now()
	_, err := getFeature(ctx, conn)
	took := time.Since(start)
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("GetFeature with no node: %v, want Unavailable", err)
	}
	if took >= time.Second {
		t.Errorf("GetFeature with no node failed after %v, want < 1s (its deadline was %v)", took, deadline)
	}
	if msg := status.Convert(err).Message(); !strings.Contains(msg, target) {
		t.Errorf("error %q does not name %s", msg, target)
	}
	t.Logf("failed in %v: %v", took, err)

	// A call that waits for a node gets one as soon as one registers.
	type outcome struct {
		node string
		err  error
	}
	waiting := make(chan struct{})
	result := make(chan outcome, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		close(waiting)
		id, err := getFeature(ctx, conn, grpc.WaitForReady(true))
		result <- outcome{id, err}
	}()
	<-waiting
	cfg := template
	cfg.NodeID = "late"
	if _, err := cluster.StartNode(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	if got := <-result; got.err != nil || got.node != "late" {
		t.Errorf("waiting GetFeature: answered by %q, %v; want answered by late", got.node, got.err)
	}
}

func TestDuplicateNodeIDIsRefused(t *testing.T) {
	template := nodetest.Config(t)
	template.NodeID = "n1"
	cluster := nodetest.StartCluster(t, 1, template)
	first := cluster.Nodes()[0]

	cfg := template
	cfg.Etcd = []string{cluster.EtcdURL()}
	second, err := node.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if second.AdvertisedAddr() == first.AdvertisedAddr() {
		t.Fatalf("both nodes advertise %s", first.AdvertisedAddr())
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	start := time.Now()
	err = second.Run(ctx)
	took := time.Since(start)
	if !errors.Is(err, discovery.ErrNodeIDTaken) {
		t.Fatalf("Run of a second n1 = %v, want ErrNodeIDTaken", err)
	}
	if took > template.LeaseTTL {
		t.Errorf("Run of a second n1 returned after %v, want well within the TTL of %v", took, template.LeaseTTL)
	}
	t.Logf("refused in %v: %v", took, err)

	cli, err := discovery.NewEtcdClient(discovery.EtcdConfig{Endpoints: []string{cluster.EtcdURL()}})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	key := discovery.Prefix(cfg.Service) + "n1"
	resp, err := cli.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 {
		t.Fatalf("%s: %d keys, want 1", key, len(resp.Kvs))
	}
	if ep, err := discovery.DecodeEndpoint(key, resp.Kvs[0].Value); err != nil || ep.Addr != first.AdvertisedAddr() {
		t.Errorf("%s holds %+v (%v), want the first node's %s", key, ep, err, first.AdvertisedAddr())
	}
	// And the first node still serves every call.
	res, err := load.Run(ctx, dial(t, cluster), load.Config{RPC: load.Get, Concurrency: 2, Requests: 50, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 50 || res.ByNode["n1"] != 50 {
		t.Errorf("after the refusal: ok=%d failed=%d by_node=%v, want 50 calls answered by n1", res.OK, res.Failed, res.ByNode)
	}
}
