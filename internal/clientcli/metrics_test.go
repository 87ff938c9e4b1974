package clientcli

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/devcluster"
	"github.com/routeguide-cluster/routeguide/internal/testutils"
	"github.com/routeguide-cluster/routeguide/internal/testutils/nodetest"
)

// startCluster starts an embedded etcd and nodes registered in it, all on
// free ports, until the test ends.
func startCluster(t *testing.T, nodes int) *devcluster.Cluster {
	t.Helper()
	template := nodetest.Config(t)
	template.DrainDelay = 0
	return nodetest.StartCluster(t, nodes, template)
}

// scrapeClient opens no connection that outlives a scrape, so that goleak
// sees none of its goroutines.
var scrapeClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}

// scrape reads every metric family that url serves.
func scrape(url string) (map[string]*dto.MetricFamily, error) {
	resp, err := scrapeClient.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(resp.Body)
}

// sum adds up the samples of the family called name whose labels include
// labels: counters and gauges by value, histograms by count.
func sum(families map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	var total float64
	for _, m := range families[name].GetMetric() {
		if !hasLabels(m, labels) {
			continue
		}
		switch {
		case m.Counter != nil:
			total += m.Counter.GetValue()
		case m.Gauge != nil:
			total += m.Gauge.GetValue()
		case m.Histogram != nil:
			total += float64(m.Histogram.GetSampleCount())
		}
	}
	return total
}

// seriesWith returns the series of metric name that carry labels and have counted something.
func seriesWith(all map[string]*dto.MetricFamily, name string, labels map[string]string) []*dto.Metric {
	var found []*dto.Metric
	for _, m := range all[name].GetMetric() {
		if hasLabels(m, labels) && m.GetCounter().GetValue() > 0 {
			found = append(found, m)
		}
	}
	return found
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	found := 0
	for _, l := range m.GetLabel() {
		if v, ok := want[l.GetName()]; ok {
			if v != l.GetValue() {
				return false
			}
			found++
		}
	}
	return found == len(want)
}

// waitForMetrics scrapes url until ready says the families are what the
// test waits for, and returns them; it fails the test when stopped closes or
// 20 seconds pass first.
func waitForMetrics(t *testing.T, url string, stopped <-chan struct{}, ready func(map[string]*dto.MetricFamily) error) map[string]*dto.MetricFamily {
	t.Helper()
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		families, err := scrape(url)
		if err == nil {
			if err = ready(families); err == nil {
				return families
			}
		}
		last = err
		select {
		case <-tick.C:
		case <-stopped:
			t.Fatalf("the command ended while the test waited for its metrics; last: %v", last)
		case <-deadline.C:
			t.Fatalf("metrics not there after 20s: %v", last)
		}
	}
}

// background runs the client until ctx ends, and returns the address of its
// metrics server once it listens, and a channel closed with out filled in
// once Main has returned.
func background(t *testing.T, ctx context.Context, stdin io.Reader, argv ...string) (metricsAddr string, out *outcome, done <-chan struct{}) {
	t.Helper()
	addrs := make(chan net.Addr, 1)
	finished := make(chan struct{})
	out = new(outcome)
	go func() {
		defer close(finished)
		var stdout, stderr strings.Builder
		out.code = Main(ctx, argv, IO{Stdin: stdin, Stdout: &stdout, Stderr: &stderr}, nil,
			withMetricsAddr(func(a net.Addr) { addrs <- a }))
		out.stdout, out.stderr = stdout.String(), stderr.String()
	}()
	select {
	case a := <-addrs:
		return a.String(), out, finished
	case <-finished:
		t.Fatalf("the client ended before it served metrics: exit %d, stderr %q", out.code, out.stderr)
		return "", nil, nil
	}
}

func TestLoadServesClientResolverAndPerNodeMetricsWhileItRuns(t *testing.T) {
	// The nodes start watching etcd in the background once they are ready,
	// so no moment after the start is free of their goroutines: the check
	// covers the whole cluster, once it has closed, and the client with it.
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) }) // after the cluster's Close
	cluster := startCluster(t, 2)
	var ids []string
	for _, n := range cluster.Nodes() {
		ids = append(ids, n.ID())
	}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	addr, out, done := background(t, ctx, nil,
		"--target", "etcd:///routeguide", "--etcd", cluster.EtcdURL(), "--metrics-listen", "127.0.0.1:0",
		"load", "--duration", "30s")
	url := "http://" + addr + "/metrics"
	getOK := map[string]string{"grpc_method": "GetFeature", "grpc_code": "OK"}
	families := waitForMetrics(t, url, done, func(f map[string]*dto.MetricFamily) error {
		if got := sum(f, "grpc_client_handled_total", getOK); got == 0 {
			return fmt.Errorf("grpc_client_handled_total %v: no GetFeature OK yet", getOK)
		}
		for _, id := range ids {
			if got := sum(f, "routeguide_client_calls_total", map[string]string{"node_id": id, "grpc_method": "GetFeature", "grpc_code": "OK"}); got == 0 {
				return fmt.Errorf("routeguide_client_calls_total: no GetFeature OK from node %s yet", id)
			}
		}
		service := map[string]string{"service": "routeguide"}
		if got := sum(f, "routeguide_resolver_endpoints", service); got != 2 {
			return fmt.Errorf("routeguide_resolver_endpoints %v = %v, want 2", service, got)
		}
		if got := sum(f, "routeguide_resolver_updates_total", service); got < 1 {
			return fmt.Errorf("routeguide_resolver_updates_total %v = %v, want at least 1", service, got)
		}
		target := map[string]string{"target": "etcd:///routeguide"}
		if got := sum(f, "routeguide_balancer_ready_endpoints", target); got != 2 {
			return fmt.Errorf("routeguide_balancer_ready_endpoints %v = %v, want 2", target, got)
		}
		if got := len(seriesWith(f, "routeguide_balancer_picks_total", target)); got != 2 {
			return fmt.Errorf("routeguide_balancer_picks_total has %d endpoints, want 2", got)
		}
		return nil
	})
	for _, name := range []string{"grpc_client_started_total", "grpc_client_msg_sent_total", "grpc_client_msg_received_total", "grpc_client_handling_seconds"} {
		if sum(families, name, map[string]string{"grpc_method": "GetFeature"}) == 0 {
			t.Errorf("%s has no GetFeature call", name)
		}
	}
	if families["go_goroutines"] == nil {
		t.Error("no go_goroutines: the Go collector is missing")
	}
	if got := sum(families, "routeguide_client_calls_total", map[string]string{"node_id": unknownNode}); got != 0 {
		t.Errorf("%v calls counted for no node, want 0", got)
	}

	cancel() // as SIGINT does
	<-done
	if out.code != ExitOK || !strings.Contains(out.stdout, "ok        ") || !strings.Contains(out.stderr, "interrupted") {
		t.Errorf("exit %d, stdout %q, stderr %q; want 0 and the summary of an interrupted run", out.code, out.stdout, out.stderr)
	}
	if _, err := scrape(url); err == nil {
		t.Error("metrics still served after the command returned")
	}
}

func TestChatServesMetricsUntilItsInputEnds(t *testing.T) {
	addr := nodetest.Start(t, "n1").Addr().String()
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	stdin, input := io.Pipe()
	metricsAddr, out, done := background(t, t.Context(), stdin, "--target", addr, "--metrics-listen", "127.0.0.1:0", "chat")
	if _, err := io.WriteString(input, "1 1 hello\n"); err != nil {
		t.Fatal(err)
	}
	chat := map[string]string{"grpc_method": "RouteChat"}
	waitForMetrics(t, "http://"+metricsAddr+"/metrics", done, func(f map[string]*dto.MetricFamily) error {
		if got := sum(f, "grpc_client_started_total", chat); got != 1 {
			return fmt.Errorf("grpc_client_started_total %v = %v, want 1", chat, got)
		}
		if got := sum(f, "grpc_client_msg_sent_total", chat); got != 1 {
			return fmt.Errorf("grpc_client_msg_sent_total %v = %v, want 1", chat, got)
		}
		return nil
	})
	input.Close()
	<-done
	if out.code != ExitOK {
		t.Errorf("exit %d, stderr %q", out.code, out.stderr)
	}
}

// callKey names one series of routeguide_client_calls_total.
type callKey struct{ node, method, code string }

func TestEachCallIsCountedOnceByTheNodeThatAnsweredItsMethodAndCode(t *testing.T) {
	addr, dead := nodetest.Start(t, "n1").Addr().String(), testutils.UnreachableAddr(t)
	m, err := newClientMetrics()
	if err != nil {
		t.Fatal(err)
	}
	live, down := dialWith(t, addr, m), dialWith(t, dead, m)
	ctx := t.Context()
	known := firstFeature(t, true).Location
	offTheGlobe := &pb.Point{Latitude: 1_000_000_000}
	around := &pb.Rectangle{Lo: &pb.Point{Latitude: 400000000, Longitude: -750000000}, Hi: &pb.Point{Latitude: 420000000, Longitude: -730000000}}

	calls := []struct {
		name string
		call func() error
		want callKey
	}{
		{"get", func() error {
			_, err := live.GetFeature(ctx, known)
			return err
		}, callKey{"n1", "GetFeature", "OK"}},
		{"get off the globe", func() error {
			_, err := live.GetFeature(ctx, offTheGlobe)
			return err
		}, callKey{"n1", "GetFeature", "InvalidArgument"}},
		{"list", func() error {
			return drain(live.ListFeatures(ctx, around))
		}, callKey{"n1", "ListFeatures", "OK"}},
		{"list without corners", func() error {
			return drain(live.ListFeatures(ctx, &pb.Rectangle{}))
		}, callKey{"n1", "ListFeatures", "InvalidArgument"}},
		{"record", func() error {
			return record(ctx, live, known, known)
		}, callKey{"n1", "RecordRoute", "OK"}},
		{"record off the globe", func() error {
			return record(ctx, live, known, offTheGlobe)
		}, callKey{"n1", "RecordRoute", "InvalidArgument"}},
		{"chat", func() error {
			stream, err := live.RouteChat(ctx)
			if err != nil {
				return err
			}
			if err := stream.Send(&pb.RouteNote{Location: known, Message: "hi"}); err != nil {
				return err
			}
			if err := stream.CloseSend(); err != nil {
				return err
			}
			return drain(stream, nil)
		}, callKey{"n1", "RouteChat", "OK"}},
		{"get from no node", func() error {
			_, err := down.GetFeature(ctx, known)
			return err
		}, callKey{unknownNode, "GetFeature", "Unavailable"}},
		{"list from no node", func() error {
			return drain(down.ListFeatures(ctx, around))
		}, callKey{unknownNode, "ListFeatures", "Unavailable"}},
	}
	want := map[callKey]float64{}
	for _, c := range calls {
		if err := c.call(); status.Code(err).String() != c.want.code {
			t.Fatalf("%s: %v, want %s", c.name, err, c.want.code)
		}
		want[c.want]++
	}

	families, err := m.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[callKey]float64{}
	var handled float64
	for _, f := range families {
		switch f.GetName() {
		case "routeguide_client_calls_total":
			for _, s := range f.GetMetric() {
				l := labels(s)
				got[callKey{l["node_id"], l["grpc_method"], l["grpc_code"]}] += s.GetCounter().GetValue()
			}
		case "grpc_client_handled_total":
			for _, s := range f.GetMetric() {
				handled += s.GetCounter().GetValue()
			}
		}
	}
	if !maps.Equal(got, want) {
		t.Errorf("routeguide_client_calls_total:\n got %v\nwant %v", sortedKeys(got), sortedKeys(want))
	}
	if handled != float64(len(calls)) {
		t.Errorf("grpc_client_handled_total adds up to %v, want %d, one per call", handled, len(calls))
	}
}

func dialWith(t *testing.T, target string, m *clientMetrics) pb.RouteGuideClient {
	t.Helper()
	conn, err := Dial(t.Context(), target, m.dialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewRouteGuideClient(conn)
}

// drain reads a stream to its end.
func drain[T any](stream interface{ Recv() (*T, error) }, err error) error {
	if err != nil {
		return err
	}
	for {
		if _, err := stream.Recv(); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
	}
}

// record sends a route of points and returns how the call ended.
func record(ctx context.Context, client pb.RouteGuideClient, points ...*pb.Point) error {
	stream, err := client.RecordRoute(ctx)
	if err != nil {
		return err
	}
	for _, p := range points {
		if stream.Send(p) != nil {
			break // CloseAndRecv says why
		}
	}
	_, err = stream.CloseAndRecv()
	return err
}

func labels(m *dto.Metric) map[string]string {
	l := map[string]string{}
	for _, p := range m.GetLabel() {
		l[p.GetName()] = p.GetValue()
	}
	return l
}

func sortedKeys(m map[callKey]float64) []string {
	var keys []string
	for k, v := range m {
		keys = append(keys, fmt.Sprintf("%s/%s/%s=%v", k.node, k.method, k.code, v))
	}
	slices.Sort(keys)
	return keys
}

func TestCountingAUnaryCallAllocatesNothing(t *testing.T) {
	if testutils.RaceEnabled {
		t.Skip("the race detector makes sync.Pool drop what it is given, so every call allocates")
	}
	c := newCallCounter()
	ctx := context.Background()
	invoker := func(context.Context, string, any, any, *grpc.ClientConn, ...grpc.CallOption) error { return nil }
	caller := []grpc.CallOption{grpc.WaitForReady(true)}
	allocs := testing.AllocsPerRun(1000, func() {
		if err := c.unary(ctx, "/routeguide.RouteGuide/GetFeature", nil, nil, nil, invoker, caller...); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("counting a unary call allocates %v times, want 0", allocs)
	}
}

func TestMetricsListenThatIsNoAddressExitsTwoWithOneLine(t *testing.T) {
	for _, value := range []string{"abc", "127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000", ":-1"} {
		for _, via := range []string{"flag", "env"} {
			t.Run(value+" by "+via, func(t *testing.T) {
				inv := invocation{args: []string{"--target", "127.0.0.1:1", "load", "--requests", "1"}}
				if via == "flag" {
					inv.args = append([]string{"--metrics-listen", value}, inv.args...)
				} else {
					inv.env = map[string]string{"ROUTEGUIDE_METRICS_LISTEN": value}
				}
				out := run(t, inv)
				want := fmt.Sprintf("client: --metrics-listen: %q is not a host:port address\n", value)
				if out.code != ExitUsage || out.stderr != want || out.stdout != "" {
					t.Errorf("exit %d, stdout %q, stderr %q; want %d and %q", out.code, out.stdout, out.stderr, ExitUsage, want)
				}
			})
		}
	}
}

func TestMetricsListenOnAPortInUseExitsOneNamingTheAddress(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	addr := taken.Addr().String()
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, argv := range [][]string{{"load", "--requests", "1"}, {"chat"}} {
		t.Run(argv[0], func(t *testing.T) {
			// A dead target: had load dialled, it would print a summary of failures.
			out := run(t, invocation{args: append([]string{"--target", testutils.UnreachableAddr(t), "--metrics-listen", addr}, argv...), stdin: "1 1 hello\n"})
			prefix := "client " + argv[0] + ": listen for metrics: "
			if out.code != ExitFailed || strings.Count(out.stderr, "\n") != 1 || !strings.HasPrefix(out.stderr, prefix) || !strings.Contains(out.stderr, addr) {
				t.Errorf("exit %d, stderr %q; want %d and one line starting %q and naming %s", out.code, out.stderr, ExitFailed, prefix, addr)
			}
			if out.stdout != "" {
				t.Errorf("stdout %q; want nothing, as no call was made", out.stdout)
			}
		})
	}
}

func TestOneShotCommandsIgnoreMetricsListen(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	addr := nodetest.Start(t, "n1").Addr().String()
	named := firstFeature(t, true)
	for _, argv := range [][]string{append([]string{"get"}, degrees(named.Location)...), {"list", "40", "-75", "42", "-73"}, {"record", "3"}, {"tour"}} {
		t.Run(argv[0], func(t *testing.T) {
			out := run(t, invocation{args: append([]string{"--target", addr, "--metrics-listen", taken.Addr().String()}, argv...)})
			if out.code != ExitOK {
				t.Errorf("exit %d, stderr %q; want 0: the port in use is not theirs to listen on", out.code, out.stderr)
			}
		})
	}
}

// hangsOnce answers GetFeature, but holds the first call until its caller
// gives up on it, as a node that froze for a moment would.
type hangsOnce struct {
	pb.UnimplementedRouteGuideServer
	calls atomic.Int32
}

func (s *hangsOnce) GetFeature(ctx context.Context, p *pb.Point) (*pb.Feature, error) {
	if s.calls.Add(1) == 1 {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return &pb.Feature{Location: p}, nil
}

// TestACallMadeAgainAfterATimedOutAttemptCountsOnce guards where the call
// metrics sit: outside package balancer's attempt timeout, so that the
// attempt it gives up on and makes again is not counted as a failed call.
func TestACallMadeAgainAfterATimedOutAttemptCountsOnce(t *testing.T) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := grpc.NewServer()
	hanging := &hangsOnce{}
	pb.RegisterRouteGuideServer(server, hanging)
	go server.Serve(listener)
	t.Cleanup(server.Stop)
	m, err := newClientMetrics()
	if err != nil {
		t.Fatal(err)
	}
	client := dialWith(t, listener.Addr().String(), m)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := client.GetFeature(ctx, &pb.Point{}); err != nil {
		t.Fatalf("GetFeature: %v; want the second attempt's answer", err)
	}
	if got := hanging.calls.Load(); got < 2 {
		t.Fatalf("the server saw %d attempt, want more: the test proves nothing", got)
	}
	gathered, err := m.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	families := map[string]*dto.MetricFamily{}
	for _, f := range gathered {
		families[f.GetName()] = f
	}
	for _, name := range []string{"grpc_client_started_total", "grpc_client_handled_total", "routeguide_client_calls_total"} {
		if got := sum(families, name, nil); got != 1 {
			t.Errorf("%s adds up to %v, want 1", name, got)
		}
	}
	if got := sum(families, "grpc_client_handled_total", map[string]string{"grpc_code": "OK"}); got != 1 {
		t.Errorf("grpc_client_handled_total{grpc_code=OK} = %v, want 1", got)
	}
}
