package clientcli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/routeguide-cluster/routeguide/balancer"
	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/load"
	"github.com/routeguide-cluster/routeguide/internal/testutils/nodetest"
	"github.com/routeguide-cluster/routeguide/routeguide/features"
)

// deadAddr is an address where nothing listens: a port that was just free.
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// invocation is one run of the client.
type invocation struct {
	args  []string
	env   map[string]string
	stdin string
	opts  []Option
	ctx   context.Context // nil: the test's
}

type outcome struct {
	code           int
	stdout, stderr string
}

func run(t *testing.T, inv invocation) outcome {
	t.Helper()
	ctx := inv.ctx
	if ctx == nil {
		ctx = t.Context()
	}
	var stdout, stderr bytes.Buffer
	lookup := func(name string) (string, bool) {
		v, ok := inv.env[name]
		return v, ok
	}
	code := Main(ctx, inv.args, IO{Stdin: strings.NewReader(inv.stdin), Stdout: &stdout, Stderr: &stderr}, lookup, inv.opts...)
	return outcome{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// args is the command line with --target addr in front.
func args(addr string, rest ...string) []string {
	return append([]string{"--target", addr}, rest...)
}

// jsonLines parses every line of out as one JSON value.
func jsonLines[T any](t *testing.T, out string) []T {
	t.Helper()
	var values []T
	scanner := bufio.NewScanner(strings.NewReader(out))
	for scanner.Scan() {
		var v T
		if err := json.Unmarshal(scanner.Bytes(), &v); err != nil {
			t.Fatalf("line %q is not JSON: %v", scanner.Text(), err)
		}
		values = append(values, v)
	}
	return values
}

// jsonObject parses out as exactly one JSON value.
func jsonObject[T any](t *testing.T, out string) T {
	t.Helper()
	values := jsonLines[T](t, out)
	if len(values) != 1 {
		t.Fatalf("want one JSON line, got %d in %q", len(values), out)
	}
	return values[0]
}

func degrees(p *pb.Point) []string {
	return []string{formatE7(p.Latitude), formatE7(p.Longitude)}
}

func firstFeature(t *testing.T, named bool) *pb.Feature {
	t.Helper()
	for _, f := range features.Default().All() {
		if (f.Name != "") == named {
			return f
		}
	}
	t.Fatalf("the default features have no feature with named=%v", named)
	return nil
}

func TestGetPrintsTheFeatureTheNodeHasAtThePoint(t *testing.T) {
	addr := nodetest.Start(t, "n1").Addr().String()
	named, unnamed := firstFeature(t, true), firstFeature(t, false)
	tests := []struct {
		name  string
		point *pb.Point
		want  featureJSON
		text  string
	}{
		{
			name:  "known feature",
			point: named.Location,
			want:  featureJSON{Name: named.Name, Location: toPointJSON(named.Location), Found: true, Node: "n1"},
			text:  named.Name + " " + formatPoint(named.Location) + " [node n1]\n",
		},
		{
			name:  "unnamed point",
			point: unnamed.Location,
			want:  featureJSON{Location: toPointJSON(unnamed.Location), Node: "n1"},
			text:  "no feature at " + formatPoint(unnamed.Location) + " [node n1]\n",
		},
		{
			name:  "nothing there",
			point: &pb.Point{Latitude: -1, Longitude: 1},
			want:  featureJSON{Location: pointJSON{Latitude: -1, Longitude: 1}, Node: "n1"},
			text:  "no feature at (-0.0000001, 0.0000001) [node n1]\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := run(t, invocation{args: args(addr, append([]string{"--json", "get"}, degrees(tt.point)...)...)})
			if out.code != ExitOK {
				t.Fatalf("exit %d, stderr %q", out.code, out.stderr)
			}
			if got := jsonObject[featureJSON](t, out.stdout); got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
			out = run(t, invocation{args: args(addr, append([]string{"get"}, degrees(tt.point)...)...)})
			if out.code != ExitOK || out.stdout != tt.text {
				t.Errorf("text: exit %d, stdout %q; want %q", out.code, out.stdout, tt.text)
			}
		})
	}
}

// scan is what ListFeatures must answer: every feature in the box, edges
// included, in file order, found by looking at each.
func scan(lo, hi *pb.Point) []featureJSON {
	minLat, maxLat := min(lo.Latitude, hi.Latitude), max(lo.Latitude, hi.Latitude)
	minLon, maxLon := min(lo.Longitude, hi.Longitude), max(lo.Longitude, hi.Longitude)
	want := []featureJSON{}
	for _, f := range features.Default().All() {
		l := f.Location
		if l.Latitude >= minLat && l.Latitude <= maxLat && l.Longitude >= minLon && l.Longitude <= maxLon {
			want = append(want, toFeatureJSON(f, "n1"))
		}
	}
	return want
}

func TestListPrintsWhatAScanOfTheFeaturesFinds(t *testing.T) {
	addr := nodetest.Start(t, "n1").Addr().String()
	named := firstFeature(t, true)
	tests := []struct {
		name   string
		lo, hi *pb.Point
	}{
		{"canonical rectangle", tourRectangle.Lo, tourRectangle.Hi},
		{"corners swapped", tourRectangle.Hi, tourRectangle.Lo},
		{"whole globe", &pb.Point{Latitude: -900000000, Longitude: -1800000000}, &pb.Point{Latitude: 900000000, Longitude: 1800000000}},
		{"one point, edges included", named.Location, named.Location},
		{"empty ocean", &pb.Point{Latitude: -10, Longitude: -10}, &pb.Point{Latitude: -1, Longitude: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := scan(tt.lo, tt.hi)
			out := run(t, invocation{args: args(addr, append(append([]string{"--json", "list"}, degrees(tt.lo)...), degrees(tt.hi)...)...)})
			if out.code != ExitOK {
				t.Fatalf("exit %d, stderr %q", out.code, out.stderr)
			}
			got := jsonLines[featureJSON](t, out.stdout)
			if len(got) != len(want) || !slices.Equal(got, want) {
				t.Errorf("got %d features, want %d; got %v", len(got), len(want), got)
			}

			out = run(t, invocation{args: args(addr, append(append([]string{"list"}, degrees(tt.lo)...), degrees(tt.hi)...)...)})
			lines := strings.Split(strings.TrimSuffix(out.stdout, "\n"), "\n")
			if out.code != ExitOK || len(lines) != len(want)+1 || !strings.HasSuffix(lines[len(lines)-1], " [node n1]") {
				t.Errorf("text: exit %d, stdout %q; want %d lines and a last one naming the node", out.code, out.stdout, len(want)+1)
			}
		})
	}
}

func TestRecordSummarisesTheRandomRouteOverKnownFeatures(t *testing.T) {
	addr := nodetest.Start(t, "n1").Addr().String()
	const seed, points = 7, 25
	route := randomRoute(rand.New(rand.NewPCG(seed, seed)), points)
	wantFeatures := 0
	for _, p := range route {
		wantFeatures += features.Default().CountAt(p.Latitude, p.Longitude)
	}
	out := run(t, invocation{args: args(addr, "--json", "record", "25"), opts: []Option{withSeed(seed)}})
	if out.code != ExitOK {
		t.Fatalf("exit %d, stderr %q", out.code, out.stderr)
	}
	got := jsonObject[summaryJSON](t, out.stdout)
	if got.PointCount != points || int(got.FeatureCount) != wantFeatures || got.Distance <= 0 || got.Node != "n1" {
		t.Errorf("got %+v; want %d points, %d features, some distance, node n1", got, points, wantFeatures)
	}

	out = run(t, invocation{args: args(addr, "record", "3")})
	if out.code != ExitOK || !strings.HasPrefix(out.stdout, "route of 3 points passed ") || !strings.HasSuffix(out.stdout, " [node n1]\n") {
		t.Errorf("text: exit %d, stdout %q", out.code, out.stdout)
	}
}

func TestChatEchoesNotesInPostingOrder(t *testing.T) {
	addr := nodetest.Start(t, "n1").Addr().String()
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	stdin := "40.9 -74.3 first note\n\n40.9 -74.3   second note  \n-33.8688 151.2093 far away\n"
	at := pointJSON{Latitude: 409000000, Longitude: -743000000}
	far := pointJSON{Latitude: -338688000, Longitude: 1512093000}
	want := []noteJSON{
		{Location: at, Message: "first note", Node: "n1"},
		{Location: at, Message: "first note", Node: "n1"},
		{Location: at, Message: "second note", Node: "n1"},
		{Location: far, Message: "far away", Node: "n1"},
	}
	out := run(t, invocation{args: args(addr, "--json", "chat"), stdin: stdin})
	if out.code != ExitOK {
		t.Fatalf("exit %d, stderr %q", out.code, out.stderr)
	}
	if got := jsonLines[noteJSON](t, out.stdout); !slices.Equal(got, want) {
		t.Errorf("got  %v\nwant %v", got, want)
	}

	// The node keeps the notes: a second chat at the same point sees them all.
	out = run(t, invocation{args: args(addr, "chat"), stdin: "40.9 -74.3 third note\n"})
	wantText := "(40.9, -74.3) first note\n(40.9, -74.3) second note\n(40.9, -74.3) third note\nreceived 3 notes [node n1]\n"
	if out.code != ExitOK || out.stdout != wantText {
		t.Errorf("text: exit %d, stdout %q, want %q", out.code, out.stdout, wantText)
	}
}

func TestChatStopsAtABadInputLine(t *testing.T) {
	addr := nodetest.Start(t, "n1").Addr().String()
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	out := run(t, invocation{args: args(addr, "chat"), stdin: "1 1 fine\n1 north oops\n2 2 never sent\n"})
	if out.code != ExitUsage || out.stderr != "client chat: stdin line 2: longitude \"north\" is not a number of degrees\n" {
		t.Errorf("exit %d, stderr %q", out.code, out.stderr)
	}
}

func TestTourCallsAllFourRPCsAsTheCanonicalClientDoes(t *testing.T) {
	addr := nodetest.Start(t, "n1").Addr().String()
	const seed = 11
	rng := rand.New(rand.NewPCG(seed, seed))
	routeLength := tourRouteLength(rng)
	out := run(t, invocation{args: args(addr, "--json", "tour"), opts: []Option{withSeed(seed)}})
	if out.code != ExitOK {
		t.Fatalf("exit %d, stderr %q", out.code, out.stderr)
	}
	got := jsonObject[tourJSON](t, out.stdout)

	var wantGet []featureJSON
	for _, p := range tourPoints() {
		f := features.Default().At(p.Latitude, p.Longitude)
		if f == nil {
			f = &pb.Feature{Location: p}
		}
		wantGet = append(wantGet, toFeatureJSON(f, "n1"))
	}
	if !slices.Equal(got.Get, wantGet) {
		t.Errorf("get: got %v, want %v", got.Get, wantGet)
	}
	if want := scan(tourRectangle.Lo, tourRectangle.Hi); !slices.Equal(got.List, want) {
		t.Errorf("list: got %d features, want %d", len(got.List), len(want))
	}
	if got.Record.PointCount != int32(routeLength) || got.Record.FeatureCount < got.Record.PointCount || got.Record.Node != "n1" {
		t.Errorf("record: got %+v, want %d points, each at a feature", got.Record, routeLength)
	}
	var wantChat []string
	for i, n := range tourNotes {
		for _, earlier := range tourNotes[:i+1] {
			if proto := earlier.Location; proto.Latitude == n.Location.Latitude && proto.Longitude == n.Location.Longitude {
				wantChat = append(wantChat, earlier.Message)
			}
		}
	}
	var gotChat []string
	for _, n := range got.Chat {
		gotChat = append(gotChat, n.Message)
	}
	if !slices.Equal(gotChat, wantChat) {
		t.Errorf("chat: got %q, want %q", gotChat, wantChat)
	}

	// And for people, on a fresh node so that the chat starts empty.
	out = run(t, invocation{args: args(nodetest.Start(t, "n2").Addr().String(), "tour")})
	for _, want := range []string{"== GetFeature: 5 calls at once\n", "== ListFeatures", "== RecordRoute", "== RouteChat of 6 notes\n", "received 9 notes [node n2]\n"} {
		if !strings.Contains(out.stdout, want) {
			t.Errorf("text: stdout lacks %q:\n%s", want, out.stdout)
		}
	}
	if out.code != ExitOK {
		t.Errorf("text: exit %d, stderr %q", out.code, out.stderr)
	}
}

// dialRoundRobin dials every address through gRPC's manual resolver with
// round robin, and returns once calls have reached every node, so that a
// test does not depend on how fast the connections come up.
func dialRoundRobin(addrs ...string) DialFunc {
	return func(ctx context.Context, _ string, _ []string, dialOpts ...DialOption) (*Conn, error) {
		r := manual.NewBuilderWithScheme("nodes")
		var state resolver.State
		for _, a := range addrs {
			state.Endpoints = append(state.Endpoints, resolver.Endpoint{Addresses: []resolver.Address{{Addr: a}}})
		}
		r.InitialState(state)
		opts, err := balancer.DialOptions()
		if err != nil {
			return nil, err
		}
		opts = append(opts, grpc.WithResolvers(r), grpc.WithTransportCredentials(insecure.NewCredentials()))
		opts = append(opts, newDialSettings(dialOpts).grpc...)
		conn, err := grpc.NewClient(r.Scheme()+":///routeguide", opts...)
		if err != nil {
			return nil, err
		}
		seen := map[string]bool{}
		for len(seen) < len(addrs) {
			var header metadata.MD
			if _, err := pb.NewRouteGuideClient(conn).GetFeature(ctx, &pb.Point{}, grpc.Header(&header), grpc.WaitForReady(true)); err != nil {
				conn.Close()
				return nil, err
			}
			seen[load.NodeOf(header, nil)] = true
		}
		return &Conn{ClientConn: conn}, nil
	}
}

func TestLoadMakesEveryRequestAndSplitsThemOverTheNodes(t *testing.T) {
	a, b := nodetest.Start(t, "n1").Addr().String(), nodetest.Start(t, "n2").Addr().String()
	for _, rpc := range []string{"get", "mix"} {
		t.Run(rpc, func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			out := run(t, invocation{
				args: []string{"--json", "load", "--rpc", rpc, "--concurrency", "4", "--requests", "200"},
				opts: []Option{WithDial(dialRoundRobin(a, b))},
			})
			if out.code != ExitOK {
				t.Fatalf("exit %d, stderr %q", out.code, out.stderr)
			}
			res := jsonObject[load.Result](t, out.stdout)
			if res.OK != 200 || res.Failed != 0 || len(res.Errors) != 0 {
				t.Errorf("ok %d, failed %d, errors %v; want 200 ok", res.OK, res.Failed, res.Errors)
			}
			if len(res.ByNode) != 2 || res.ByNode["n1"] == 0 || res.ByNode["n2"] == 0 || res.ByNode["n1"]+res.ByNode["n2"] != 200 {
				t.Errorf("by node %v; want 200 calls over n1 and n2", res.ByNode)
			}
			if res.QPS <= 0 || res.P50 <= 0 || res.P50 > res.P90 || res.P90 > res.P99 {
				t.Errorf("qps %v, p50 %v, p90 %v, p99 %v", res.QPS, res.P50, res.P90, res.P99)
			}
		})
	}
}

func TestLoadPrintsExactlyTheDocumentedJSONObject(t *testing.T) {
	addr := nodetest.Start(t, "n1").Addr().String()
	out := run(t, invocation{args: args(addr, "--json", "load", "--requests", "10")})
	var fields map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out.stdout), &fields); err != nil {
		t.Fatalf("stdout %q is not one JSON object: %v", out.stdout, err)
	}
	want := []string{"by_node", "errors", "failed", "late", "ok", "p50_ms", "p90_ms", "p999_ms", "p99_ms", "qps", "unsent"}
	if got := slices.Sorted(maps.Keys(fields)); !slices.Equal(got, want) {
		t.Errorf("keys %v, want %v", got, want)
	}
	if out.code != ExitOK || out.stderr != "" {
		t.Errorf("exit %d, stderr %q; want 0 and nothing (stderr is no terminal)", out.code, out.stderr)
	}
}

func TestLoadAgainstADeadAddressFailsEveryRequestUnavailable(t *testing.T) {
	out := run(t, invocation{args: args(deadAddr(t), "--json", "load", "--concurrency", "4", "--requests", "25")})
	if out.code != ExitFailed {
		t.Errorf("exit %d, want %d; stderr %q", out.code, ExitFailed, out.stderr)
	}
	res := jsonObject[load.Result](t, out.stdout)
	if res.OK != 0 || res.Failed != 25 || res.Errors["Unavailable"] != 25 || len(res.ByNode) != 0 {
		t.Errorf("ok %d, failed %d, errors %v, by node %v; want 25 failed Unavailable", res.OK, res.Failed, res.Errors, res.ByNode)
	}
}

func TestLoadSummaryForPeople(t *testing.T) {
	addr := nodetest.Start(t, "n1").Addr().String()
	out := run(t, invocation{args: args(addr, "load", "--requests", "50")})
	for _, want := range []string{"ok        50\n", "failed    0\n", "qps       ", "latency   p50 ", "by node   n1 50 (100.0%)\n"} {
		if !strings.Contains(out.stdout, want) {
			t.Errorf("summary lacks %q:\n%s", want, out.stdout)
		}
	}
	if strings.Contains(out.stdout, "schedule") || strings.Contains(out.stdout, "when each was due") {
		t.Errorf("a closed-loop summary speaks of a schedule:\n%s", out.stdout)
	}
	out = run(t, invocation{args: args(addr, "load", "--requests", "50", "--rps", "500")})
	for _, want := range []string{"ok        50\n", "p99.9 ", "(of the calls that succeeded, from when each was due)\n", "schedule  500 calls/s asked; ", " started over 1ms late, 0 never started\n"} {
		if !strings.Contains(out.stdout, want) {
			t.Errorf("open-loop summary lacks %q:\n%s", want, out.stdout)
		}
	}
	out = run(t, invocation{args: args(deadAddr(t), "load", "--requests", "5")})
	if !strings.Contains(out.stdout, "failed    5 (Unavailable 5)\n") || !strings.Contains(out.stdout, "by node   none answered\n") {
		t.Errorf("summary of failures:\n%s", out.stdout)
	}
}

func TestLoadInterruptedStillPrintsItsSummary(t *testing.T) {
	addr := nodetest.Start(t, "n1").Addr().String()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	interrupt := func(p load.Progress) {
		if p.Done >= 50 {
			cancel() // as SIGINT does through signal.NotifyContext
		}
	}
	out := run(t, invocation{
		args: args(addr, "--json", "load", "--rpc", "mix", "--duration", "1h"),
		opts: []Option{withProgress(interrupt)},
		ctx:  ctx,
	})
	res := jsonObject[load.Result](t, out.stdout)
	if out.code != ExitOK || res.OK < 50 || res.Failed != 0 {
		t.Errorf("exit %d, ok %d, failed %d; want 0, at least 50 ok and none failed", out.code, res.OK, res.Failed)
	}
	if !strings.Contains(out.stderr, "interrupted") {
		t.Errorf("stderr %q does not say the run was interrupted", out.stderr)
	}
}

func TestAFailedRPCExitsOneWithOneLine(t *testing.T) {
	dead := deadAddr(t)
	tests := []struct {
		name string
		args []string
	}{
		{"get", []string{"get", "1", "1"}},
		{"list", []string{"list", "1", "1", "2", "2"}},
		{"record", []string{"record", "3"}},
		{"tour", []string{"tour"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := run(t, invocation{args: args(dead, tt.args...)})
			if out.code != ExitFailed || strings.Count(out.stderr, "\n") != 1 || !strings.Contains(out.stderr, "Unavailable") {
				t.Errorf("exit %d, stderr %q; want %d and one line saying Unavailable", out.code, out.stderr, ExitFailed)
			}
		})
	}
	out := run(t, invocation{args: args(dead, "chat"), stdin: "1 1 hello\n"})
	if out.code != ExitFailed || !strings.Contains(out.stderr, "Unavailable") {
		t.Errorf("chat: exit %d, stderr %q", out.code, out.stderr)
	}
}

func TestBadUsageExitsTwoWithOneClearLine(t *testing.T) {
	addr := nodetest.Start(t, "n1").Addr().String()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string // in the line
	}{
		{"latitude not a number", []string{"get", "abc", "1"}, nil, `client get: latitude "abc" is not a number of degrees`},
		{"latitude out of range", []string{"get", "90.0001", "1"}, nil, "client get: latitude 90.0001 is out of range [-90, 90]"},
		{"longitude out of range", []string{"list", "1", "1", "2", "-180.5"}, nil, "client list: longitude -180.5 is out of range [-180, 180]"},
		{"NaN", []string{"get", "NaN", "1"}, nil, `latitude "NaN" is not a finite number`},
		{"infinity", []string{"get", "1", "-Inf"}, nil, `longitude "-Inf" is not a finite number`},
		{"trailing garbage", []string{"get", "40.9x", "1"}, nil, `latitude "40.9x" is not a number`},
		{"get missing an argument", []string{"get", "40.9"}, nil, "client get: want LAT LON, got 1 argument"},
		{"list missing arguments", []string{"list", "1", "2", "3"}, nil, "client list: want LAT1 LON1 LAT2 LON2, got 3 arguments"},
		{"record without N", []string{"record"}, nil, "client record: want N"},
		{"record of 0 points", []string{"record", "0"}, nil, `client record: N "0" is not a number of points of at least 1`},
		{"record of garbage", []string{"record", "ten"}, nil, `N "ten"`},
		{"chat with an argument", []string{"chat", "x"}, nil, "client chat: takes no arguments"},
		{"no worker", []string{"load", "--concurrency", "0"}, nil, "client load: --concurrency: 0 must be at least 1"},
		{"both ends", []string{"load", "--duration", "1s", "--requests", "10"}, nil, "client load: --duration and --requests: give one, not both"},
		{"zero requests", []string{"load", "--requests", "0"}, nil, "client load: --requests: must be positive"},
		{"unknown rpc", []string{"load", "--rpc", "put"}, nil, `client load: invalid value "put" for flag -rpc`},
		{"negative rate", []string{"load", "--rps", "-5"}, nil, "client load: --rps: -5 must be a rate of calls per second, or 0 for a closed loop"},
		{"rate not a number", []string{"load", "--rps", "fast"}, nil, `client load: invalid value "fast" for flag -rps`},
		{"load argument", []string{"load", "get"}, nil, `client load: unexpected argument "get"`},
		{"unknown flag", []string{"--bogus", "get", "1", "1"}, nil, "client: flag provided but not defined: -bogus"},
		{"zero timeout", []string{"--timeout", "0s", "get", "1", "1"}, nil, "client: --timeout: 0s must be positive"},
		{"bad timeout in env", []string{"get", "1", "1"}, map[string]string{"ROUTEGUIDE_TIMEOUT": "abc"}, `client: invalid value "abc" for ROUTEGUIDE_TIMEOUT`},
		{"bad json in env", []string{"get", "1", "1"}, map[string]string{"ROUTEGUIDE_JSON": "maybe"}, `client: invalid value "maybe" for ROUTEGUIDE_JSON`},
		{"bad concurrency in env", []string{"load"}, map[string]string{"ROUTEGUIDE_CONCURRENCY": "-1"}, "client load: --concurrency: -1 must be at least 1"},
		{"requests and duration from env", []string{"load", "--requests", "5"}, map[string]string{"ROUTEGUIDE_DURATION": "1s"}, "give one, not both"},
		{"otlp endpoint without a port", []string{"get", "1", "1"}, map[string]string{"ROUTEGUIDE_OTLP_ENDPOINT": "jaeger"}, `client: --otlp-endpoint: address "jaeger"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := run(t, invocation{args: args(addr, tt.args...), env: tt.env})
			if out.code != ExitUsage {
				t.Errorf("exit %d, want %d", out.code, ExitUsage)
			}
			if strings.Count(out.stderr, "\n") != 1 || !strings.HasSuffix(out.stderr, "\n") || !strings.Contains(out.stderr, tt.want) {
				t.Errorf("stderr %q; want one line containing %q", out.stderr, tt.want)
			}
			if out.stdout != "" {
				t.Errorf("stdout %q, want nothing", out.stdout)
			}
		})
	}
}

func TestUnknownOrMissingCommandPrintsUsageAndExitsTwo(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		firstLine string
	}{
		{"unknown", []string{"frobnicate"}, `client: unknown command "frobnicate"`},
		{"missing", nil, "client: no command given"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := run(t, invocation{args: tt.args})
			first, rest, _ := strings.Cut(out.stderr, "\n")
			if out.code != ExitUsage || first != tt.firstLine || !strings.Contains(rest, "Usage: client") {
				t.Errorf("exit %d, stderr %q; want %d, %q and the usage", out.code, out.stderr, ExitUsage, tt.firstLine)
			}
		})
	}
}

func TestHelpPrintsUsageToStderrAndExitsZero(t *testing.T) {
	for _, argv := range [][]string{{"-h"}, {"--help"}, {"help"}, {"get", "-h"}, {"chat", "--help"}, {"load", "-h"}} {
		t.Run(strings.Join(argv, " "), func(t *testing.T) {
			out := run(t, invocation{args: argv})
			if out.code != ExitOK || out.stdout != "" {
				t.Errorf("exit %d, stdout %q; want 0 and nothing", out.code, out.stdout)
			}
			for _, want := range []string{"Usage: client", "get LAT LON", "list LAT1 LON1 LAT2 LON2", "record N", "chat", "tour", "load [LOAD FLAGS]", "-concurrency", "-metrics-listen", "Metrics:", "routeguide_client_calls_total", "ROUTEGUIDE_", "Examples:", "client --target 127.0.0.1:50051 get 40.7484405 -73.9856644"} {
				if !strings.Contains(out.stderr, want) {
					t.Errorf("usage lacks %q", want)
				}
			}
		})
	}
}

func TestEtcdTargetWithoutEtcdEndpointsIsAUsageError(t *testing.T) {
	out := run(t, invocation{args: []string{"--etcd=", "get", "40.9", "-74.3"}})
	want := "client get: target etcd:///routeguide is resolved through etcd, but --etcd is empty\n"
	if out.code != ExitUsage || out.stderr != want {
		t.Errorf("exit %d, stderr %q; want %d, %q", out.code, out.stderr, ExitUsage, want)
	}
}

func TestFlagsComeFromTheEnvironmentAndFlagsWin(t *testing.T) {
	addr := nodetest.Start(t, "n1").Addr().String()
	named := firstFeature(t, true)
	env := map[string]string{"ROUTEGUIDE_TARGET": addr, "ROUTEGUIDE_JSON": "true", "ROUTEGUIDE_TIMEOUT": "5s"}
	out := run(t, invocation{args: append([]string{"get"}, degrees(named.Location)...), env: env})
	if got := jsonObject[featureJSON](t, out.stdout); out.code != ExitOK || got.Name != named.Name {
		t.Errorf("from env: exit %d, got %+v", out.code, got)
	}

	env["ROUTEGUIDE_TARGET"] = deadAddr(t)
	out = run(t, invocation{args: append([]string{"--target", addr, "get"}, degrees(named.Location)...), env: env})
	if got := jsonObject[featureJSON](t, out.stdout); out.code != ExitOK || got.Name != named.Name {
		t.Errorf("flag over env: exit %d, got %+v, stderr %q", out.code, got, out.stderr)
	}

	out = run(t, invocation{args: args(addr, "load"), env: map[string]string{"ROUTEGUIDE_JSON": "1", "ROUTEGUIDE_REQUESTS": "7", "ROUTEGUIDE_RPC": "list"}})
	if res := jsonObject[load.Result](t, out.stdout); out.code != ExitOK || res.OK != 7 {
		t.Errorf("load from env: exit %d, ok %d, stderr %q", out.code, res.OK, out.stderr)
	}
}

func TestCoordinatesAreDecimalDegreesRoundedToE7(t *testing.T) {
	tests := []struct {
		lat, lon string
		want     *pb.Point
	}{
		{"40.7838351", "-74.6143763", &pb.Point{Latitude: 407838351, Longitude: -746143763}},
		{"40.9", "-74.3", &pb.Point{Latitude: 409000000, Longitude: -743000000}},
		{"90", "-180", &pb.Point{Latitude: 900000000, Longitude: -1800000000}},
		{"-90", "180", &pb.Point{Latitude: -900000000, Longitude: 1800000000}},
		{"0.00000005", "-0.00000004", &pb.Point{Latitude: 1, Longitude: 0}},
		{"1e1", "-0", &pb.Point{Latitude: 100000000, Longitude: 0}},
	}
	for _, tt := range tests {
		t.Run(tt.lat+","+tt.lon, func(t *testing.T) {
			got, err := parsePoint(tt.lat, tt.lon)
			if err != nil || got.Latitude != tt.want.Latitude || got.Longitude != tt.want.Longitude {
				t.Fatalf("parsePoint = %v, %v; want %v", got, err, tt.want)
			}
			back, err := parsePoint(formatE7(got.Latitude), formatE7(got.Longitude))
			if err != nil || back.Latitude != got.Latitude || back.Longitude != got.Longitude {
				t.Errorf("%s does not read back: %v, %v", formatPoint(got), back, err)
			}
		})
	}
}

func TestProgressBarShowsHowFarTheRunIs(t *testing.T) {
	tests := []struct {
		name string
		p    load.Progress
		want string
	}{
		{
			name: "by requests",
			p:    load.Progress{Done: 50, OK: 49, Failed: 1, Requests: 100, QPS: 1234.4},
			want: "\r\x1b[K[###############...............] 50/100  ok 49  failed 1  1234 qps",
		},
		{
			name: "by duration",
			p:    load.Progress{Done: 10, OK: 10, Elapsed: 2500 * time.Millisecond, Duration: 10 * time.Second, QPS: 4},
			want: "\r\x1b[K[#######.......................] 2.5s/10s  ok 10  failed 0  4 qps",
		},
		{
			name: "past the end",
			p:    load.Progress{Elapsed: 11 * time.Second, Duration: 10 * time.Second},
			want: "\r\x1b[K[##############################] 11s/10s  ok 0  failed 0  0 qps",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			bar := &progressBar{w: &buf}
			bar.draw(tt.p)
			if buf.String() != tt.want {
				t.Errorf("got  %q\nwant %q", buf.String(), tt.want)
			}
			bar.finish()
			if !strings.HasSuffix(buf.String(), "\n") {
				t.Error("finish does not end the line")
			}
		})
	}
}
