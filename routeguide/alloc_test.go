package routeguide_test

import (
	"context"
	"testing"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/testutils"
	"github.com/routeguide-cluster/routeguide/routeguide"
	"github.com/routeguide-cluster/routeguide/routeguide/features"
)

// The allocation guards count, not time: they hold on any machine, and a
// change that puts allocations back on the hot path fails them. Under the
// race detector sync.Pool drops a quarter of the items put back, so
// ListFeatures then allocates its index buffer again (2 allocations, half a
// call's worth on average); the bound of 1 per call allows for that, and
// fails if a new buffer has to grow (TestListFeaturesAllocatesNothingPerMessage
// failed 1 run in 30 that way before the pool's buffers started at 64).

func TestGetFeatureAllocatesNothingForAKnownPoint(t *testing.T) {
	list := features.Default().All()[:100]
	srv := routeguide.NewServer(config(features.New(list)))
	points := hits(list)
	ctx := context.Background()
	i := 0
	allocs := testing.AllocsPerRun(1000, func() {
		i++
		if _, err := srv.GetFeature(ctx, points[i%len(points)]); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("GetFeature of a known point: %v allocations, want 0", allocs)
	}
	unknown := point(1, 1)
	allocs = testing.AllocsPerRun(1000, func() {
		if _, err := srv.GetFeature(ctx, unknown); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 1 {
		t.Errorf("GetFeature of a point without a feature: %v allocations, want at most 1 (the answer)", allocs)
	}
}

func TestListFeaturesAllocatesNothingPerMessage(t *testing.T) {
	list := features.Default().All()[:100]
	srv := routeguide.NewServer(config(features.New(list)))
	rect := &pb.Rectangle{Lo: point(400000000, -750000000), Hi: point(420000000, -730000000)}
	stream := &countingStream{}
	allocs := testing.AllocsPerRun(1000, func() {
		if err := srv.ListFeatures(rect, stream); err != nil {
			t.Fatal(err)
		}
	})
	perCall := 0.0
	if testutils.RaceEnabled {
		perCall = 1
	}
	if allocs > perCall {
		t.Errorf("ListFeatures of %d features: %v allocations, want at most %v per call and none per message", stream.sent/1001, allocs, perCall)
	}
}
