package benchpeers_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"

	"github.com/routeguide-cluster/routeguide/balancer"
	"github.com/routeguide-cluster/routeguide/discovery"
	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/clientcli"
	"github.com/routeguide-cluster/routeguide/internal/localetcd"
	"github.com/routeguide-cluster/routeguide/internal/testutils/etcdtest"
)

var (
	grayScenarios = flag.String("gray.scenarios", "a,b,c,d", "gray-failure scenarios to run, comma-separated")
	grayClients   = flag.String("gray.clients", "ours,ours-before,go-zero", "clients to run each scenario with")
	grayWarm      = flag.Duration("gray.warm", 3*time.Second, "load on the healthy cluster before the fault")
	grayFault     = flag.Duration("gray.fault", 14*time.Second, "how long the fault lasts, under load")
	grayAfter     = flag.Duration("gray.after", 6*time.Second, "load after the fault ends")
)

// grayScenario is one node of three gone gray: up, registered and SERVING,
// but slow or failing.
type grayScenario struct {
	key, name string
	// faultFlags start the faulty node with a fault it switches on and off
	// through its stdin (package grayfault); nil when start does it all.
	faultFlags []string
	// start brings the fault on to p, from outside the process; its
	// result takes it off. Nil when faultFlags do it.
	start func(tb testing.TB, p *nodeProcess) (stop func())
}

var scenarios = []grayScenario{
	{key: "a", name: "paused 80 ms of every 100 ms (SIGSTOP/SIGCONT)", start: dutyCycledStop},
	{key: "b", name: "every call 50 ms late", faultFlags: []string{"--fault-delay", "50ms"}},
	{key: "c", name: "30% of calls fail UNAVAILABLE", faultFlags: []string{"--fault-fail-percent", "30"}},
	{key: "d", name: "CPU quota of 5% of a core (cgroup v1 cpu.cfs_quota_us)", start: cpuStarved},
}

// grayClient is a client under test: ours with today's default policy,
// ours with the round robin we had before the load-aware policy (selected
// by its name in the service config), and go-zero's.
type grayClient struct {
	name string
	fw   framework
}

var grayClientList = []grayClient{
	{name: "ours-before", fw: framework{name: "ours", prefix: frameworks[0].prefix, command: oursCommand, dial: dialOursRoundRobin}},
	{name: "ours", fw: frameworks[0]},
	{name: "go-zero", fw: frameworks[1]},
}

// dialOursRoundRobin is our client with today's service config (health
// checks, retries, attempt timeouts) but gRPC's round_robin for a policy,
// which our round robin before the load-aware policy was, plus a clearer
// error when no node is registered.
func dialOursRoundRobin(tb testing.TB, url string) *grpc.ClientConn {
	tb.Helper()
	var sc map[string]any
	if err := json.Unmarshal([]byte(balancer.ServiceConfig), &sc); err != nil {
		tb.Fatal(err)
	}
	sc["loadBalancingConfig"] = []any{map[string]any{"round_robin": map[string]any{}}}
	config, err := json.Marshal(sc)
	if err != nil {
		tb.Fatal(err)
	}
	conn, err := clientcli.Dial(context.Background(), "etcd:///routeguide", clientcli.WithEtcdConfig(discovery.EtcdConfig{Endpoints: []string{url}}),
		clientcli.WithGRPCOptions(grpc.WithDefaultServiceConfig(string(config))))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn.ClientConn
}

// TestGrayFailures runs each scenario against each client, a fresh cluster
// of three nodes each time, with 16 callers of GetFeature (closed loop, 5s
// deadline): the fault comes on after -gray.warm, lasts -gray.fault, and
// the load runs on for -gray.after. It prints the table of
// docs/BENCHMARKS.md's "Gray failures" and asserts the targets on ours:
// in (a) the slow node gets at most 10% of the calls and no call fails;
// in (c) the node's share falls to nothing within 10 s and no call fails.
// Set ROUTEGUIDE_GRAY=1 to run it; CI runs a short form.
func TestGrayFailures(t *testing.T) {
	if os.Getenv("ROUTEGUIDE_GRAY") == "" {
		t.Skip("a measurement of a minute and more: set ROUTEGUIDE_GRAY=1 (see docs/BENCHMARKS.md, Gray failures)")
	}
	etcd := etcdtest.Start(t)
	kv := etcdtest.Client(t, etcd.ClientURL())
	var runs []grayRun
	for _, sc := range scenarios {
		if !slices.Contains(strings.Split(*grayScenarios, ","), sc.key) {
			continue
		}
		for _, client := range grayClientList {
			if !slices.Contains(strings.Split(*grayClients, ","), client.name) {
				continue
			}
			t.Run(sc.key+"/"+client.name, func(t *testing.T) {
				r := runGray(t, sc, client, etcd, kv)
				runs = append(runs, r)
				if client.name == "ours" {
					r.checkTargets(t)
				}
			})
		}
	}
	printGrayTable(os.Stdout, runs)
}

// callRecord is one call: when it started (since the load began), how
// long it took, which node answered (-1: none known) and whether it failed.
type callRecord struct {
	at, took time.Duration
	node     int
	failed   bool
}

// grayRun is what one client saw in one scenario.
type grayRun struct {
	scenario grayScenario
	client   string
	faulty   int // the index of the gray node
	calls    []callRecord
	faultOn  time.Duration // since the load began
	faultOff time.Duration
}

func runGray(t *testing.T, sc grayScenario, client grayClient, etcd *localetcd.Server, kv *clientv3.Client) grayRun {
	fw := client.fw
	const faulty = nodesPerCluster - 1
	if sc.faultFlags != nil {
		fw.command = faultyCommand(fw, faulty+1, sc.faultFlags)
	}
	c := startCluster(t, fw, etcd, kv)
	r := grayRun{scenario: sc, client: client.name, faulty: faulty}
	byAddr := map[string]int{}
	for i, n := range c.nodes {
		byAddr[n.addr] = i
	}
	gray := c.nodes[faulty]

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	var mu sync.Mutex
	var wg sync.WaitGroup
	client1 := pb.NewRouteGuideClient(c.conn)
	for w := range callers {
		wg.Go(func() {
			var local []callRecord
			for i := 0; ctx.Err() == nil; i++ {
				callCtx, cancelCall := context.WithTimeout(ctx, 5*time.Second)
				var p peer.Peer
				began := time.Now()
				_, err := client1.GetFeature(callCtx, &pb.Point{Latitude: int32(409146138 + w), Longitude: int32(-746188906 + i%1000)}, grpc.Peer(&p))
				cancelCall()
				if ctx.Err() != nil {
					break // cut by the end of the run, not by the cluster
				}
				rec := callRecord{at: began.Sub(start), took: time.Since(began), node: -1, failed: err != nil}
				if p.Addr != nil {
					if i, ok := byAddr[p.Addr.String()]; ok {
						rec.node = i
					}
				}
				local = append(local, rec)
			}
			mu.Lock()
			r.calls = append(r.calls, local...)
			mu.Unlock()
		})
	}
	// The schedule of the experiment: these waits are what is measured,
	// not a stand-in for readiness.
	time.Sleep(*grayWarm)
	r.faultOn = time.Since(start)
	var stop func()
	if sc.start != nil {
		stop = sc.start(t, gray)
	} else {
		fmt.Fprintln(gray.stdin, "on")
		stop = func() { fmt.Fprintln(gray.stdin, "off") }
	}
	time.Sleep(*grayFault)
	stop()
	r.faultOff = time.Since(start)
	time.Sleep(*grayAfter)
	cancel()
	wg.Wait()
	slices.SortFunc(r.calls, func(a, b callRecord) int { return int(a.at - b.at) })
	for _, n := range c.nodes {
		n.failIfExited(t)
	}
	return r
}

// faultyCommand starts node i (from 1) as fw's faulty node: our node as
// cmd/faultynode, go-zero's with its fault flags; its stdin switches the
// fault (see nodeProcess.stdin).
func faultyCommand(fw framework, i int, flags []string) func(tb testing.TB, url string, n int, addr string) *exec.Cmd {
	return func(tb testing.TB, url string, n int, addr string) *exec.Cmd {
		cmd := fw.command(tb, url, n, addr)
		if n != i {
			return cmd
		}
		switch fw.name {
		case "ours":
			cmd.Path = binaries.faulty
			cmd.Args[0] = binaries.faulty
		case "go-zero":
		default:
			tb.Fatalf("no faulty node for %s", fw.name)
		}
		cmd.Args = append(cmd.Args, append([]string{"--fault-switched"}, flags...)...)
		return cmd
	}
}

// dutyCycledStop pauses p 80 ms of every 100 ms, as a starved host or a GC
// storm would, until stop; it leaves p running.
func dutyCycledStop(tb testing.TB, p *nodeProcess) (stop func()) {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		defer p.cmd.Process.Signal(syscall.SIGCONT)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			p.cmd.Process.Signal(syscall.SIGSTOP)
			select {
			case <-done:
				return
			case <-time.After(80 * time.Millisecond):
			}
			p.cmd.Process.Signal(syscall.SIGCONT)
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	return func() { close(done); <-stopped }
}

// cpuCgroupRoot is where this machine mounts cgroup v1's cpu controller.
const cpuCgroupRoot = "/sys/fs/cgroup/cpu"

// cpuStarved moves p into a cgroup of its own with a CPU quota of 5 ms
// every 100 ms, and back out at stop. Where the cpu controller of cgroup
// v1 cannot be written (no root, cgroup v2 only), the test skips and
// says so.
func cpuStarved(tb testing.TB, p *nodeProcess) (stop func()) {
	dir := filepath.Join(cpuCgroupRoot, fmt.Sprintf("routeguide-gray-%d", p.cmd.Process.Pid))
	write := func(file, value string) error {
		return os.WriteFile(filepath.Join(dir, file), []byte(value), 0o644)
	}
	err := os.Mkdir(dir, 0o755)
	if err == nil {
		err = errors.Join(write("cpu.cfs_period_us", "100000"), write("cpu.cfs_quota_us", "5000"))
		if err == nil {
			err = write("cgroup.procs", strconv.Itoa(p.cmd.Process.Pid))
		}
		if err != nil {
			os.Remove(dir)
		}
	}
	if err != nil {
		tb.Skipf("this machine does not let the test limit a process's CPU with cgroup v1 (%s): %v", cpuCgroupRoot, err)
	}
	return func() {
		if err := os.WriteFile(filepath.Join(cpuCgroupRoot, "cgroup.procs"), []byte(strconv.Itoa(p.cmd.Process.Pid)), 0o644); err != nil {
			tb.Errorf("move %s out of its cgroup: %v", p.name, err)
		}
		if err := os.Remove(dir); err != nil {
			tb.Errorf("remove cgroup %s: %v", dir, err)
		}
	}
}

// window is the calls of r that began in [from, to).
func (r grayRun) window(from, to time.Duration) []callRecord {
	lo, _ := slices.BinarySearchFunc(r.calls, from, func(c callRecord, t time.Duration) int { return int(c.at - t) })
	hi, _ := slices.BinarySearchFunc(r.calls, to, func(c callRecord, t time.Duration) int { return int(c.at - t) })
	return r.calls[lo:hi]
}

// grayBucket is the width of the windows in which react and recover are
// seen.
const grayBucket = 250 * time.Millisecond

// shareOf is the share of calls in cs that node answered.
func shareOf(cs []callRecord, node int) float64 {
	if len(cs) == 0 {
		return 0
	}
	n := 0
	for _, c := range cs {
		if c.node == node {
			n++
		}
	}
	return float64(n) / float64(len(cs))
}

// firstBucket is the time from from to the start of the first bucket, up
// to to, whose calls satisfy ok; -1 when none does.
func (r grayRun) firstBucket(from, to time.Duration, ok func([]callRecord) bool) time.Duration {
	for at := from; at+grayBucket <= to; at += grayBucket {
		if cs := r.window(at, at+grayBucket); len(cs) > 0 && ok(cs) {
			return at - from
		}
	}
	return -1
}

// reacted is how long after the fault came on the gray node's share first
// fell to 10% or less, in a bucket; shed to 0 (ejected, or every call
// avoided) is reported too.
func (r grayRun) reacted() (tenPercent, zero time.Duration) {
	tenPercent = r.firstBucket(r.faultOn, r.faultOff, func(cs []callRecord) bool { return shareOf(cs, r.faulty) <= 0.10 })
	zero = r.firstBucket(r.faultOn, r.faultOff, func(cs []callRecord) bool { return shareOf(cs, r.faulty) == 0 })
	return tenPercent, zero
}

// recovered is how long after the fault went off the gray node's share
// was back at 25% (a fair share is 33%).
func (r grayRun) recovered() time.Duration {
	return r.firstBucket(r.faultOff, r.calls[len(r.calls)-1].at, func(cs []callRecord) bool { return shareOf(cs, r.faulty) >= 0.25 })
}

// latencies are the p50, p99 and p99.9 of the calls that succeeded in cs.
func latencies(cs []callRecord) (p50, p99, p999 time.Duration) {
	var took []time.Duration
	for _, c := range cs {
		if !c.failed {
			took = append(took, c.took)
		}
	}
	if len(took) == 0 {
		return 0, 0, 0
	}
	slices.Sort(took)
	at := func(q float64) time.Duration { return took[min(len(took)-1, int(q*float64(len(took))))] }
	return at(0.50), at(0.99), at(0.999)
}

func failedIn(cs []callRecord) int {
	n := 0
	for _, c := range cs {
		if c.failed {
			n++
		}
	}
	return n
}

// checkTargets asserts the targets on ours.
func (r grayRun) checkTargets(t *testing.T) {
	t.Helper()
	fault := r.window(r.faultOn, r.faultOff)
	if failed := failedIn(r.calls); failed != 0 {
		t.Errorf("scenario %s: %d of %d calls failed; want 0", r.scenario.key, failed, len(r.calls))
	}
	switch r.scenario.key {
	case "a":
		if share := shareOf(fault, r.faulty); share > 0.10 {
			t.Errorf("scenario a: the paused node had %.1f%% of the calls while paused; want at most 10%%", 100*share)
		}
	case "c":
		if _, zero := r.reacted(); zero < 0 || zero > 10*time.Second {
			t.Errorf("scenario c: the failing node still had calls %v after its failures began (%v); want none within 10s", min(r.faultOff-r.faultOn, 10*time.Second), zero)
		}
	}
}

// printGrayTable writes a row per run: latency and shares while the fault
// lasts, failed calls over the whole run, and react and recover times.
func printGrayTable(w io.Writer, runs []grayRun) {
	fmt.Fprintf(w, "\nGray failures: GetFeature, %d callers, 3 nodes, node 3 gray; warm %v, fault %v, after %v; load average %s\n", callers, *grayWarm, *grayFault, *grayAfter, loadAverage())
	fmt.Fprintln(w, "| scenario | client | healthy p99 | p50 | p99 | p99.9 | shares (node 3 gray) | failed / calls | react to ≤10% | to 0 | recover to ≥25% |")
	fmt.Fprintln(w, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
	for _, r := range runs {
		healthy := r.window(0, r.faultOn)
		fault := r.window(r.faultOn, r.faultOff)
		_, hp99, _ := latencies(healthy)
		p50, p99, p999 := latencies(fault)
		var shares []string
		for i := range nodesPerCluster {
			shares = append(shares, fmt.Sprintf("%.1f%%", 100*shareOf(fault, i)))
		}
		ten, zero := r.reacted()
		fmt.Fprintf(w, "| %s | %s | %v | %v | %v | %v | %s | %d / %d | %s | %s | %s |\n", r.scenario.key, r.client,
			round(hp99), round(p50), round(p99), round(p999), strings.Join(shares, " "), failedIn(r.calls), len(r.calls),
			orNever(ten), orNever(zero), orNever(r.recovered()))
	}
	for _, sc := range scenarios {
		fmt.Fprintf(w, "(%s) %s\n", sc.key, sc.name)
	}
}

func round(d time.Duration) time.Duration {
	if d > 10*time.Millisecond {
		return d.Round(100 * time.Microsecond)
	}
	return d.Round(10 * time.Microsecond)
}

func orNever(d time.Duration) string {
	if d < 0 {
		return "never"
	}
	return d.Round(10 * time.Millisecond).String()
}
