package node

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/protobuf/proto"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/routeguide/features"
)

func TestFeatureCodecEncodesAsProtoDoes(t *testing.T) {
	db := features.Default()
	codec := newFeatureCodec(db)
	if codec.Name() != grpcproto.Name {
		t.Fatalf("codec name %q, want %q: clients send application/grpc+proto or no subtype", codec.Name(), grpcproto.Name)
	}
	stranger := &pb.Feature{Name: "not in the database", Location: &pb.Point{Latitude: 1, Longitude: 2}}
	for _, msg := range append([]proto.Message{stranger, &pb.RouteSummary{PointCount: 3}}, asMessages(db.All())...) {
		got, err := codec.Marshal(msg)
		if err != nil {
			t.Fatalf("Marshal(%v): %v", msg, err)
		}
		want, err := proto.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Materialize(), want) {
			t.Fatalf("Marshal(%v) = %x, want %x as proto.Marshal makes it", msg, got.Materialize(), want)
		}
		decoded := msg.ProtoReflect().New().Interface()
		if err := codec.Unmarshal(got, decoded); err != nil || !proto.Equal(decoded, msg) {
			t.Fatalf("Unmarshal(Marshal(%v)) = %v, %v", msg, decoded, err)
		}
	}
}

func TestFeatureCodecEncodesADatabaseFeatureWithoutAllocating(t *testing.T) {
	db := features.Default()
	codec := newFeatureCodec(db)
	known := db.All()[7]
	if allocs := testing.AllocsPerRun(1000, func() { codec.Marshal(known) }); allocs != 0 {
		t.Errorf("Marshal of a feature of the database: %v allocations, want 0", allocs)
	}
	// What the codec saves every call: gRPC's own codec encodes it again.
	standard := encoding.GetCodecV2(grpcproto.Name)
	if allocs := testing.AllocsPerRun(1000, func() { standard.Marshal(known) }); allocs == 0 {
		t.Errorf("gRPC's proto codec encodes a feature without allocating: the feature codec is no longer needed")
	}
}

func asMessages(list []*pb.Feature) []proto.Message {
	msgs := make([]proto.Message, len(list))
	for i, f := range list {
		msgs[i] = f
	}
	return msgs
}
