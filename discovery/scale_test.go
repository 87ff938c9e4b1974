package discovery

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"

	"github.com/routeguide-cluster/routeguide/internal/localetcd"
	"github.com/routeguide-cluster/routeguide/internal/testutils"
	"github.com/routeguide-cluster/routeguide/internal/testutils/etcdtest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/poll"
)

// scaleEndpoints is the registry size of docs/BENCHMARKS.md's scale figures.
const scaleEndpoints = 10_000

// lastState is the gRPC side of a resolver at scale: it keeps only the
// latest state, and tells a waiter when the state holds a given number of
// endpoints.
type lastState struct {
	mu      sync.Mutex
	updates int
	count   int
	at      time.Time
	changed chan struct{} // closed and replaced on every update
}

func newLastState() *lastState { return &lastState{changed: make(chan struct{})} }

func (s *lastState) UpdateState(st resolver.State) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.updates++
	s.count = len(st.Endpoints)
	s.at = time.Now()
	close(s.changed)
	s.changed = make(chan struct{})
	return nil
}

func (s *lastState) ReportError(error)                                    {}
func (s *lastState) NewAddress([]resolver.Address)                        {}
func (s *lastState) ParseServiceConfig(string) *serviceconfig.ParseResult { return nil }

// waitCount waits until the state holds n endpoints and returns when it
// was handed over, and how many updates there have been in all.
func (s *lastState) waitCount(t testing.TB, n int) (time.Time, int) {
	t.Helper()
	timer := time.NewTimer(time.Minute)
	defer timer.Stop()
	for {
		s.mu.Lock()
		count, at, updates, changed := s.count, s.at, s.updates, s.changed
		s.mu.Unlock()
		if count == n && updates > 0 {
			return at, updates
		}
		select {
		case <-changed:
		case <-timer.C:
			t.Fatalf("resolver state holds %d endpoints after a minute, want %d", count, n)
		}
	}
}

// registerMany writes n endpoints of service under one lease, in
// transactions of etcd's default maximum of 128 operations, as n nodes
// would register one by one but faster.
func registerMany(t testing.TB, ctx context.Context, cli *clientv3.Client, service string, n int) clientv3.LeaseID {
	t.Helper()
	lease, err := cli.Grant(ctx, 600)
	if err != nil {
		t.Fatal(err)
	}
	var ops []clientv3.Op
	flush := func() {
		if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
		ops = ops[:0]
	}
	for i := range n {
		key, value := scaleEntry(t, service, i)
		ops = append(ops, clientv3.OpPut(key, value, clientv3.WithLease(lease.ID)))
		if len(ops) == 128 {
			flush()
		}
	}
	if len(ops) > 0 {
		flush()
	}
	return lease.ID
}

// scaleEntry is the key and value of endpoint i, shaped as a node writes
// them: 10.x.y.z:50051 and full metadata.
func scaleEntry(t testing.TB, service string, i int) (string, string) {
	t.Helper()
	id := fmt.Sprintf("node-%05d", i)
	addr := fmt.Sprintf("10.%d.%d.%d:50051", i>>16&255, i>>8&255, i&255)
	value, err := EncodeEndpoint(addr, Metadata{NodeID: id, MetricsAddr: strings.Replace(addr, ":50051", ":9090", 1), Version: "v1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	return Prefix(service) + id, value
}

// scaleRun is a resolver built over a registry of scaleEndpoints.
type scaleRun struct {
	cli      *clientv3.Client
	service  string
	state    *lastState
	heap     uint64 // what the resolver holds, in bytes
	resolver resolver.Resolver
	lease    clientv3.LeaseID // the endpoints' lease
}

func startScaleRun(t testing.TB, cli *clientv3.Client, service string) *scaleRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lease := registerMany(t, ctx, cli, service, scaleEndpoints)
	r := &scaleRun{cli: cli, service: service, state: newLastState(), lease: lease}
	before := testutils.HeapAfterGC().HeapInuse
	target, err := url.Parse("etcd:///" + service)
	if err != nil {
		t.Fatal(err)
	}
	res, err := NewBuilder(cli).Build(resolver.Target{URL: *target}, r.state, resolver.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r.resolver = res
	t.Cleanup(res.Close)
	r.state.waitCount(t, scaleEndpoints)
	if after := testutils.HeapAfterGC().HeapInuse; after > before {
		r.heap = after - before
	}
	return r
}

// change adds endpoint number i, or removes it again when remove is set,
// and returns how long the resolver took to hand on the new state, and how
// many states it handed on meanwhile.
func (r *scaleRun) change(t testing.TB, i int, remove bool) (time.Duration, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	key, value := scaleEntry(t, r.service, i)
	want := scaleEndpoints + 1
	if remove {
		want = scaleEndpoints
	}
	r.state.mu.Lock()
	updatesBefore := r.state.updates
	r.state.mu.Unlock()
	start := time.Now()
	var err error
	if remove {
		_, err = r.cli.Delete(ctx, key)
	} else {
		_, err = r.cli.Put(ctx, key, value, clientv3.WithLease(r.lease))
	}
	if err != nil {
		t.Fatal(err)
	}
	at, updates := r.state.waitCount(t, want)
	return at.Sub(start), updates - updatesBefore
}

// percentile is the nearest-rank percentile p (0-100) of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(float64(len(sorted))*p/100+0.999999) - 1
	return sorted[min(max(rank, 0), len(sorted)-1)]
}

// maxResolverHeap is the bound docs/BENCHMARKS.md sets on the client's
// memory with 10,000 endpoints registered.
const maxResolverHeap = 50 << 20

// TestResolverFollowsTenThousandEndpoints is the scale figure's guard,
// without wall-clock bounds: with 10,000 endpoints registered, the resolver
// hands on all of them, holds at most 50 MB of heap, and hands on exactly
// one new state for each add or removal. The time each change took to reach
// the state is logged (BenchmarkResolverScale measures it).
func TestResolverFollowsTenThousandEndpoints(t *testing.T) {
	etcd := etcdtest.Start(t)
	cli := newClient(t, etcd.ClientURL())
	run := startScaleRun(t, cli, "scale")
	t.Logf("resolver heap with %d endpoints: %.1f MB", scaleEndpoints, float64(run.heap)/(1<<20))
	if run.heap > maxResolverHeap {
		t.Errorf("resolver holds %.1f MB of heap with %d endpoints, want at most %d MB", float64(run.heap)/(1<<20), scaleEndpoints, maxResolverHeap>>20)
	}
	var took []time.Duration
	for i := range 10 {
		d, updates := run.change(t, scaleEndpoints, i%2 == 1)
		if updates != 1 {
			t.Errorf("change %d: %d states handed on, want 1", i, updates)
		}
		took = append(took, d)
	}
	slices.Sort(took)
	t.Logf("add or removal to resolver state, %d changes: p50 %v, max %v", len(took), percentile(took, 50), took[len(took)-1])
}

// BenchmarkResolverScale measures, with 10,000 endpoints registered in an
// embedded etcd, how long one add or removal takes to reach the resolver's
// state (each op is one change, adds and removals in turn), and the heap the
// resolver holds:
//
//	go test -run '^$' -bench ResolverScale -benchtime 100x ./discovery/
func BenchmarkResolverScale(b *testing.B) {
	etcd, err := localetcd.Start(localetcd.Config{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(etcd.Close)
	cli, err := NewEtcdClient(EtcdConfig{Endpoints: []string{etcd.ClientURL()}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cli.Close() })
	run := startScaleRun(b, cli, "scale")
	var took []time.Duration
	cpuBefore := testutils.ProcessCPUTime(b)
	for i := 0; b.Loop(); i++ {
		d, _ := run.change(b, scaleEndpoints, i%2 == 1)
		took = append(took, d)
	}
	b.ReportMetric(float64(testutils.ProcessCPUTime(b)-cpuBefore)/float64(b.N)/1e6, "cpu-ms/change")
	slices.Sort(took)
	b.ReportMetric(float64(percentile(took, 50))/1e6, "p50-ms")
	b.ReportMetric(float64(percentile(took, 99))/1e6, "p99-ms")
	b.ReportMetric(float64(run.heap)/(1<<20), "heap-MB")
}

// etcdRequests reads, from the embedded etcd's gRPC server metrics in this
// process's default Prometheus registry, how many messages etcd has received
// for method (LeaseKeepAlive, Range, ...).
func etcdRequests(t *testing.T, method string) float64 {
	t.Helper()
	return etcdtest.MetricSum(t, "grpc_server_msg_received_total", "grpc_method", method)
}

// TestANodeCostsEtcdOneKeepalivePerThirdOfTheTTL counts what a registered
// node and a following resolver ask of etcd while nothing changes: one
// LeaseKeepAlive per keepalive the node hears back, and no Range (no
// polling). It measures over six keepalives, counted by the registrar's
// events rather than timed, and logs the interval (TTL/3 expected).
func TestANodeCostsEtcdOneKeepalivePerThirdOfTheTTL(t *testing.T) {
	etcd := etcdtest.Start(t)
	cli := newClient(t, etcd.ClientURL())
	events := &counters{}
	reg := registration(cli, "n1", "10.0.0.1:50051")
	reg.TTL = 3 * time.Second
	reg.Events = events
	r := startRegistrar(t, reg)
	waitRegistered(t, r)
	state := newLastState()
	target, _ := url.Parse("etcd:///routeguide")
	res, err := NewBuilder(cli).Build(resolver.Target{URL: *target}, state, resolver.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(res.Close)
	state.waitCount(t, 1)
	// The window opens at a keepalive and closes six keepalives later.
	first := events.get(&events.keptAlive)
	poll.Until(t, 10*time.Second, "a keepalive", func() bool { return events.get(&events.keptAlive) > first })
	opened, keepalives, ranges := time.Now(), etcdRequests(t, "LeaseKeepAlive"), etcdRequests(t, "Range")
	start := events.get(&events.keptAlive)
	const window = 6
	poll.Until(t, 30*time.Second, "six keepalives", func() bool { return events.get(&events.keptAlive) >= start+window })
	elapsed := time.Since(opened)
	gotKeepalives := etcdRequests(t, "LeaseKeepAlive") - keepalives
	gotRanges := etcdRequests(t, "Range") - ranges
	t.Logf("over %v: %v LeaseKeepAlive and %v Range requests at etcd; one keepalive every %v (TTL/3 = %v)",
		elapsed.Round(time.Millisecond), gotKeepalives, gotRanges, (elapsed / window).Round(time.Millisecond), reg.TTL/3)
	if gotKeepalives < window || gotKeepalives > window+1 {
		t.Errorf("etcd received %v keepalives for %d answered, want one each", gotKeepalives, window)
	}
	if gotRanges != 0 {
		t.Errorf("etcd received %v Range requests while nothing changed, want 0 (no polling)", gotRanges)
	}
}
