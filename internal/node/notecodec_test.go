package node

import (
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/testutils/grpctest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/hostile"
)

func TestANoteThatIsNotUTF8IsTheCallersError(t *testing.T) {
	tn := startMetricsNode(t, nil)
	stream, err := tn.conn.NewStream(grpctest.CallContext(t), &grpc.StreamDesc{ClientStreams: true, ServerStreams: true},
		pb.RouteGuide_RouteChat_FullMethodName, grpc.ForceCodec(hostile.RawCodec{}))
	if err != nil {
		t.Fatal(err)
	}
	sent := hostile.NoteNotUTF8()
	if err := stream.SendMsg(&sent); err != nil {
		t.Fatal(err)
	}
	var answer []byte
	err = stream.RecvMsg(&answer)
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a note that is not UTF-8 ended the chat with %v, want InvalidArgument", err)
	}
	families := scrape(t, tn.MetricsAddr())
	for code, want := range map[codes.Code]float64{codes.InvalidArgument: 1, codes.Internal: 0} {
		if got := value(families, "grpc_server_handled_total", rpcCode("RouteChat", code)); got != want {
			t.Errorf("RouteChat calls counted %v: %v, want %v", code, got, want)
		}
	}
	records := tn.logs.records(t, "finished call")
	if len(records) == 0 || records[len(records)-1]["level"] != "INFO" {
		t.Errorf("the chat's call record is %v, want one at INFO", records)
	}
}

func TestNoteCodecLetsOnlyANoteMessageThatIsNotUTF8Through(t *testing.T) {
	codec := noteCodec{encoding.GetCodecV2(proto.Name)}
	decode := func(data []byte, v any) error { return codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(data)}, v) }

	var note pb.RouteNote
	if err := decode(hostile.NoteNotUTF8(), &note); err != nil {
		t.Fatalf("a note that is not UTF-8: %v, want it decoded", err)
	}
	if note.Message != "h\xff\xfei" || note.GetLocation().GetLatitude() != 1 || note.GetLocation().GetLongitude() != 1 {
		t.Errorf("decoded %v, want (1, 1) with the message's bytes as they came", &note)
	}
	cut := hostile.NoteNotUTF8()
	if err := decode(cut[:len(cut)-1], &note); err == nil {
		t.Error("a note cut short decoded, want an error")
	}
	// A Feature's name is a string too, but only notes are the service's to check.
	feature := protowire.AppendTag(nil, 1, protowire.BytesType)
	feature = protowire.AppendBytes(feature, []byte{0xff})
	if err := decode(feature, new(pb.Feature)); err == nil {
		t.Error("a feature whose name is not UTF-8 decoded, want an error")
	}
}
