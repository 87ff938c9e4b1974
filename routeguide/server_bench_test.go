package routeguide_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"google.golang.org/grpc"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/testutils/canonical"
	"github.com/routeguide-cluster/routeguide/routeguide"
	"github.com/routeguide-cluster/routeguide/routeguide/features"
)

// benchSet is a feature list with the boxes that ListFeatures is asked about.
type benchSet struct {
	name  string
	list  []*pb.Feature
	db    *features.DB
	boxes map[string][]*pb.Rectangle // by box kind
}

// smallBoxes returns boxes of 2*half E7 units a side centred on features of
// list, so that each holds a few features.
func smallBoxes(list []*pb.Feature, half int32) []*pb.Rectangle {
	rng := rand.New(rand.NewPCG(5, 6))
	boxes := make([]*pb.Rectangle, 1024)
	for i := range boxes {
		c := list[rng.IntN(len(list))].Location
		boxes[i] = &pb.Rectangle{
			Lo: point(max(c.Latitude-half, -features.MaxLatitude), max(c.Longitude-half, -features.MaxLongitude)),
			Hi: point(min(c.Latitude+half, features.MaxLatitude), min(c.Longitude+half, features.MaxLongitude)),
		}
	}
	return boxes
}

// hundred is the first 100 features of the built-in data set, most of them
// around New York as in the canonical file.
var hundred = sync.OnceValue(func() benchSet {
	list := features.Default().All()[:100]
	return benchSet{
		name: "features=100",
		list: list,
		db:   features.New(list),
		boxes: map[string][]*pb.Rectangle{
			"small": smallBoxes(list, 1_000_000), // 0.2 x 0.2 degrees
			// The box the canonical client asks for.
			"canonical": {{Lo: point(400000000, -750000000), Hi: point(420000000, -730000000)}},
		},
	}
})

// million is a million features spread at random over the globe, built once.
var million = sync.OnceValue(func() benchSet {
	rng := rand.New(rand.NewPCG(1_000_000, 7))
	list := make([]*pb.Feature, 1_000_000)
	for i := range list {
		list[i] = &pb.Feature{Name: fmt.Sprintf("feature %d", i), Location: randomPoint(rng)}
	}
	return benchSet{
		name:  "features=1000000",
		list:  list,
		db:    features.New(list),
		boxes: map[string][]*pb.Rectangle{"small": smallBoxes(list, 2_500_000)}, // 0.5 x 0.5 degrees
	}
})

func benchSets() []benchSet { return []benchSet{hundred(), million()} }

// implementations are the servers compared, built over one feature list.
var implementations = []struct {
	name string
	new  func(set benchSet) pb.RouteGuideServer
}{
	{"routeguide", func(set benchSet) pb.RouteGuideServer { return routeguide.NewServer(config(set.db)) }},
	{"canonical", func(set benchSet) pb.RouteGuideServer { return &canonical.Server{Features: set.list} }},
}

// skipSlow skips, under -short, the canonical server's scans of a million
// features: about 20 ms an operation.
func skipSlow(b *testing.B, set benchSet, impl string) {
	if testing.Short() && impl == "canonical" && len(set.list) > 1000 {
		b.Skip("-short: the canonical scan of a large data set is slow")
	}
}

// hits returns copies of the points of features picked at random in list.
func hits(list []*pb.Feature) []*pb.Point {
	rng := rand.New(rand.NewPCG(3, 4))
	points := make([]*pb.Point, 1024)
	for i := range points {
		at := list[rng.IntN(len(list))].Location
		points[i] = point(at.Latitude, at.Longitude)
	}
	return points
}

func BenchmarkGetFeature(b *testing.B) {
	for _, set := range benchSets() {
		points := hits(set.list)
		for _, impl := range implementations {
			srv := impl.new(set)
			b.Run(fmt.Sprintf("%s/handler/%s", set.name, impl.name), func(b *testing.B) {
				skipSlow(b, set, impl.name)
				ctx := context.Background()
				b.ReportAllocs()
				for i := 0; b.Loop(); i++ {
					p := points[i%len(points)]
					f, err := srv.GetFeature(ctx, p)
					if err != nil || f.Location.Latitude != p.Latitude || f.Location.Longitude != p.Longitude {
						b.Fatalf("GetFeature(%v) = %v, %v", p, f, err)
					}
				}
			})
			b.Run(fmt.Sprintf("%s/grpc/%s", set.name, impl.name), func(b *testing.B) {
				skipSlow(b, set, impl.name)
				client, _ := serve(b, srv)
				ctx := context.Background()
				b.ReportAllocs()
				for i := 0; b.Loop(); i++ {
					if _, err := client.GetFeature(ctx, points[i%len(points)]); err != nil {
						b.Fatalf("GetFeature: %v", err)
					}
				}
			})
		}
	}
}

// countingStream stands for a ListFeatures stream in the handler benchmarks:
// it counts what is sent.
type countingStream struct {
	grpc.ServerStream // nil: the handlers only Send
	sent              int
}

func (s *countingStream) Send(*pb.Feature) error {
	s.sent++
	return nil
}

func BenchmarkListFeatures(b *testing.B) {
	for _, set := range benchSets() {
		for _, kind := range []string{"small", "canonical"} {
			boxes := set.boxes[kind]
			if boxes == nil {
				continue
			}
			for _, impl := range implementations {
				srv := impl.new(set)
				b.Run(fmt.Sprintf("%s/box=%s/handler/%s", set.name, kind, impl.name), func(b *testing.B) {
					skipSlow(b, set, impl.name)
					stream := &countingStream{}
					b.ReportAllocs()
					for i := 0; b.Loop(); i++ {
						if err := srv.ListFeatures(boxes[i%len(boxes)], stream); err != nil {
							b.Fatalf("ListFeatures: %v", err)
						}
					}
					b.ReportMetric(float64(stream.sent)/float64(b.N), "features/op")
				})
				b.Run(fmt.Sprintf("%s/box=%s/grpc/%s", set.name, kind, impl.name), func(b *testing.B) {
					skipSlow(b, set, impl.name)
					client, _ := serve(b, srv)
					ctx := context.Background()
					received := 0
					b.ReportAllocs()
					for i := 0; b.Loop(); i++ {
						got, err := listFeatures(ctx, client, boxes[i%len(boxes)])
						if err != nil {
							b.Fatalf("ListFeatures: %v", err)
						}
						received += len(got)
					}
					b.ReportMetric(float64(received)/float64(b.N), "features/op")
				})
			}
		}
	}
}
