package clustertest

// The fault suite: each scenario runs under concurrent load, counts the calls
// that failed and asserts the count, and checks that nothing is left running.
// Each logs one line for the reliability table of docs/OPERATIONS.md:
//
//	FAULT scenario=<name> rpc=<rpcs> calls=<n> failed=<n> detect=<duration> <more key=value>
//
// go test -race -count=1 -run TestFault -v ./internal/clustertest/ | grep FAULT

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	promclient "github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"

	"github.com/routeguide-cluster/routeguide/balancer"
	"github.com/routeguide-cluster/routeguide/discovery"
	"github.com/routeguide-cluster/routeguide/internal/clientcli"
	"github.com/routeguide-cluster/routeguide/internal/load"
	"github.com/routeguide-cluster/routeguide/internal/node"
	"github.com/routeguide-cluster/routeguide/internal/testutils"
	"github.com/routeguide-cluster/routeguide/internal/testutils/etcdtest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/faultproxy"
	"github.com/routeguide-cluster/routeguide/internal/testutils/loadtest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/nodetest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/poll"
)

// checkNothingLeftBehind checks, after every other cleanup of the test, that
// nothing the test started still runs, and that the live heap is about what
// it was: maxHeapLeft, and what the returned allowance adds. Call it first.
func checkNothingLeftBehind(t *testing.T) *heapAllowance {
	t.Helper()
	before := goleak.IgnoreCurrent()
	heapBefore := testutils.HeapAfterGC().HeapAlloc
	allowed := &heapAllowance{bytes: maxHeapLeft}
	t.Cleanup(func() {
		goleak.VerifyNone(t, before)
		// What the scenario's parts left live once they are all closed:
		// the first etcd in the process leaves its package state (a few
		// MiB, 6.3 MiB measured for three members); a call that left
		// anything behind would add up over the tens of thousands made.
		if grown := int64(testutils.HeapAfterGC().HeapAlloc) - int64(heapBefore); grown > allowed.bytes {
			t.Errorf("the live heap grew by %d KiB over the scenario, more than %d KiB", grown>>10, allowed.bytes>>10)
		}
	})
	return allowed
}

// heapAllowance is what a scenario may leave on the heap. Closed parts stay
// reachable through the test's cleanup functions until the test ends: a
// scenario that gives its nodes a large features file allows for it.
type heapAllowance struct{ bytes int64 }

func (a *heapAllowance) allow(bytes int64) { a.bytes += bytes }

// maxHeapLeft bounds the heap a fault scenario may leave behind.
const maxHeapLeft = 16 << 20

// faultLoad is several load runs at once over one connection, one per RPC,
// until stopped. Every call has a 5s deadline.
type faultLoad struct {
	rpcs []load.RPC
	runs []*loadtest.Run
}

type loadSpec struct {
	rpc         load.RPC
	concurrency int
}

func startLoads(t *testing.T, conn grpc.ClientConnInterface, specs ...loadSpec) *faultLoad {
	t.Helper()
	l := &faultLoad{}
	for _, s := range specs {
		l.rpcs = append(l.rpcs, s.rpc)
		l.runs = append(l.runs, loadtest.Start(t, conn, load.Config{RPC: s.rpc, Concurrency: s.concurrency, Duration: 5 * time.Minute, Timeout: 5 * time.Second}))
	}
	return l
}

// stop stops every run and returns their results, by RPC.
func (l *faultLoad) stop(t *testing.T) map[load.RPC]load.Result {
	t.Helper()
	results := map[load.RPC]load.Result{}
	for i, r := range l.runs {
		results[l.rpcs[i]] = r.Stop(t)
	}
	return results
}

// tally is the calls and failures of the results for rpcs.
func tally(results map[load.RPC]load.Result, rpcs ...load.RPC) (calls, failed int, errs map[string]int) {
	errs = map[string]int{}
	for _, rpc := range rpcs {
		r := results[rpc]
		calls += r.OK + r.Failed
		failed += r.Failed
		for code, n := range r.Errors {
			errs[code] += n
		}
	}
	return calls, failed, errs
}

// checkNoneFailed fails t if any call of rpcs failed, and logs the FAULT line.
func checkNoneFailed(t *testing.T, scenario string, results map[load.RPC]load.Result, detect time.Duration, more string, rpcs ...load.RPC) {
	t.Helper()
	calls, failed, errs := tally(results, rpcs...)
	if failed != 0 {
		t.Errorf("%d of %d calls (%v) failed: %v", failed, calls, rpcs, errs)
	}
	if calls == 0 {
		t.Errorf("no call of %v finished", rpcs)
	}
	logFault(t, scenario, results, detect, more, rpcs...)
}

func logFault(t *testing.T, scenario string, results map[load.RPC]load.Result, detect time.Duration, more string, rpcs ...load.RPC) {
	t.Helper()
	calls, failed, errs := tally(results, rpcs...)
	names := make([]string, len(rpcs))
	for i, rpc := range rpcs {
		names[i] = string(rpc)
	}
	detectText := "-"
	if detect > 0 {
		detectText = detect.Round(time.Millisecond).String()
	}
	line := fmt.Sprintf("FAULT scenario=%s rpc=%s calls=%d failed=%d detect=%s", scenario, strings.Join(names, "+"), calls, failed, detectText)
	if failed > 0 {
		line += fmt.Sprintf(" errors=%v", errs)
	}
	if more != "" {
		line += " " + more
	}
	t.Log(line)
}

// startOwnNode runs a node the test makes itself, for configurations
// devcluster does not make (an advertised address that is a proxy, several
// etcd endpoints): it creates it from cfg, calls beforeRun with it (nil for
// nothing), runs it until the test ends, and returns once it is serving and
// registered.
func startOwnNode(t *testing.T, cfg node.Config, beforeRun func(*node.Node)) *node.Node {
	t.Helper()
	n, err := node.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if beforeRun != nil {
		beforeRun(n)
	}
	testutils.Run(t, "node "+cfg.NodeID, n)
	return n
}

// picks reads the balancer's metrics of one client connection.
type picks struct{ reg *promclient.Registry }

func newPicks(t *testing.T) (*picks, clientcli.DialOption) {
	t.Helper()
	reg := promclient.NewRegistry()
	m, err := balancer.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	return &picks{reg: reg}, clientcli.WithBalancerMetrics(m)
}

// ready is how many endpoints the connection's round robin picks from.
func (p *picks) ready(t *testing.T) float64 {
	return p.value(t, "routeguide_balancer_ready_endpoints", "")
}

// of is how many calls the round robin picked addr for.
func (p *picks) of(t *testing.T, addr string) float64 {
	return p.value(t, "routeguide_balancer_picks_total", addr)
}

// tracked reports whether the round robin still has a subchannel for addr:
// the series of an endpoint goes with its subchannel.
func (p *picks) tracked(t *testing.T, addr string) bool {
	_, ok := p.lookup(t, "routeguide_balancer_picks_total", addr)
	return ok
}

func (p *picks) value(t *testing.T, name, addr string) float64 {
	v, _ := p.lookup(t, name, addr)
	return v
}

func (p *picks) lookup(t *testing.T, name, addr string) (float64, bool) {
	t.Helper()
	families, err := p.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if addr != "" && !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool {
				return l.GetName() == "addr" && l.GetValue() == addr
			}) {
				continue
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue(), true
			}
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// registered lists the nodes in the registry as node id -> address.
func registered(t *testing.T, cli *clientv3.Client, service string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, discovery.Prefix(service), clientv3.WithPrefix())
	if err != nil {
		return nil
	}
	nodes := map[string]string{}
	for _, kv := range resp.Kvs {
		if ep, err := discovery.DecodeEndpoint(string(kv.Key), kv.Value); err == nil {
			nodes[strings.TrimPrefix(string(kv.Key), discovery.Prefix(service))] = ep.Addr
		}
	}
	return nodes
}

// TestFaultNodeSilentWithoutReset cuts the path from the client to one node
// of three without a reset, as a partition or a pulled cable does: the node
// stays registered (its path to etcd is fine, the worst case), and nothing
// tells the client. Every call picked for it gets no answer.
//
// GetFeature and ListFeatures are idempotent: each attempt that has no
// answer within balancer.DefaultAttemptTimeout is made again on another node,
// so none fails. The client's keepalive gives the connection up after
// ClientKeepalive.Time+Timeout (13s), and from then on the node is never
// picked: that is the detection bound, asserted with 3s of margin for a busy
// machine. RecordRoute changes state and is never made twice, so a route sent
// to the silent node before detection fails: those failures are counted,
// logged and bounded.
func TestFaultNodeSilentWithoutReset(t *testing.T) {
	checkNothingLeftBehind(t)
	template := nodetest.Config(t)
	cluster := nodetest.StartCluster(t, 2, template)

	proxy, err := faultproxy.Start("")
	if err != nil {
		t.Fatal(err)
	}
	cfg := template
	cfg.NodeID = "silent"
	cfg.Advertise = proxy.Addr()
	cfg.Etcd = []string{cluster.EtcdURL()}
	silent := startOwnNode(t, cfg, func(n *node.Node) { proxy.SetTarget(n.Addr().String()) })
	// Cleanups run last first: the proxy closes before the node drains, or
	// the drain would wait on the silent connections.
	t.Cleanup(proxy.Close)

	p, withPicks := newPicks(t)
	conn, err := clientcli.Dial(t.Context(), target, clientcli.WithEtcdConfig(discovery.EtcdConfig{Endpoints: []string{cluster.EtcdURL()}}), withPicks)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	waitAllAnswer(t, conn, append(ids(cluster.Nodes()), silent.ID())...)

	calls := loadtest.NewLog(conn)
	loads := startLoads(t, calls, loadSpec{load.Get, 6}, loadSpec{load.List, 2}, loadSpec{load.Record, 2})
	// Behind its proxy the node is slower than the others, and the policy
	// gives it fewer calls than a third.
	poll.Until(t, 30*time.Second, "the silent node to answer 30 calls", func() bool {
		return calls.Count(silent.ID(), time.Time{}, time.Time{}) >= 30
	})

	silenced := time.Now()
	proxy.Blackhole()
	bound := balancer.ClientKeepalive.Time + balancer.ClientKeepalive.Timeout + 3*time.Second
	poll.Until(t, bound, "the client to drop the silent node from its round robin", func() bool { return p.ready(t) == 2 })
	detect := time.Since(silenced)

	// Picks already under way when the picker changed may still count: take
	// the figure once calls have gone on for a while.
	detected := time.Now()
	poll.Until(t, 10*time.Second, "200 calls after detection", func() bool { return calls.Count("", detected, time.Time{}) >= 200 })
	picksAfter := p.of(t, proxy.Addr())
	poll.Until(t, 10*time.Second, "500 more calls", func() bool { return calls.Count("", detected, time.Time{}) >= 700 })
	results := loads.stop(t)

	if n := p.of(t, proxy.Addr()) - picksAfter; n != 0 {
		t.Errorf("the silent node was picked %v times after the client dropped it", n)
	}
	checkNoneFailed(t, "node-silent-no-reset", results, detect,
		fmt.Sprintf("detect_of=silenced-to-dropped bound=%v attempt_timeout=%v", bound-3*time.Second, balancer.DefaultAttemptTimeout), load.Get, load.List)
	// A route picked for the silent node fails at its deadline, or with
	// Unavailable when keepalive closes the connection under it; each of
	// the two workers loses at most one route per deadline until then.
	record := results[load.Record]
	for code := range record.Errors {
		if code != "DeadlineExceeded" && code != "Unavailable" {
			t.Errorf("RecordRoute failed with %s: %v; want DeadlineExceeded or Unavailable only", code, record.Errors)
		}
	}
	if most := 2 * int(detect/(5*time.Second)+1); record.Failed > most {
		t.Errorf("%d RecordRoute calls failed, want at most %d: one per worker per 5s deadline until detection", record.Failed, most)
	}
	logFault(t, "node-silent-no-reset", results, detect, "note=not-idempotent:fails-if-picked-before-detection", load.Record)
}

// TestFaultEtcdDownLongerThanTheLease stops etcd until every node has seen
// its lease lost, under load: the nodes serve on and the clients keep the
// nodes they know, so no call fails. When etcd returns, every node is
// registered again, and the client follows the registry again: a node that
// starts then gets calls. (TestRegisteredFollowsEtcdAwayAndBack checks one
// node's metrics through the same outage, without load.) RouteChat is left
// out: with notes kept in etcd, it is meant to answer Unavailable while etcd
// is down.
func TestFaultEtcdDownLongerThanTheLease(t *testing.T) {
	checkNothingLeftBehind(t)
	template := nodetest.Config(t)
	template.LeaseTTL = 2 * time.Second
	cluster := nodetest.StartCluster(t, 3, template)
	conn := dial(t, cluster)
	nodes := cluster.Nodes()
	waitAllAnswer(t, conn, ids(nodes)...)
	calls := loadtest.NewLog(conn)
	loads := startLoads(t, calls, loadSpec{load.Get, 4}, loadSpec{load.List, 2}, loadSpec{load.Record, 2})

	down := time.Now()
	cluster.Etcd().Close()
	poll.Until(t, 15*time.Second, "every node to see its lease lost", func() bool {
		return !slices.ContainsFunc(nodes, (*node.Node).Registered)
	})
	outage := time.Since(down)
	served := calls.Count("", down, time.Time{})

	restarted := time.Now()
	if err := cluster.RestartEtcd(); err != nil {
		t.Fatal(err)
	}
	cli := etcdtest.Client(t, cluster.EtcdURL())
	want := map[string]string{}
	for _, n := range nodes {
		want[n.ID()] = n.AdvertisedAddr()
	}
	poll.Until(t, 15*time.Second, "every node registered again", func() bool {
		got := registered(t, cli, template.Service)
		return len(got) == len(want) && !slices.ContainsFunc(nodes, func(n *node.Node) bool { return got[n.ID()] != n.AdvertisedAddr() })
	})
	back := time.Since(restarted)

	cfg := template
	cfg.NodeID = "after-etcd"
	joined := time.Now()
	if _, err := cluster.StartNode(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 15*time.Second, "the client to pick the node that joined after etcd returned", func() bool {
		return !calls.First(cfg.NodeID).IsZero()
	})
	picked := calls.First(cfg.NodeID).Sub(joined)
	results := loads.stop(t)

	if served == 0 {
		t.Errorf("no call answered while etcd was down")
	}
	checkNoneFailed(t, "etcd-down-past-lease-ttl", results, back,
		fmt.Sprintf("detect_of=restart-to-all-registered outage=%v ttl=%v served_during_outage=%d new_node_picked=%v", outage.Round(time.Millisecond), template.LeaseTTL, served, picked.Round(time.Millisecond)),
		load.Get, load.List, load.Record)
}

// TestFaultClientCutOffEtcdWhileRegistryChanges cuts a client off etcd
// (connections reset, new ones refused), and meanwhile drains node A, starts
// node B and compacts etcd, so the client's watch cannot resume where it
// stopped. When the client reaches etcd again its resolver lists again: it
// picks B, and never A.
//
// No call fails: A drains, and a draining node turns NOT_SERVING over its own
// connection with the client, which the client's health check sees without
// etcd, and finishes the calls it has. So A leaves the client's round robin
// while the client still lists it, and once A has stopped its address refuses
// connections, which the round robin never picks.
func TestFaultClientCutOffEtcdWhileRegistryChanges(t *testing.T) {
	checkNothingLeftBehind(t)
	template := nodetest.Config(t)
	cluster := nodetest.StartCluster(t, 3, template)
	proxy, err := faultproxy.Start(cluster.Etcd().ClientAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	p, withPicks := newPicks(t)
	conn, err := clientcli.Dial(t.Context(), target, clientcli.WithEtcdConfig(discovery.EtcdConfig{Endpoints: []string{"http://" + proxy.Addr()}}), withPicks)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	a := cluster.Nodes()[0]
	waitAllAnswer(t, conn, ids(cluster.Nodes())...)
	calls := loadtest.NewLog(conn)
	loads := startLoads(t, calls, loadSpec{load.Get, 4}, loadSpec{load.Mix, 4})

	proxy.Cut()
	if err := cluster.StopNode(a); err != nil {
		t.Fatalf("drain A: %v", err)
	}
	aStopped := time.Now()
	aPicks := p.of(t, a.AdvertisedAddr())
	cfg := template
	cfg.NodeID = "B"
	b, err := cluster.StartNode(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	cli := etcdtest.Client(t, cluster.EtcdURL())
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "compact")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatalf("compact: %v", err)
	}

	// A's subchannel, and with it its series, goes once the client hears
	// of A's removal: count A's picks while the client still lists it.
	aPicksCutOff := p.of(t, a.AdvertisedAddr()) - aPicks
	restored := time.Now()
	proxy.Restore()
	poll.Until(t, 15*time.Second, "the client to pick B", func() bool { return !calls.First(b.ID()).IsZero() })
	detect := calls.First(b.ID()).Sub(restored)
	poll.Until(t, 5*time.Second, "the round robin over the three nodes left", func() bool { return p.ready(t) == 3 })
	poll.Until(t, 10*time.Second, "300 calls after B joined", func() bool { return calls.Count("", calls.First(b.ID()), time.Time{}) >= 300 })
	results := loads.stop(t)

	if n := calls.Count(a.ID(), aStopped, time.Time{}); n != 0 {
		t.Errorf("A answered %d calls after it stopped", n)
	}
	if aPicksCutOff != 0 {
		t.Errorf("A was picked %v times after it stopped, while the client was cut off etcd", aPicksCutOff)
	}
	if p.tracked(t, a.AdvertisedAddr()) {
		if n := p.of(t, a.AdvertisedAddr()) - aPicks; n != 0 {
			t.Errorf("A was picked %v times after it stopped", n)
		}
	}
	if results[load.Get].ByNode[b.ID()] == 0 {
		t.Errorf("B answered no GetFeature: by_node %v", results[load.Get].ByNode)
	}
	checkNoneFailed(t, "client-cut-off-etcd-registry-changed-compacted", results, detect, "detect_of=restore-to-first-call-on-new-node", load.Get, load.Mix)
}

// TestFaultEtcdMemberLost runs the nodes and the client on a three-member
// etcd, every one of them with all three endpoints, and loses the leader
// under load as a crash would (connections reset, no leadership handed
// over). The data plane does not notice: no call fails. Every node keeps its
// registration, with its lease kept alive through another member, or
// registered again; and a node that starts after the loss registers, and the
// client picks it.
func TestFaultEtcdMemberLost(t *testing.T) {
	checkNothingLeftBehind(t)
	etcd, err := etcdtest.StartCluster(etcdtest.ClusterConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Close)
	template := metricsTemplate(t)
	template.Etcd = etcd.ClientURLs()
	var nodes []*node.Node
	for i := range 3 {
		cfg := template
		cfg.NodeID = fmt.Sprintf("n%d", i+1)
		nodes = append(nodes, startOwnNode(t, cfg, nil))
	}
	conn, err := clientcli.Dial(t.Context(), target, clientcli.WithEtcdConfig(discovery.EtcdConfig{Endpoints: etcd.ClientURLs()}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	var nodeIDs []string
	for _, n := range nodes {
		nodeIDs = append(nodeIDs, n.ID())
	}
	waitAllAnswer(t, conn, nodeIDs...)
	calls := loadtest.NewLog(conn)
	loads := startLoads(t, calls, loadSpec{load.Get, 4}, loadSpec{load.List, 2}, loadSpec{load.Record, 2})
	var leader *etcdtest.Member
	poll.Until(t, 10*time.Second, "an etcd leader", func() bool { leader = etcd.Leader(); return leader != nil })
	before := map[string]registration{}
	for _, n := range nodes {
		before[n.ID()] = registrationOf(t, n.MetricsAddr())
	}

	lost := time.Now()
	leader.Lose()
	var elected time.Duration
	poll.Until(t, 10*time.Second, "a new etcd leader", func() bool {
		if etcd.Leader() == nil {
			return false
		}
		elected = time.Since(lost)
		return true
	})
	// Every node has had its lease kept alive, or been registered again,
	// since the loss.
	poll.Until(t, 3*template.LeaseTTL, "every node registered, with a keepalive answered after the loss", func() bool {
		for _, n := range nodes {
			if r := registrationOf(t, n.MetricsAddr()); r.registered != 1 || !r.lastKeepAlive.After(lost) {
				return false
			}
		}
		return true
	})
	kept, again := 0, 0
	for _, n := range nodes {
		if registrationOf(t, n.MetricsAddr()).registrations == before[n.ID()].registrations {
			kept++
		} else {
			again++
		}
	}

	cfg := template
	cfg.NodeID = "after-loss"
	joined := time.Now()
	late := startOwnNode(t, cfg, nil)
	poll.Until(t, 10*time.Second, "the client to pick the node that joined after the loss", func() bool {
		return !calls.First(late.ID()).IsZero()
	})
	picked := calls.First(late.ID()).Sub(joined)
	cli := etcd.Client(t)
	if got := registered(t, cli, template.Service); len(got) != 4 {
		t.Errorf("registry after the loss: %v, want the 4 nodes", got)
	}
	results := loads.stop(t)
	checkNoneFailed(t, "etcd-leader-lost-1-of-3", results, elected,
		fmt.Sprintf("detect_of=new-leader leases_kept=%d reregistered=%d new_node_picked=%v", kept, again, picked.Round(time.Millisecond)),
		load.Get, load.List, load.Record)
}

// TestFaultRollingRestart replaces every node of three, one after another,
// under load: each is drained, and a new one started and seen answering
// before the next is drained. No call of any kind fails.
func TestFaultRollingRestart(t *testing.T) {
	checkNothingLeftBehind(t)
	template := nodetest.Config(t)
	cluster := nodetest.StartCluster(t, 3, template)
	conn := dial(t, cluster)
	old := cluster.Nodes()
	waitAllAnswer(t, conn, ids(old)...)
	calls := loadtest.NewLog(conn)
	loads := startLoads(t, calls, loadSpec{load.Get, 4}, loadSpec{load.Mix, 4})

	var slowest time.Duration
	stopped := map[string]time.Time{}
	var replacements []string
	for i, n := range old {
		if err := cluster.StopNode(n); err != nil {
			t.Fatalf("drain %s: %v", n.ID(), err)
		}
		stopped[n.ID()] = time.Now()
		cfg := template
		cfg.NodeID = fmt.Sprintf("new-%d", i+1)
		start := time.Now()
		if _, err := cluster.StartNode(t.Context(), cfg); err != nil {
			t.Fatal(err)
		}
		poll.Until(t, 10*time.Second, cfg.NodeID+" to answer", func() bool { return !calls.First(cfg.NodeID).IsZero() })
		slowest = max(slowest, calls.First(cfg.NodeID).Sub(start))
		replacements = append(replacements, cfg.NodeID)
	}
	end := time.Now()
	poll.Until(t, 10*time.Second, "300 calls after the last restart", func() bool { return calls.Count("", end, time.Time{}) >= 300 })
	results := loads.stop(t)

	for id, at := range stopped {
		if n := calls.Count(id, at, time.Time{}); n != 0 {
			t.Errorf("%s answered %d calls after it stopped", id, n)
		}
	}
	for _, id := range replacements {
		if calls.Count(id, end, time.Time{}) == 0 {
			t.Errorf("%s answered no call after the restarts", id)
		}
	}
	checkNoneFailed(t, "rolling-restart-3-nodes", results, slowest, "detect_of=slowest-start-to-first-call", load.Get, load.Mix)
}
