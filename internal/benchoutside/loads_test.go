package benchoutside_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// loadResult is what one run of a load generator reports.
type loadResult struct {
	calls, failed int
	p50, p99      time.Duration
	// late and unsent are `client load --rps`'s: calls started over 1 ms
	// after they were due, and calls never started. ghz reports neither.
	late, unsent int
}

// load is a way to load a server: a load generator and what it asks.
type load struct {
	name string
	run  func(tb testing.TB, addr string, d time.Duration, rps float64) loadResult
}

// workers is how many calls each load generator keeps in flight (with an
// rps, the most it may).
const workers = 16

// canonicalClientPoint is the point grpc-go's example client asks
// GetFeature for first: a known feature, the 49th of the 100.
const canonicalClientPoint = `{"latitude":409146138,"longitude":-746188906}`

// ghzLoad calls GetFeature with data (one request, or a JSON array ghz
// sends in turn) as `ghz --insecure --proto ... -c 16 -z D ADDR` does: one
// connection, the workers sharing it.
func ghzLoad(name, data string) load {
	return load{name: name, run: func(tb testing.TB, addr string, d time.Duration, rps float64) loadResult {
		tb.Helper()
		args := []string{"--insecure", "--proto", filepath.Join("..", "..", "proto", "routeguide", "route_guide.proto"),
			"--call", "routeguide.RouteGuide.GetFeature", "-d", data,
			"-c", strconv.Itoa(workers), "-z", d.String(), "--duration-stop", "wait", "-O", "json"}
		if rps > 0 {
			args = append(args, "--rps", strconv.Itoa(int(rps)))
		}
		out := runTool(tb, bin.ghz, append(args, addr)...)
		var report struct {
			Count        int            `json:"count"`
			StatusCodes  map[string]int `json:"statusCodeDistribution"`
			Distribution []struct {
				Percentage int   `json:"percentage"`
				Latency    int64 `json:"latency"`
			} `json:"latencyDistribution"`
		}
		if err := json.Unmarshal(out, &report); err != nil {
			tb.Fatalf("ghz's report: %v", err)
		}
		res := loadResult{calls: report.Count, failed: report.Count - report.StatusCodes["OK"]}
		for _, l := range report.Distribution {
			switch l.Percentage {
			case 50:
				res.p50 = time.Duration(l.Latency)
			case 99:
				res.p99 = time.Duration(l.Latency)
			}
		}
		return res
	}}
}

// clientLoad is `client --target ADDR load --rpc get --concurrency 16`: the
// points of our built-in features at random, none of them in the canonical
// file, so every call is a miss on both servers.
var clientLoad = load{name: "client load", run: func(tb testing.TB, addr string, d time.Duration, rps float64) loadResult {
	tb.Helper()
	out := runTool(tb, bin.client, "--target", addr, "--json", "load", "--rpc", "get",
		"--concurrency", strconv.Itoa(workers), "--duration", d.String(), "--rps", strconv.FormatFloat(rps, 'f', -1, 64))
	var report struct {
		OK     int     `json:"ok"`
		Failed int     `json:"failed"`
		P50    float64 `json:"p50_ms"`
		P99    float64 `json:"p99_ms"`
		Late   int     `json:"late"`
		Unsent int     `json:"unsent"`
	}
	if err := json.Unmarshal(out, &report); err != nil {
		tb.Fatalf("client load's report: %v: %s", err, out)
	}
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	return loadResult{calls: report.OK + report.Failed, failed: report.Failed, p50: ms(report.P50), p99: ms(report.P99),
		late: report.Late, unsent: report.Unsent}
}}

// grpcloop is the in-process benchmark's client in a process of its own:
// gRPC's defaults and generated stubs, the served file's points.
var grpcloop = load{name: "grpc-go loop", run: func(tb testing.TB, addr string, d time.Duration, rps float64) loadResult {
	tb.Helper()
	if rps > 0 {
		tb.Fatal("grpcloop runs closed loop only")
	}
	out := runTool(tb, bin.grpcloop, "-addr", addr, "-c", strconv.Itoa(workers), "-z", d.String(), "-points", served.file)
	var report struct {
		Calls, Failed int
		P50           int64 `json:"p50_ns"`
		P99           int64 `json:"p99_ns"`
	}
	if err := json.Unmarshal(out, &report); err != nil {
		tb.Fatalf("grpcloop's report: %v: %s", err, out)
	}
	return loadResult{calls: report.Calls, failed: report.Failed, p50: time.Duration(report.P50), p99: time.Duration(report.P99)}
}}

// runTool runs a load generator to its end and returns its standard output.
func runTool(tb testing.TB, binary string, args ...string) []byte {
	tb.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		tb.Fatalf("%s %v: %v\n%s", filepath.Base(binary), args, err, stderr.Bytes())
	}
	return stdout.Bytes()
}

// pointsInTurn is a JSON array of the served file's 100 points in a fixed
// shuffled order: known features at random, as ghz sends an array in turn.
func pointsInTurn(tb testing.TB) string {
	tb.Helper()
	data, err := os.ReadFile(served.file)
	if err != nil {
		tb.Fatal(err)
	}
	var list []struct {
		Location json.RawMessage `json:"location"`
	}
	if err := json.Unmarshal(data, &list); err != nil {
		tb.Fatalf("%s: %v", served.file, err)
	}
	// A fixed permutation: i*37 mod 100 visits every index once.
	var b bytes.Buffer
	b.WriteByte('[')
	for i := range list {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(list[i*37%len(list)].Location)
	}
	b.WriteByte(']')
	if len(list) != 100 {
		tb.Fatalf("%s holds %d features, want 100", served.file, len(list))
	}
	return b.String()
}

func (r loadResult) String() string {
	return fmt.Sprintf("%d calls, %d failed, p50 %v, p99 %v", r.calls, r.failed, r.p50, r.p99)
}
