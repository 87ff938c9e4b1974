package balancer

import (
	"context"
	"sync/atomic"
	"testing"

	grpcbalancer "google.golang.org/grpc/balancer"

	"github.com/routeguide-cluster/routeguide/internal/testutils"
)

// answeringPicker is a ready child's picker: it picks at once.
type answeringPicker struct{}

func (answeringPicker) Pick(grpcbalancer.PickInfo) (grpcbalancer.PickResult, error) {
	return grpcbalancer.PickResult{}, nil
}

// turnPicker is the picker this package had before picking by load: the
// ready children in turn. It is here to measure what picking by load costs.
type turnPicker struct {
	pickers []grpcbalancer.Picker
	next    atomic.Uint32
}

func (p *turnPicker) Pick(info grpcbalancer.PickInfo) (grpcbalancer.PickResult, error) {
	return p.pickers[int(p.next.Add(1)%uint32(len(p.pickers)))].Pick(info)
}

// threeReady is a picker by load over three ready endpoints, and what to
// pick for.
func threeReady() (*p2cPicker, grpcbalancer.PickInfo) {
	p := &p2cPicker{addrs: []string{"a", "b", "c"}}
	for range p.addrs {
		p.pickers = append(p.pickers, answeringPicker{})
		p.loads = append(p.loads, newLoad(DefaultLatencyDecay))
	}
	return p, grpcbalancer.PickInfo{FullMethodName: "/routeguide.RouteGuide/GetFeature", Ctx: context.Background()}
}

// TestAPickByLoadAllocatesOnce guards the cost BenchmarkPick measures: the
// closure that ends the call is the one allocation of a pick.
func TestAPickByLoadAllocatesOnce(t *testing.T) {
	p, info := threeReady()
	allocs := testing.AllocsPerRun(1000, func() {
		res, _ := p.Pick(info)
		res.Done(grpcbalancer.DoneInfo{})
	})
	if allocs > 1 {
		t.Errorf("a pick and its end allocate %v times, want 1", allocs)
	}
}

// BenchmarkPick is the cost of one pick and its end, over three ready
// endpoints, from as many goroutines as GOMAXPROCS: picking by load against
// the turn it replaced. cpu-ns/op is the process's CPU, which a busy machine
// does not inflate as it does ns/op. A GetFeature call costs the client about 40-70 µs of
// CPU (docs/BENCHMARKS.md), which sets the difference in proportion.
//
//	go test -run '^$' -bench Pick -benchmem -count 5 ./balancer/
func BenchmarkPick(b *testing.B) {
	p2c, info := threeReady()
	three := p2c.pickers
	for _, bc := range []struct {
		name   string
		picker grpcbalancer.Picker
	}{{"policy=turns", &turnPicker{pickers: three}}, {"policy=p2c", p2c}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			cpuBefore := testutils.ProcessCPUTime(b)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					res, err := bc.picker.Pick(info)
					if err != nil {
						b.Error(err)
						return
					}
					if res.Done != nil {
						res.Done(grpcbalancer.DoneInfo{})
					}
				}
			})
			b.ReportMetric(float64(testutils.ProcessCPUTime(b)-cpuBefore)/float64(b.N), "cpu-ns/op")
		})
	}
}
