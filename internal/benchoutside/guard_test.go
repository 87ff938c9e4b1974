package benchoutside_test

import (
	"flag"
	"slices"
	"testing"
	"time"
)

var guardNode = flag.String("guard.node", "", "TestNodeCostsNoMoreFromOutside: the node binary to guard (default: cmd/node as built here)")

// The guard: the node's server CPU per GetFeature under ghz, against the
// example server's in the same rounds. guardRounds runs of guardRun each,
// alternating; the median of the paired ratios must reach guardMinRatio.
// The margin is set from the measured noise: see docs/BENCHMARKS.md,
// "Guard in CI".
const (
	guardRounds   = 12
	guardRun      = 3 * time.Second
	guardMinRatio = 0.95
)

// TestNodeCostsNoMoreFromOutside fails when the shipped node's server CPU
// per GetFeature, loaded by ghz from outside, is no longer below the
// example server's by guardMinRatio: a change that costs the node 10%
// crosses it, the machine's noise does not.
func TestNodeCostsNoMoreFromOutside(t *testing.T) {
	node := bin.node
	if *guardNode != "" {
		node = *guardNode
	}
	serveFeatures(t, "canonical")
	servers := []*server{startOfficial(t), startNode(t, "node", node, false)}
	before := loadAverage()
	samples := measure(t, servers, ghzLoad("ghz", pointsInTurn(t)), guardRounds, guardRun)
	r := ratios(samples[0], samples[1])
	t.Logf("example server's CPU per call over the node's, %d rounds of %v: median %.3f (%.2f–%.2f), load average %s–%s",
		guardRounds, guardRun, median(r), slices.Min(r), slices.Max(r), before, loadAverage())
	if m := median(r); m < guardMinRatio {
		t.Errorf("the node costs %.3fx less CPU per GetFeature than the example server, below the guard's %.2fx: "+
			"a change made it dearer (docs/BENCHMARKS.md, \"Guard in CI\")", m, guardMinRatio)
	}
}
