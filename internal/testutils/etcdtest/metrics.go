package etcdtest

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// MetricSum reads the metrics of the etcd servers embedded in this process,
// from its default Prometheus registry: the sum, over the series of name
// whose label has value, of their counters and their histograms' sums (the
// messages etcd received for a method, the time it spent applying).
func MetricSum(tb testing.TB, name, label, value string) float64 {
	tb.Helper()
	families, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	sum := 0.0
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					sum += m.GetCounter().GetValue() + m.GetHistogram().GetSampleSum()
				}
			}
		}
	}
	return sum
}

// MetricBuckets reads a histogram of the etcd servers embedded in this
// process, summed over its series: the buckets' upper bounds, and the
// observations in each (not cumulated).
func MetricBuckets(tb testing.TB, name string) (bounds []float64, counts []uint64) {
	tb.Helper()
	families, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			below := uint64(0)
			for i, b := range m.GetHistogram().GetBucket() {
				if i == len(bounds) {
					bounds, counts = append(bounds, b.GetUpperBound()), append(counts, 0)
				}
				counts[i] += b.GetCumulativeCount() - below
				below = b.GetCumulativeCount()
			}
		}
	}
	return bounds, counts
}
