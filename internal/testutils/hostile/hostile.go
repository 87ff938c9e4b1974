// Package hostile sends what well-behaved RouteGuide clients never do, for
// the tests that check a node holds up against it: bytes no generated
// client would encode, and connections from another loopback address, so
// that a node sees them as another peer.
package hostile

import (
	"context"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protowire"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
)

// RawCodec sends and receives *[]byte as they are. Use it with
// grpc.ForceCodec on a stream made with ClientConn.NewStream.
type RawCodec struct{}

// Marshal implements encoding.Codec.
func (RawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }

// Unmarshal implements encoding.Codec.
func (RawCodec) Unmarshal(data []byte, v any) error {
	*v.(*[]byte) = append([]byte(nil), data...)
	return nil
}

// Name implements encoding.Codec: the bytes go out as application/grpc.
func (RawCodec) Name() string { return "proto" }

// NoteNotUTF8 is a RouteNote at (1, 1) whose message holds bytes that are
// not UTF-8, written with protowire: the Go protobuf library refuses to.
func NoteNotUTF8() []byte {
	messageField := (&pb.RouteNote{}).ProtoReflect().Descriptor().Fields().ByName("message").Number()
	location := protowire.AppendTag(nil, 1, protowire.VarintType)
	location = protowire.AppendVarint(location, 1)
	location = protowire.AppendTag(location, 2, protowire.VarintType)
	location = protowire.AppendVarint(location, 1)
	note := protowire.AppendTag(nil, 1, protowire.BytesType)
	note = protowire.AppendBytes(note, location)
	note = protowire.AppendTag(note, messageField, protowire.BytesType)
	return protowire.AppendBytes(note, []byte{'h', 0xff, 0xfe, 'i'})
}

// Dial connects to addr from localIP (127.0.0.2, say: Linux answers every
// 127/8 address on the loopback interface), with gRPC's smallest windows
// and no window growth, so that what the client does not read stays at the
// node. The caller closes the connection.
func Dial(addr, localIP string) (*grpc.ClientConn, error) {
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(localIP)}}
	return grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return dialer.DialContext(ctx, "tcp", addr)
		}))
}
