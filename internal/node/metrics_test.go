package node

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/testutils/grpctest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/poll"
	"github.com/routeguide-cluster/routeguide/routeguide/features"
	channelzpb "google.golang.org/grpc/channelz/grpc_channelz_v1"
)

// httpClient reads the metrics listener. Without keep-alive it leaves no
// connection, and so no goroutine, behind a request.
var httpClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}

// startMetricsNode is startNode with the metrics listener on a free port.
func startMetricsNode(t *testing.T, configure func(*Config)) *testNode {
	t.Helper()
	return startNode(t, func(c *Config) {
		c.MetricsListen = "127.0.0.1:0"
		if configure != nil {
			configure(c)
		}
	}, nil)
}

// get fetches path from the metrics listener at addr and returns the status
// code and the body.
func get(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read the body: %v", path, err)
	}
	return resp.StatusCode, string(body)
}

// scrape fetches /metrics from addr as Prometheus does, asking for the text
// format, and parses it.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s", resp.Status)
	}
	if format := expfmt.ResponseFormat(resp.Header); format.FormatType() != expfmt.TypeTextPlain {
		t.Fatalf("scrape: asked for the text format, got Content-Type %q", resp.Header.Get("Content-Type"))
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("scrape: parse: %v", err)
	}
	return families
}

// value is the value of the series of name whose labels include labels,
// summed if several match: a counter's or gauge's value, a histogram's
// sample count. It is NaN when no series matches.
func value(families map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	family, ok := families[name]
	if !ok {
		return math.NaN()
	}
	sum, found := 0.0, false
	for _, m := range family.GetMetric() {
		if !hasLabels(m, labels) {
			continue
		}
		found = true
		switch family.GetType() {
		case dto.MetricType_COUNTER:
			sum += m.GetCounter().GetValue()
		case dto.MetricType_GAUGE:
			sum += m.GetGauge().GetValue()
		case dto.MetricType_HISTOGRAM:
			sum += float64(m.GetHistogram().GetSampleCount())
		default:
			sum += m.GetUntyped().GetValue()
		}
	}
	if !found {
		return math.NaN()
	}
	return sum
}

// histogramSum is the sum of the observations of the one histogram series
// of name whose labels include labels; NaN when there is none.
func histogramSum(families map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	for _, m := range families[name].GetMetric() {
		if hasLabels(m, labels) {
			return m.GetHistogram().GetSampleSum()
		}
	}
	return math.NaN()
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	have := make(map[string]string, len(m.GetLabel()))
	for _, l := range m.GetLabel() {
		have[l.GetName()] = l.GetValue()
	}
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// rpc are the labels of a RouteGuide method.
func rpc(method string) map[string]string {
	return map[string]string{"grpc_service": "routeguide.RouteGuide", "grpc_method": method}
}

// rpcCode are the labels of a RouteGuide method and a status code.
func rpcCode(method string, code codes.Code) map[string]string {
	labels := rpc(method)
	labels["grpc_code"] = code.String()
	return labels
}

// everywhere is a rectangle around the whole globe.
var everywhere = &pb.Rectangle{Lo: &pb.Point{Latitude: -9e8, Longitude: -18e8}, Hi: &pb.Point{Latitude: 9e8, Longitude: 18e8}}

// knownPoint is the location of a feature of the built-in data set.
func knownPoint(t testing.TB) *pb.Point {
	t.Helper()
	for f := range features.Default().Within(features.RectBetween(everywhere.Lo, everywhere.Hi)) {
		if f.GetName() != "" {
			return f.GetLocation()
		}
	}
	t.Fatal("the built-in data set has no named feature")
	return nil
}

func TestEveryGRPCSeriesExistsAtZeroBeforeAnyCall(t *testing.T) {
	tn := startMetricsNode(t, nil)
	families := scrape(t, tn.MetricsAddr())

	if got := families["grpc_server_handling_seconds"].GetType(); got != dto.MetricType_HISTOGRAM {
		t.Errorf("grpc_server_handling_seconds is a %v, want a HISTOGRAM", got)
	}
	methods := map[string]string{
		"GetFeature":   "unary",
		"ListFeatures": "server_stream",
		"RecordRoute":  "client_stream",
		"RouteChat":    "bidi_stream",
	}
	// The service's descriptor is the list to check against, so a method
	// added to the proto is checked too.
	var names []string
	for _, m := range pb.RouteGuide_ServiceDesc.Methods {
		names = append(names, m.MethodName)
	}
	for _, s := range pb.RouteGuide_ServiceDesc.Streams {
		names = append(names, s.StreamName)
	}
	for _, method := range names {
		labels := rpc(method)
		labels["grpc_type"] = methods[method]
		for _, name := range []string{"grpc_server_started_total", "grpc_server_msg_received_total", "grpc_server_msg_sent_total", "grpc_server_handling_seconds"} {
			if got := value(families, name, labels); got != 0 {
				t.Errorf("%s%v = %v, want 0", name, labels, got)
			}
		}
		for code := codes.OK; code <= codes.Unauthenticated; code++ {
			labels := rpcCode(method, code)
			if got := value(families, "grpc_server_handled_total", labels); got != 0 {
				t.Errorf("grpc_server_handled_total%v = %v, want 0", labels, got)
			}
		}
	}
}

func TestGRPCMetricsCountCallsByCode(t *testing.T) {
	tn := startMetricsNode(t, nil)
	client := tn.client()
	point := knownPoint(t)
	const ok, invalid = 5, 3
	for range ok {
		if _, err := client.GetFeature(grpctest.CallContext(t), point); err != nil {
			t.Fatal(err)
		}
	}
	for range invalid {
		if _, err := client.GetFeature(grpctest.CallContext(t), &pb.Point{Latitude: 1e9}); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("GetFeature off the globe: %v, want InvalidArgument", err)
		}
	}
	stream, err := client.ListFeatures(grpctest.CallContext(t), everywhere)
	if err != nil {
		t.Fatal(err)
	}
	listed := 0
	for {
		if _, err := stream.Recv(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		listed++
	}

	// The interceptor counts before the response leaves the server, so the
	// counts are final once the client has it.
	families := scrape(t, tn.MetricsAddr())
	tests := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"grpc_server_handled_total", rpcCode("GetFeature", codes.OK), ok},
		{"grpc_server_handled_total", rpcCode("GetFeature", codes.InvalidArgument), invalid},
		{"grpc_server_handled_total", rpcCode("GetFeature", codes.Internal), 0},
		{"grpc_server_started_total", rpc("GetFeature"), ok + invalid},
		{"grpc_server_handling_seconds", rpc("GetFeature"), ok + invalid},
		{"grpc_server_msg_received_total", rpc("GetFeature"), ok + invalid},
		{"grpc_server_msg_sent_total", rpc("GetFeature"), ok}, // no response to a failed call
		{"grpc_server_handled_total", rpcCode("ListFeatures", codes.OK), 1},
		{"grpc_server_msg_received_total", rpc("ListFeatures"), 1},
		{"grpc_server_msg_sent_total", rpc("ListFeatures"), float64(listed)},
		{"grpc_server_started_total", rpc("RecordRoute"), 0},
	}
	for _, tt := range tests {
		if got := value(families, tt.name, tt.labels); got != tt.want {
			t.Errorf("%s%v = %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}
	if listed != features.Default().Len() {
		t.Errorf("ListFeatures of the whole globe sent %d features, want all %d", listed, features.Default().Len())
	}
}

func TestServiceMetricsFollowTheCalls(t *testing.T) {
	const maxPoints = 3
	tn := startMetricsNode(t, func(c *Config) { c.Limits.RoutePoints = maxPoints })
	client := tn.client()
	families := scrape(t, tn.MetricsAddr())
	for _, name := range []string{"routeguide_route_points", "routeguide_route_distance_meters", "routeguide_notes_posted_total", "routeguide_notes_stored"} {
		if got := value(families, name, nil); got != 0 {
			t.Errorf("before any call, %s = %v, want 0", name, got)
		}
	}
	for _, limit := range []string{"route_points", "chat_notes", "stored_notes", "note_bytes"} {
		if got := value(families, "routeguide_limit_rejections_total", map[string]string{"limit": limit}); got != 0 {
			t.Errorf("before any call, routeguide_limit_rejections_total{limit=%q} = %v, want 0", limit, got)
		}
	}
	if got, want := value(families, "routeguide_features_loaded", nil), float64(features.Default().Len()); got != want {
		t.Errorf("routeguide_features_loaded = %v, want the %v features of the data set", got, want)
	}

	route := func(points int) (*pb.RouteSummary, error) {
		stream, err := client.RecordRoute(grpctest.CallContext(t))
		if err != nil {
			return nil, err
		}
		for i := range points {
			if err := stream.Send(&pb.Point{Latitude: int32(i) * 1e6, Longitude: int32(i) * 1e6}); err != nil {
				break // the server has answered; CloseAndRecv says how
			}
		}
		return stream.CloseAndRecv()
	}
	summary, err := route(maxPoints)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := route(maxPoints + 1); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a route of %d points over a limit of %d: %v, want ResourceExhausted", maxPoints+1, maxPoints, err)
	}
	const notes = 4
	if err := chat(grpctest.CallContext(t), client, notes); err != nil {
		t.Fatal(err)
	}

	families = scrape(t, tn.MetricsAddr())
	tests := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"routeguide_route_points", nil, 1}, // the rejected route is not recorded
		{"routeguide_route_distance_meters", nil, 1},
		{"routeguide_notes_posted_total", nil, notes},
		{"routeguide_notes_stored", nil, notes},
		{"routeguide_limit_rejections_total", map[string]string{"limit": "route_points"}, 1},
		{"routeguide_limit_rejections_total", map[string]string{"limit": "chat_notes"}, 0},
		{"grpc_server_handled_total", rpcCode("RecordRoute", codes.ResourceExhausted), 1},
		{"grpc_server_msg_received_total", rpc("RouteChat"), notes},
		{"grpc_server_msg_sent_total", rpc("RouteChat"), notes * (notes + 1) / 2}, // each note answered with all at its location
	}
	for _, tt := range tests {
		if got := value(families, tt.name, tt.labels); got != tt.want {
			t.Errorf("%s%v = %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}
	if got := histogramSum(families, "routeguide_route_points", nil); got != maxPoints {
		t.Errorf("routeguide_route_points sum = %v, want %d", got, maxPoints)
	}
	if got := histogramSum(families, "routeguide_route_distance_meters", nil); got != float64(summary.Distance) {
		t.Errorf("routeguide_route_distance_meters sum = %v, want the route's %d m", got, summary.Distance)
	}
}

func TestProcessAndGoMetricsAreExported(t *testing.T) {
	tn := startMetricsNode(t, nil)
	families := scrape(t, tn.MetricsAddr())
	for _, name := range []string{"go_goroutines", "go_memstats_alloc_bytes", "process_cpu_seconds_total", "process_resident_memory_bytes", "process_start_time_seconds"} {
		if _, ok := families[name]; !ok {
			t.Errorf("no %s in /metrics", name)
		}
	}
	if got := value(families, "go_goroutines", nil); !(got > 0) {
		t.Errorf("go_goroutines = %v, want > 0", got)
	}
	// A standalone node never registers.
	if got := value(families, "routeguide_registered", nil); got != 0 {
		t.Errorf("standalone, routeguide_registered = %v, want 0", got)
	}
}

func TestHealthzAndReadyzFollowTheNodeLifecycle(t *testing.T) {
	const drainDelay = 3 * time.Second
	tn := startMetricsNode(t, func(c *Config) { c.DrainDelay = drainDelay })
	addr := tn.MetricsAddr()
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := get(t, addr, path); code != http.StatusOK {
			t.Errorf("serving, GET %s = %d %q, want 200", path, code, body)
		}
	}

	start := time.Now()
	tn.stopOnce.Do(tn.cancel)
	poll.Until(t, 10*time.Second, "/readyz to answer 503", func() bool {
		code, _ := get(t, addr, "/readyz")
		return code == http.StatusServiceUnavailable
	})
	// Still within the drain delay: the listener answers, the process lives.
	if code, body := get(t, addr, "/healthz"); code != http.StatusOK {
		t.Errorf("draining, GET /healthz = %d %q, want 200", code, body)
	}
	select {
	case <-tn.done:
		t.Fatal("Run returned before the checks were done; the test proves nothing")
	default:
	}
	if elapsed := time.Since(start); elapsed >= drainDelay {
		t.Fatalf("the checks took %v, longer than the drain delay; the test proves nothing", elapsed)
	}
	if err := tn.stop(t); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}

func TestSDListsAStandaloneNodeItself(t *testing.T) {
	tn := startMetricsNode(t, nil)
	code, body := get(t, tn.MetricsAddr(), "/sd")
	want := fmt.Sprintf(`[{"targets":[%q],"labels":{"node_id":%q,"service":"routeguide"}}]`, tn.MetricsAddr(), testNodeID)
	if code != http.StatusOK || strings.TrimSpace(body) != want {
		t.Errorf("GET /sd = %d %s, want 200 %s", code, body, want)
	}
}

func TestMetricsOffMeansNoListener(t *testing.T) {
	tn := startNode(t, nil, nil) // MetricsListen is "" in every test node
	if addr := tn.MetricsAddr(); addr != "" {
		t.Errorf("MetricsAddr() = %q, want empty", addr)
	}
	if tn.metricsListener != nil || tn.httpServer != nil {
		t.Errorf("metrics listener %v, HTTP server %v; want neither", tn.metricsListener, tn.httpServer)
	}
	// And the node serves as well without them.
	if _, err := tn.client().GetFeature(grpctest.CallContext(t), knownPoint(t)); err != nil {
		t.Errorf("GetFeature: %v", err)
	}
}

func TestDebugEndpointsServePprofAndChannelzOnlyWhenAsked(t *testing.T) {
	for _, on := range []bool{false, true} {
		t.Run(fmt.Sprintf("debug-endpoints=%v", on), func(t *testing.T) {
			tn := startMetricsNode(t, func(c *Config) { c.DebugEndpoints = on })
			wantHTTP := map[bool]int{false: http.StatusNotFound, true: http.StatusOK}[on]
			if code, _ := get(t, tn.MetricsAddr(), "/debug/pprof/"); code != wantHTTP {
				t.Errorf("GET /debug/pprof/: %d, want %d", code, wantHTTP)
			}
			conn := dial(t, tn.MetricsAddr())
			defer conn.Close()
			servers, err := channelzpb.NewChannelzClient(conn).GetServers(grpctest.CallContext(t), &channelzpb.GetServersRequest{})
			if !on {
				if err == nil {
					t.Errorf("channelz answered with the debug endpoints off: %v", servers)
				}
				return
			}
			if err != nil {
				t.Fatalf("channelz GetServers: %v", err)
			}
			// The node's gRPC server is among them, listening where it serves.
			found := false
			for _, s := range servers.GetServer() {
				for _, socket := range s.GetListenSocket() {
					found = found || strings.HasSuffix(socket.GetName(), tn.Addr().String())
				}
			}
			if !found {
				t.Errorf("channelz lists no server listening on %s: %v", tn.Addr(), servers)
			}
		})
	}
}
