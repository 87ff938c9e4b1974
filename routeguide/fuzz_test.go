package routeguide_test

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/routeguide"
	"github.com/routeguide-cluster/routeguide/routeguide/features"
	"github.com/routeguide-cluster/routeguide/routeguide/notes"
)

// FuzzGetFeatureRequest feeds GetFeature any bytes a client could send as a
// Point: what does not decode is refused by gRPC before the handler; what
// does is answered OK when it lies on the globe and INVALID_ARGUMENT
// otherwise, never with a panic or another code.
func FuzzGetFeatureRequest(f *testing.F) {
	for _, p := range []*pb.Point{
		{Latitude: 409146138, Longitude: -746188906},
		{Latitude: 900000001},
		{Longitude: -1800000001},
		{},
	} {
		data, err := proto.Marshal(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte{0x08, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x99})
	server := routeguide.NewServer(routeguide.Config{Features: features.Default(), Notes: notes.NewMemory(notes.Limits{})})
	f.Fuzz(func(t *testing.T, data []byte) {
		var point pb.Point
		if proto.Unmarshal(data, &point) != nil {
			return
		}
		feature, err := server.GetFeature(context.Background(), &point)
		onGlobe := features.CheckCoordinates(point.Latitude, point.Longitude) == nil
		switch {
		case onGlobe && err != nil:
			t.Fatalf("(%d, %d) is on the globe, got %v", point.Latitude, point.Longitude, err)
		case onGlobe && (feature.GetLocation().GetLatitude() != point.Latitude || feature.GetLocation().GetLongitude() != point.Longitude):
			t.Fatalf("(%d, %d) answered with a feature at %v", point.Latitude, point.Longitude, feature.GetLocation())
		case !onGlobe && status.Code(err) != codes.InvalidArgument:
			t.Fatalf("(%d, %d) is off the globe, got %v", point.Latitude, point.Longitude, err)
		}
	})
}
