package benchoutside_test

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

var (
	rounds   = flag.Int("outside.rounds", 0, "rounds of TestOutside, each server once per load in each (0 skips it)")
	runFor   = flag.Duration("outside.duration", 3*time.Second, "length of each run")
	loadList = flag.String("outside.loads", "ghz,ghz-one-point,client", "loads of TestOutside: ghz (the 100 served points in turn), ghz-one-point (the canonical client's point), client (`client load`), grpcloop (the in-process benchmark's client)")
	variants = flag.String("outside.nodes", "", "more node binaries to measure beside the shipped one: name=path,...")
	servedAs = flag.String("outside.features", "canonical", "features both servers serve: canonical (the example's file) or builtin100 (the in-process benchmark's)")
	benchBin = flag.String("outside.benchbin", "", "also measure the in-process benchmark's canonical and node servers, from this test binary (go test -c ./internal/node)")
	profile  = flag.String("outside.profile", "", "TestOutside also writes a CPU profile of the node under ghz to this file")
	rpsList  = flag.String("outside.rps", "", "TestOutsideLatency: open-loop rates as fractions of the node's capacity, e.g. 0.25,0.5,0.75 (empty skips it)")
)

// sample is one run of one load against one server.
type sample struct {
	loadResult
	cpuPerCall                  time.Duration
	readsPerCall, writesPerCall float64
}

// measure runs l against every server in turn, rounds times, alternating the
// order (A B, B A, ...) so that a drift of the machine's load weighs on each
// alike; samples[i][r] is server i's run in round r.
func measure(tb testing.TB, servers []*server, l load, rounds int, d time.Duration) [][]sample {
	tb.Helper()
	for _, s := range servers { // warm up: connections, caches, the heap's size
		l.run(tb, s.addr, d/3, 0)
	}
	samples := make([][]sample, len(servers))
	for r := range rounds {
		order := make([]int, len(servers))
		for i := range order {
			order[i] = i
		}
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for _, i := range order {
			s := servers[i]
			before := s.cpu(tb)
			reads, writes := s.syscalls(tb)
			res := l.run(tb, s.addr, d, 0)
			used := s.cpu(tb) - before
			readsAfter, writesAfter := s.syscalls(tb)
			if res.failed > 0 || res.calls == 0 {
				tb.Fatalf("%s under %s: %v", s.name, l.name, res)
			}
			n := float64(res.calls)
			samples[i] = append(samples[i], sample{res, used / time.Duration(res.calls),
				float64(readsAfter-reads) / n, float64(writesAfter-writes) / n})
		}
	}
	return samples
}

// ratios is, round by round, base's CPU per call over s's: above 1, s
// costs less.
func ratios(base, s []sample) []float64 {
	out := make([]float64, len(s))
	for r := range s {
		out[r] = float64(base[r].cpuPerCall) / float64(s[r].cpuPerCall)
	}
	return out
}

func median[T int | float64 | time.Duration](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// each is f of every element of xs.
func each[S, T any](xs []S, f func(S) T) []T {
	out := make([]T, len(xs))
	for i, x := range xs {
		out[i] = f(x)
	}
	return out
}

// TestOutside is the headline comparison: the shipped node against grpc-go's
// example server (and any -outside.nodes), each loaded from outside by ghz
// and by `client load`, interleaved; it logs a Markdown table.
//
//	cd internal/benchoutside && go test -run TestOutside -outside.rounds 8 -v .
func TestOutside(t *testing.T) {
	if *rounds == 0 {
		t.Skip("the benchmark: give -outside.rounds")
	}
	serveFeatures(t, *servedAs)
	servers := []*server{startOfficial(t), startNode(t, "node", bin.node, *profile != "")}
	if *benchBin != "" {
		servers = append(servers, startBenchServer(t, "canonical", *benchBin), startBenchServer(t, "node", *benchBin))
	}
	for _, v := range strings.Split(*variants, ",") {
		if name, path, ok := strings.Cut(v, "="); ok {
			servers = append(servers, startNode(t, name, path, false))
		}
	}
	loads := map[string]load{
		"ghz":           ghzLoad("ghz, the 100 points in turn", pointsInTurn(t)),
		"ghz-one-point": ghzLoad("ghz, the canonical client's point", canonicalClientPoint),
		"client":        clientLoad,
		"grpcloop":      grpcloop,
	}
	t.Logf("| load | server | CPU per call | official/it (range) | reads, writes per call | QPS | p50 | p99 | load average |")
	t.Logf("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
	for _, name := range strings.Split(*loadList, ",") {
		l, ok := loads[name]
		if !ok {
			t.Fatalf("-outside.loads: unknown load %q", name)
		}
		before := loadAverage()
		samples := measure(t, servers, l, *rounds, *runFor)
		after := loadAverage()
		for i, s := range servers {
			r := ratios(samples[0], samples[i])
			t.Logf("| %s | %s | %v | **%.2f** (%.2f–%.2f) | %.2f, %.2f | %.0f | %v | %v | %s–%s |", l.name, s.name,
				median(each(samples[i], func(x sample) time.Duration { return x.cpuPerCall })),
				median(r), slices.Min(r), slices.Max(r),
				median(each(samples[i], func(x sample) float64 { return x.readsPerCall })),
				median(each(samples[i], func(x sample) float64 { return x.writesPerCall })),
				median(each(samples[i], func(x sample) float64 { return float64(x.calls) / runFor.Seconds() })),
				median(each(samples[i], func(x sample) time.Duration { return x.p50 })).Round(time.Microsecond),
				median(each(samples[i], func(x sample) time.Duration { return x.p99 })).Round(time.Microsecond),
				before, after)
		}
	}
	if *profile != "" {
		profileUnderGhz(t, servers[1], *profile)
	}
}

// profileUnderGhz writes a CPU profile of node, taken from its pprof
// endpoint while ghz loads it.
func profileUnderGhz(t *testing.T, node *server, path string) {
	seconds := int(runFor.Seconds())
	got := make(chan error, 1)
	go func() {
		resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", node.metricsAddr, seconds))
		if err != nil {
			got <- err
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(path)
		if err != nil {
			got <- err
			return
		}
		_, err = io.Copy(f, resp.Body)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		got <- err
	}()
	ghzLoad("ghz", pointsInTurn(t)).run(t, node.addr, *runFor+time.Second, 0)
	if err := <-got; err != nil {
		t.Fatalf("profile the node: %v", err)
	}
	t.Logf("CPU profile of the node under ghz: %s", path)
}

// TestOutsideLatency runs ghz --rps and `client load --rps` against the node
// at fractions of its capacity (its closed-loop QPS under ghz), in turn,
// and logs each one's p50 and p99.
//
//	cd internal/benchoutside && go test -run TestOutsideLatency -outside.rps 0.25,0.5,0.75 -outside.rounds 3 -v .
func TestOutsideLatency(t *testing.T) {
	if *rpsList == "" {
		t.Skip("the benchmark: give -outside.rps")
	}
	serveFeatures(t, *servedAs)
	node := startNode(t, "node", bin.node, false)
	ghz := ghzLoad("ghz", pointsInTurn(t))
	capacity := median(each(measure(t, []*server{node}, ghz, 3, *runFor)[0], func(x sample) float64 {
		return float64(x.calls) / runFor.Seconds()
	}))
	t.Logf("capacity under ghz, closed loop, %d workers: %.0f calls/s (load average %s)", workers, capacity, loadAverage())
	t.Logf("| rate | tool | p50 | p99 | calls/s done | late, unsent (client load) | load average |")
	t.Logf("| --- | --- | --- | --- | --- | --- | --- |")
	for _, f := range strings.Split(*rpsList, ",") {
		fraction, err := strconv.ParseFloat(f, 64)
		if err != nil {
			t.Fatalf("-outside.rps: %v", err)
		}
		rate := fraction * capacity
		for _, l := range []load{ghz, clientLoad} {
			var runs []loadResult
			before := loadAverage()
			for range max(*rounds, 1) {
				runs = append(runs, l.run(t, node.addr, *runFor, rate))
			}
			t.Logf("| %.0f%% (%.0f/s) | %s | %v | %v | %.0f | %d, %d | %s–%s |", 100*fraction, rate, l.name,
				median(each(runs, func(r loadResult) time.Duration { return r.p50 })).Round(time.Microsecond),
				median(each(runs, func(r loadResult) time.Duration { return r.p99 })).Round(time.Microsecond),
				median(each(runs, func(r loadResult) float64 { return float64(r.calls) / runFor.Seconds() })),
				median(each(runs, func(r loadResult) int { return r.late })),
				median(each(runs, func(r loadResult) int { return r.unsent })),
				before, loadAverage())
		}
	}
}
