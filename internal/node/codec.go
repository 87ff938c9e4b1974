package node

import (
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	protobuf "google.golang.org/protobuf/proto"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/routeguide/features"
)

// featureCodec is gRPC's proto codec, except that the features of the
// node's database go out as bytes encoded once, when the node starts: the
// same bytes proto.Marshal makes, without its cost on every call. Everything
// else goes through gRPC's codec. See docs/DESIGN.md, "Features encoded once".
type featureCodec struct {
	encoding.CodecV2
	encoded map[*pb.Feature]mem.BufferSlice
}

func newFeatureCodec(db *features.DB) *featureCodec {
	c := &featureCodec{
		CodecV2: noteCodec{encoding.GetCodecV2(proto.Name)},
		encoded: make(map[*pb.Feature]mem.BufferSlice, db.Len()),
	}
	for _, f := range db.All() {
		data, err := protobuf.Marshal(f)
		if err != nil {
			// A name that is not UTF-8: left to gRPC's codec, which
			// fails the call with the same error.
			continue
		}
		// A SliceBuffer is never returned to a pool (its Free does
		// nothing), and gRPC only reads what it sends, so one slice can
		// serve every call at once.
		c.encoded[f] = mem.BufferSlice{mem.SliceBuffer(data)}
	}
	return c
}

// Marshal returns the feature's bytes when v is one of the database's
// features, and what gRPC's proto codec makes of v otherwise.
func (c *featureCodec) Marshal(v any) (mem.BufferSlice, error) {
	if f, ok := v.(*pb.Feature); ok {
		if data, ok := c.encoded[f]; ok {
			return data, nil
		}
	}
	return c.CodecV2.Marshal(v)
}
