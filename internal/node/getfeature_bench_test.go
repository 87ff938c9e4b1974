package node

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/testutils"
	"github.com/routeguide-cluster/routeguide/internal/testutils/canonical"
	"github.com/routeguide-cluster/routeguide/internal/testutils/grpctest"
	"github.com/routeguide-cluster/routeguide/routeguide"
	"github.com/routeguide-cluster/routeguide/routeguide/features"
	"github.com/routeguide-cluster/routeguide/routeguide/notes"
)

// hundredFeatures is the first 100 features of the built-in data set, as the
// canonical example serves them.
func hundredFeatures() []*pb.Feature { return features.Default().All()[:100] }

// BenchmarkGetFeatureVsCanonical is a profiling tool, not the headline
// figure: the node as users meet it is measured from outside, its shipped
// binary beside grpc-go's example server under ghz and `client load`, by
// internal/benchoutside (docs/BENCHMARKS.md says how its client and data
// differ from users' and what each difference weighs). It compares GetFeature
// over real TCP on loopback against three servers, each run in a process of
// its own (see TestServeForBenchmark; ROUTEGUIDE_BENCH_SERVER_CPUPROFILE
// profiles them), from one client connection in the benchmark's process with
// the same callers and the same points (known features picked at random):
//
//   - canonical: the canonical example, grpc.NewServer() with defaults;
//   - service: our routeguide.Server over the same 100 features, with the
//     node's TransportOptions and no interceptors;
//   - node: a whole standalone node as `node --etcd=` runs it, with the node
//     header, logging, recovery and metrics interceptors.
//
// With ROUTEGUIDE_BENCH_BASELINE naming a test binary of this package built
// from another commit, a fourth server, baseline, is that commit's node: a
// change measured before and after in one run (see benchServers).
//
// ns/op is the inverse of the throughput the client sees. server-cpu-ns/op
// is the server process's CPU time per call: a node's capacity is its cores
// divided by it, and it is steadier than ns/op on a machine that the client
// and other work share. server-allocs/op counts the heap objects the server
// process allocates per call, gRPC's included. Compare within one run, canonical/ours, by
// sub-benchmark:
//
//	go test -run '^$' -bench GetFeatureVsCanonical -count 6 ./internal/node/
func BenchmarkGetFeatureVsCanonical(b *testing.B) {
	points := knownPoints(hundredFeatures())
	for _, callers := range []int{1, 16} {
		for _, server := range benchServers() {
			b.Run(fmt.Sprintf("callers=%d/server=%s", callers, server), func(b *testing.B) {
				proc := startServerProcess(b, server)
				client := pb.NewRouteGuideClient(grpctest.Dial(b, proc.addr))
				serverCPU, serverAllocs := proc.cpuTime(b), proc.allocs(b)
				benchCalls(b, callers, func(i int) error {
					_, err := client.GetFeature(context.Background(), points[i%len(points)])
					return err
				})
				b.ReportMetric(float64(proc.cpuTime(b)-serverCPU)/float64(b.N), "server-cpu-ns/op")
				b.ReportMetric(float64(proc.allocs(b)-serverAllocs)/float64(b.N), "server-allocs/op")
			})
		}
	}
}

// BenchmarkListFeaturesVsCanonical streams the features inside the box the
// canonical client asks for (55 of our first 100) from the same three servers,
// with 4 callers. It reports per streamed message: the time the client
// sees, and the server process's CPU time and allocations.
//
//	go test -run '^$' -bench ListFeaturesVsCanonical -count 6 ./internal/node/
func BenchmarkListFeaturesVsCanonical(b *testing.B) {
	box := &pb.Rectangle{
		Lo: &pb.Point{Latitude: 400000000, Longitude: -750000000},
		Hi: &pb.Point{Latitude: 420000000, Longitude: -730000000},
	}
	for _, server := range benchServers() {
		b.Run("server="+server, func(b *testing.B) {
			proc := startServerProcess(b, server)
			client := pb.NewRouteGuideClient(grpctest.Dial(b, proc.addr))
			var messages atomic.Int64
			serverCPU, serverAllocs := proc.cpuTime(b), proc.allocs(b)
			benchCalls(b, 4, func(int) error {
				stream, err := client.ListFeatures(context.Background(), box)
				if err != nil {
					return err
				}
				return drain(func() (*pb.Feature, error) {
					f, err := stream.Recv()
					if err == nil {
						messages.Add(1)
					}
					return f, err
				})
			})
			perMessage := float64(messages.Load())
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/perMessage, "ns/msg")
			b.ReportMetric(float64(proc.cpuTime(b)-serverCPU)/perMessage, "server-cpu-ns/msg")
			b.ReportMetric(float64(proc.allocs(b)-serverAllocs)/perMessage, "server-allocs/msg")
		})
	}
}

// baselineEnv names a test binary of this package built from another
// commit (go test -c -o ...): its node is served as server=baseline.
const baselineEnv = "ROUTEGUIDE_BENCH_BASELINE"

// benchServers are the servers the benchmarks compare.
func benchServers() []string {
	servers := []string{"canonical", "service", "node"}
	if os.Getenv(baselineEnv) != "" {
		servers = append(servers, "baseline")
	}
	return servers
}

// benchServerEnv names the server TestServeForBenchmark runs.
const benchServerEnv = "ROUTEGUIDE_BENCH_SERVER"

// TestServeForBenchmark is not a test: run by a benchmark as a process of its
// own with ROUTEGUIDE_BENCH_SERVER set, it serves the server named there on
// 127.0.0.1:0, writes the address on a line to stdout, and serves until its
// stdin closes. Without the variable it skips.
func TestServeForBenchmark(t *testing.T) {
	kind := os.Getenv(benchServerEnv)
	if kind == "" {
		t.Skip("run by BenchmarkGetFeatureVsCanonical as the server process")
	}
	list := hundredFeatures()
	var addr string
	switch kind {
	case "canonical":
		addr = serveGRPC(t, grpc.NewServer(), &canonical.Server{Features: list})
	case "service":
		db := features.New(list)
		srv := routeguide.NewServer(routeguide.Config{Features: db, Notes: notes.NewMemory(notes.Limits{})})
		addr = serveGRPC(t, grpc.NewServer(TransportOptions(db)...), srv)
	case "node":
		addr = startBenchNode(t, "127.0.0.1:0", canonical.WriteFeatures(t, list)).Addr().String()
	default:
		t.Fatalf("%s=%q: want canonical, service or node", benchServerEnv, kind)
	}
	if path := os.Getenv(benchServerProfileEnv); path != "" {
		stop := startCPUProfile(t, path+"."+kind)
		defer stop()
	}
	fmt.Println(addr)
	// Each line on stdin asks for the objects allocated so far.
	lines := bufio.NewScanner(os.Stdin)
	for lines.Scan() {
		// MemStats, unlike runtime/metrics, counts each tiny allocation
		// (such as gRPC's 5-byte message header) on its own.
		var stats runtime.MemStats
		runtime.ReadMemStats(&stats)
		fmt.Println(stats.Mallocs)
	}
}

// benchServerProfileEnv, when set, makes the server process write a CPU
// profile to its value followed by "." and the server's name: the profile of
// the server alone, without the client.
const benchServerProfileEnv = "ROUTEGUIDE_BENCH_SERVER_CPUPROFILE"

func startCPUProfile(t *testing.T, path string) (stop func()) {
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		t.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// serverProcess is a server run by TestServeForBenchmark.
type serverProcess struct {
	cmd    *exec.Cmd
	addr   string
	stdin  io.Writer
	stdout *bufio.Reader
}

func startServerProcess(b *testing.B, kind string) *serverProcess {
	b.Helper()
	binary, env := os.Args[0], []string{benchServerEnv + "=" + kind}
	if kind == "baseline" {
		// The other commit's node; its profile, if any, is <path>.baseline.node.
		binary, env = os.Getenv(baselineEnv), []string{benchServerEnv + "=node"}
		if path := os.Getenv(benchServerProfileEnv); path != "" {
			env = append(env, benchServerProfileEnv+"="+path+".baseline")
		}
	}
	cmd := exec.Command(binary, "-test.run=^TestServeForBenchmark$")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close()                  // the server stops when its stdin closes
		go io.Copy(io.Discard, stdout) // the test's own output as it ends
		if err := cmd.Wait(); err != nil {
			b.Errorf("server process %s: %v", kind, err)
		}
	})
	out := bufio.NewReader(stdout)
	line, err := out.ReadString('\n')
	if err != nil {
		b.Fatalf("server process %s wrote no address: %v", kind, err)
	}
	return &serverProcess{cmd: cmd, addr: strings.TrimSpace(line), stdin: stdin, stdout: out}
}

// allocs is how many heap objects the server process has allocated so far.
func (p *serverProcess) allocs(b *testing.B) uint64 {
	b.Helper()
	if _, err := io.WriteString(p.stdin, "allocs\n"); err != nil {
		b.Fatal(err)
	}
	line, err := p.stdout.ReadString('\n')
	if err != nil {
		b.Fatalf("server process allocations: %v", err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(line), 10, 64)
	if err != nil {
		b.Fatalf("server process allocations: %q", line)
	}
	return n
}

// cpuTime is the CPU time, user and system, the server process has used so
// far, from /proc (in clock ticks of 10ms: benchmarks run long enough).
func (p *serverProcess) cpuTime(b *testing.B) time.Duration {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		b.Skipf("server CPU time: %v", err)
	}
	// The fields after the command name, which is in parentheses and may
	// hold spaces: state is field 3, utime 14 and stime 15.
	fields := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+2:]))
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("parse /proc/%d/stat: %q", p.cmd.Process.Pid, data)
	}
	return time.Duration(utime+stime) * clockTick
}

// clockTick is USER_HZ, the unit of /proc/<pid>/stat times, which is 100 on
// every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// benchCalls makes b.N calls from callers goroutines, each with one call in
// flight, and reports allocations and cpu-ns/op.
func benchCalls(b *testing.B, callers int, call func(i int) error) {
	b.Helper()
	if err := call(0); err != nil { // connects
		b.Fatal(err)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	cpuBefore := testutils.ProcessCPUTime(b)
	for range callers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				if err := call(i); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(testutils.ProcessCPUTime(b)-cpuBefore)/float64(b.N), "cpu-ns/op")
}

// knownPoints returns copies of the points of features picked at random in
// list, as the load generator asks for them.
func knownPoints(list []*pb.Feature) []*pb.Point {
	rng := rand.New(rand.NewPCG(3, 4))
	points := make([]*pb.Point, 1024)
	for i := range points {
		at := list[rng.IntN(len(list))].Location
		points[i] = &pb.Point{Latitude: at.Latitude, Longitude: at.Longitude}
	}
	return points
}

// serveGRPC serves impl on srv on 127.0.0.1:0 until b ends.
func serveGRPC(b testing.TB, srv *grpc.Server, impl pb.RouteGuideServer) string {
	b.Helper()
	pb.RegisterRouteGuideServer(srv, impl)
	return grpctest.Serve(b, srv)
}

// startBenchNode runs a standalone node, metrics on metricsListen ("" for
// none), logging at Info to nowhere, until b ends.
func startBenchNode(b testing.TB, metricsListen, featuresFile string) *Node {
	b.Helper()
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Etcd = nil
	cfg.MetricsListen = metricsListen
	cfg.FeaturesFile = featuresFile
	cfg.DrainDelay = 0
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	n, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	testutils.Run(b, "node", n)
	return n
}
