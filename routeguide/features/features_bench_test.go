package features

import (
	"fmt"
	"math/rand/v2"
	"testing"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
)

// randomDB spreads n features uniformly over the globe.
func randomDB(n int) *DB {
	rng := rand.New(rand.NewPCG(uint64(n), 7))
	list := make([]*pb.Feature, n)
	for i := range list {
		list[i] = feature(fmt.Sprintf("feature %d", i), randomCoordinate(rng, MaxLatitude), randomCoordinate(rng, MaxLongitude))
	}
	return New(list)
}

func BenchmarkAt(b *testing.B) {
	for _, n := range []int{100, 1_000_000} {
		db := randomDB(n)
		b.Run(fmt.Sprintf("features=%d", n), func(b *testing.B) {
			all := db.All()
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				p := all[i%len(all)].Location
				if db.At(p.Latitude, p.Longitude) == nil {
					b.Fatal("known point not found")
				}
			}
		})
	}
}

// BenchmarkWithin queries boxes of a fixed size (1 x 1 degree, about 25
// results at a million features) at random places.
func BenchmarkWithin(b *testing.B) {
	for _, n := range []int{100, 1_000_000} {
		db := randomDB(n)
		rng := rand.New(rand.NewPCG(3, 4))
		b.Run(fmt.Sprintf("features=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			results := 0
			for b.Loop() {
				lat := randomCoordinate(rng, MaxLatitude-1e7)
				lon := randomCoordinate(rng, MaxLongitude-1e7)
				for range db.Within(Rect{MinLat: lat, MinLon: lon, MaxLat: lat + 1e7, MaxLon: lon + 1e7}) {
					results++
				}
			}
			b.ReportMetric(float64(results)/float64(b.N), "features/op")
		})
	}
}

func BenchmarkNew(b *testing.B) {
	list := randomDB(1_000_000).All()
	b.ReportAllocs()
	for b.Loop() {
		New(list)
	}
}

// randomCoordinate is uniform in [-limit, limit].
func randomCoordinate(rng *rand.Rand, limit int64) int32 {
	return int32(rng.Int64N(2*limit+1) - limit)
}
