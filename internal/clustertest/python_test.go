package clustertest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/routeguide-cluster/routeguide/discovery/xdsserver"
	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/node"
	"github.com/routeguide-cluster/routeguide/internal/testutils/grayfault"
	"github.com/routeguide-cluster/routeguide/internal/testutils/nodetest"
	"github.com/routeguide-cluster/routeguide/routeguide/features"
)

// repoRoot is the module's root, from this package's directory.
const repoRoot = "../.."

// pythonWithGRPC returns a python3 that imports grpc and grpc_tools
// (Debian's python3-grpcio and python3-grpc-tools), or skips the test; in CI
// (CI=true), where .ci/run installs them, it fails instead.
func pythonWithGRPC(t *testing.T) string {
	t.Helper()
	for _, python := range []string{"python3", "/usr/bin/python3"} {
		if exec.Command(python, "-c", "import grpc, grpc_tools.protoc").Run() == nil {
			return python
		}
	}
	const missing = "no python3 imports grpc and grpc_tools: apt-get install python3-grpcio python3-grpc-tools"
	if os.Getenv("CI") == "true" {
		t.Fatal(missing)
	}
	t.Skip(missing)
	return ""
}

// pythonAnswers is the JSON summary of deploy/python/route_guide_client.py.
type pythonAnswers struct {
	Answers struct {
		GetKnown           string   `json:"get_known"`
		GetUnknown         string   `json:"get_unknown"`
		GetFutures         []string `json:"get_futures"`
		ListCount          int      `json:"list_count"`
		RecordPoints       int      `json:"record_points"`
		RecordPointsFuture int      `json:"record_points_future"`
		Chat               []string `json:"chat"`
	} `json:"answers"`
	OK     int            `json:"ok"`
	Failed int            `json:"failed"`
	Errors map[string]int `json:"errors"`
	ByNode map[string]int `json:"by_node"`
}

// TestPythonClientOverXDS runs the repository's Python client, generated
// from proto/ now, against xds:///routeguide on three nodes: every RPC must
// answer what the nodes' features say, its calls must reach every node, and
// a node drained while it calls must cost it no call.
func TestPythonClientOverXDS(t *testing.T) {
	python := pythonWithGRPC(t)
	template := nodetest.Config(t)
	template.DrainDelay = time.Second
	cluster := nodetest.StartCluster(t, 3, template)
	nodes := cluster.Nodes()

	cmd := exec.Command(python, filepath.Join(repoRoot, "deploy/python/route_guide_client.py"), "--until-stdin-closes")
	cmd.Env = pythonClientEnv(t, python, nodes)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	// The client prints "node ID" the first time a node answers, then
	// its summary. Drain the last node once every node has answered and
	// the tour is done; close stdin once the drain is over.
	lines := bufio.NewScanner(stdout)
	seen := map[string]bool{}
	tourDone := false
	victim := nodes[2] // not the first xDS server, which Python 1.51 alone uses
	var summary string
	for lines.Scan() {
		line := lines.Text()
		switch {
		case strings.HasPrefix(line, "node "):
			seen[strings.TrimPrefix(line, "node ")] = true
		case line == "tour done":
			tourDone = true
		case strings.HasPrefix(line, "{"):
			summary = line
		}
		if tourDone && len(seen) == len(nodes) && victim != nil {
			if err := cluster.StopNode(victim); err != nil {
				t.Fatalf("drain %s: %v", victim.ID(), err)
			}
			victim = nil
			stdin.Close()
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("python client: %v\n%s", err, stderr.String())
	}
	if victim != nil {
		t.Fatalf("the Python client ended before every node answered (seen %v)\n%s", seen, stderr.String())
	}
	var got pythonAnswers
	if err := json.Unmarshal([]byte(summary), &got); err != nil {
		t.Fatalf("summary %q: %v\n%s", summary, err, stderr.String())
	}

	db := features.Default()
	wantKnown := db.At(409146138, -746188906).GetName()
	inRect := 0
	for range db.Within(features.RectBetween(&pb.Point{Latitude: 400000000, Longitude: -750000000}, &pb.Point{Latitude: 420000000, Longitude: -730000000})) {
		inRect++
	}
	a := got.Answers
	for _, c := range []struct {
		what      string
		got, want any
	}{
		{"GetFeature of a known point", a.GetKnown, wantKnown},
		{"GetFeature of (0, 0)", a.GetUnknown, ""},
		{"GetFeature futures", a.GetFutures, slices.Repeat([]string{wantKnown}, 6)},
		{"ListFeatures", a.ListCount, inRect},
		{"RecordRoute", a.RecordPoints, 10},
		{"RecordRoute future", a.RecordPointsFuture, 5},
		{"RouteChat", a.Chat, []string{"First", "First", "Second", "First", "Second", "Third"}},
	} {
		if !equalJSON(c.got, c.want) {
			t.Errorf("%s answered %v, want %v", c.what, c.got, c.want)
		}
	}
	if got.Failed != 0 {
		t.Errorf("%d of %d calls failed: %v\n%s", got.Failed, got.OK+got.Failed, got.Errors, stderr.String())
	}
	for _, n := range nodes {
		if got.ByNode[n.ID()] == 0 {
			t.Errorf("%s answered no call; by node %v", n.ID(), got.ByNode)
		}
	}
	t.Logf("python client over xDS: ok=%d failed=%d by node %v", got.OK, got.Failed, got.ByNode)
}

func equalJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// grayClientSummary is the JSON summary of testdata/gray_client.py.
type grayClientSummary struct {
	Buckets []map[string]int `json:"buckets"` // calls per node, and "failed", per half second
	Errors  map[string]int   `json:"errors"`
}

// TestPythonClientEjectsANodeThatFailsAThirdOfItsCalls runs Debian's grpcio
// over xds:///routeguide against three nodes, one of which fails 30% of
// its calls UNAVAILABLE while it stays SERVING: grpcio 1.51 takes the
// cluster's outlier detection (gRFC A50) and stops sending that node calls
// within 10s, and retries the failures on the other nodes. It balances
// round robin, the cluster's lb_policy: it has no gRFC A52 by default,
// hence neither our policy nor least request.
func TestPythonClientEjectsANodeThatFailsAThirdOfItsCalls(t *testing.T) {
	python := pythonWithGRPC(t)
	template := nodetest.Config(t)
	cluster := nodetest.StartCluster(t, 2, template)
	failing := template
	failing.NodeID = "failing"
	failing.ServerOptions = (&grayfault.Fault{FailPercent: 30}).ServerOptions()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := cluster.StartNode(ctx, failing); err != nil {
		t.Fatal(err)
	}
	const bucket = 500 * time.Millisecond
	cmd := exec.Command(python, "internal/clustertest/testdata/gray_client.py", "--duration", "14", "--bucket", fmt.Sprint(bucket.Seconds()))
	cmd.Dir = repoRoot
	cmd.Env = pythonClientEnv(t, python, cluster.Nodes())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("gray_client.py: %v\n%s", err, stderr.String())
	}
	var got grayClientSummary
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("summary %q: %v\n%s", out, err, stderr.String())
	}
	// Ejected: from a bucket within 10s on, no call reaches the node for
	// 4s (the ejection lasts 10s, then it is brought back and ejected again).
	const ejectedFor = int(4 * time.Second / bucket)
	ejectedAt := -1
	for i := 0; ejectedAt < 0 && time.Duration(i)*bucket <= 10*time.Second && i+ejectedFor <= len(got.Buckets); i++ {
		if !slices.ContainsFunc(got.Buckets[i:i+ejectedFor], func(b map[string]int) bool { return b["failing"] > 0 }) {
			ejectedAt = i
		}
	}
	t.Logf("by half second: %v; errors %v", got.Buckets, got.Errors)
	if ejectedAt < 0 {
		t.Fatalf("the failing node had calls in every %v within the first 10s; want it ejected", time.Duration(ejectedFor)*bucket)
	}
	t.Logf("grpcio %s ejected the failing node within %v", pythonGRPCVersion(t, python), time.Duration(ejectedAt)*bucket)
	// Round robin before the ejection: each node had a third of the
	// attempts. The failing node's failed attempts were retried on the
	// others (the route's retry policy, gRFC A44), so it answered 70% of
	// its third, and the caller saw almost no failure.
	answered := map[string]int{}
	for _, b := range got.Buckets[:ejectedAt] {
		for node, n := range b {
			if node != "failed" {
				answered[node] += n
			}
		}
	}
	attempts := float64(answered["failing"]) / 0.7
	for node, n := range answered {
		if d := (float64(n) - attempts) / float64(n); node != "failing" && (len(answered) != 3 || d > 0.05 || d < -0.05) {
			t.Errorf("answers before the ejection %v: %s's %d against the failing node's %.0f attempts; want a third each, round robin", answered, node, n, attempts)
		}
	}
	// An attempt fails with chance 1/3 × 30% = 0.1, so a call fails all 4
	// of its attempts with chance 1e-4: a run of a few thousand calls may
	// see one. Without retries a tenth of the calls would fail.
	calls, failed := 0, 0
	for _, b := range got.Buckets {
		for node, n := range b {
			calls += n
			if node == "failed" {
				failed += n
			}
		}
	}
	if limit := max(3, calls/1000); failed > limit {
		t.Errorf("%d of %d calls failed (%v); want at most %d: every failure retried but for chance", failed, calls, got.Errors, limit)
	}
}

// pythonClientEnv is the environment of a Python client of nodes over xDS:
// RouteGuide's modules, generated now from proto/ (the one source of the
// contract), on its PYTHONPATH, and a bootstrap that names every node.
func pythonClientEnv(t *testing.T, python string, nodes []*node.Node) []string {
	t.Helper()
	dir := t.TempDir()
	protoc := exec.Command(python, "-m", "grpc_tools.protoc", "-I", filepath.Join(repoRoot, "proto/routeguide"),
		"--python_out", dir, "--grpc_python_out", dir, "route_guide.proto")
	if out, err := protoc.CombinedOutput(); err != nil {
		t.Fatalf("grpc_tools.protoc: %v\n%s", err, out)
	}
	var servers []string
	for _, n := range nodes {
		servers = append(servers, n.AdvertisedAddr())
	}
	bootstrap, err := xdsserver.Bootstrap(xdsserver.BootstrapConfig{Servers: servers, NodeID: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	bootstrapFile := filepath.Join(dir, "bootstrap.json")
	if err := os.WriteFile(bootstrapFile, bootstrap, 0o644); err != nil {
		t.Fatal(err)
	}
	return append(os.Environ(), "GRPC_XDS_BOOTSTRAP="+bootstrapFile, "PYTHONPATH="+dir)
}

func pythonGRPCVersion(t *testing.T, python string) string {
	out, err := exec.Command(python, "-c", "import grpc; print(grpc.__version__)").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}
