package main

import (
	"strings"
	"testing"
)

func TestParseAveragesThePlottedTargetsOnly(t *testing.T) {
	out := `goos: linux
BenchmarkClusterGetFeature/concurrency=4/nodes=1-2   5000  32000 ns/op  0.07 p50-ms  0.70 p99-ms  30000 qps
BenchmarkClusterGetFeature/concurrency=4/nodes=1-2   5000  32000 ns/op  0.07 p50-ms  0.90 p99-ms  34000 qps
BenchmarkClusterGetFeature/concurrency=4/nodes=3     5000  35000 ns/op  0.10 p50-ms  0.80 p99-ms  28000 qps
BenchmarkClusterGetFeature/concurrency=4/nodes=3/static-2   5000  99000 ns/op  0.10 p50-ms  9.00 p99-ms  1000 qps
BenchmarkClusterGetFeature/concurrency=4/server=1/conns=3-2 5000  99000 ns/op  0.10 p50-ms  9.00 p99-ms  1000 qps
PASS
`
	results, err := parse(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 2 {
		t.Fatalf("parsed %d series, want 2 (nodes=1 and nodes=3 at concurrency 4): %v", len(results), results)
	}
	one, three := results[key{4, 1}], results[key{4, 3}]
	if one == nil || one.n != 2 || one.qps != 64000 || one.p99 != 1.6 {
		t.Errorf("nodes=1: %+v, want the sums of two runs (qps 64000, p99 1.6)", one)
	}
	if three == nil || three.n != 1 || three.qps != 28000 {
		t.Errorf("nodes=3: %+v, want one run of 28000 qps, with nodes=3/static left out", three)
	}
}
