package node

import (
	"unicode/utf8"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	protobuf "google.golang.org/protobuf/proto"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
)

// noteCodec is the codec it wraps, except that a RouteNote whose message is
// not valid UTF-8 still decodes, with those bytes as its message.
//
// Protobuf refuses such a string, and gRPC then fails the call itself with
// INTERNAL, before the service sees it: a server fault, logged and counted
// as one, though the bytes are the client's. Decoded, the note reaches the
// service, which answers INVALID_ARGUMENT (TestANoteThatIsNotUTF8IsTheCallersError).
type noteCodec struct {
	encoding.CodecV2
}

// noteMessageField is the field number of RouteNote.message.
var noteMessageField = (&pb.RouteNote{}).ProtoReflect().Descriptor().Fields().ByName("message").Number()

// Unmarshal implements encoding.CodecV2.
func (c noteCodec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.CodecV2.Unmarshal(data, v)
	note, isNote := v.(*pb.RouteNote)
	if err == nil || !isNote {
		return err
	}
	// Decode the rest without the message, then put its bytes back as they are.
	var rest, message []byte
	for b := data.Materialize(); len(b) > 0; {
		num, typ, tagLen := protowire.ConsumeTag(b)
		if tagLen < 0 {
			return err
		}
		valueLen := protowire.ConsumeFieldValue(num, typ, b[tagLen:])
		if valueLen < 0 {
			return err
		}
		if num == noteMessageField && typ == protowire.BytesType {
			message, _ = protowire.ConsumeBytes(b[tagLen:])
		} else {
			rest = append(rest, b[:tagLen+valueLen]...)
		}
		b = b[tagLen+valueLen:]
	}
	if message == nil || utf8.Valid(message) {
		return err // broken in another way
	}
	if protobuf.Unmarshal(rest, note) != nil {
		return err
	}
	note.Message = string(message)
	return nil
}
