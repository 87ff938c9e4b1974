// Package canonical is the baseline our benchmarks compare against: a
// RouteGuide server that does what the canonical Go example server does,
// scanning every feature and comparing points with proto.Equal.
package canonical

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
)

// Server serves GetFeature and ListFeatures from Features by linear scans.
type Server struct {
	pb.UnimplementedRouteGuideServer
	Features []*pb.Feature
}

// GetFeature returns the first feature at point, or an unnamed feature there.
func (s *Server) GetFeature(_ context.Context, point *pb.Point) (*pb.Feature, error) {
	for _, feature := range s.Features {
		if proto.Equal(feature.Location, point) {
			return feature, nil
		}
	}
	return &pb.Feature{Location: point}, nil
}

// ListFeatures streams every feature inside rect, edges included.
func (s *Server) ListFeatures(rect *pb.Rectangle, stream pb.RouteGuide_ListFeaturesServer) error {
	for _, feature := range s.Features {
		if inRange(feature.Location, rect) {
			if err := stream.Send(feature); err != nil {
				return err
			}
		}
	}
	return nil
}

func inRange(point *pb.Point, rect *pb.Rectangle) bool {
	left := math.Min(float64(rect.Lo.Longitude), float64(rect.Hi.Longitude))
	right := math.Max(float64(rect.Lo.Longitude), float64(rect.Hi.Longitude))
	top := math.Max(float64(rect.Lo.Latitude), float64(rect.Hi.Latitude))
	bottom := math.Min(float64(rect.Lo.Latitude), float64(rect.Hi.Latitude))
	return float64(point.Longitude) >= left && float64(point.Longitude) <= right &&
		float64(point.Latitude) >= bottom && float64(point.Latitude) <= top
}

// WriteFeatures writes list as a features file in the canonical format (the
// examples' route_guide_db.json: location and name) in tb's temporary
// directory, and returns its path.
func WriteFeatures(tb testing.TB, list []*pb.Feature) string {
	tb.Helper()
	type location struct {
		Latitude  int32 `json:"latitude"`
		Longitude int32 `json:"longitude"`
	}
	type entry struct {
		Location location `json:"location"`
		Name     string   `json:"name"`
	}
	entries := make([]entry, len(list))
	for i, f := range list {
		entries[i] = entry{location{f.Location.Latitude, f.Location.Longitude}, f.Name}
	}
	data, err := json.Marshal(entries)
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(tb.TempDir(), "features.json")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		tb.Fatal(err)
	}
	return path
}
