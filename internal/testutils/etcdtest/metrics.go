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
