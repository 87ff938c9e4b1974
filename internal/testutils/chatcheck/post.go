package chatcheck

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/load"
)

// Location is how an op names the point of a note.
func Location(p *pb.Point) string { return fmt.Sprintf("%d,%d", p.GetLatitude(), p.GetLongitude()) }

// Post posts message at point through conn, on a RouteChat stream of its
// own, reads the whole answer, and records the op in r. One note per
// stream is how a client knows where its answer ends: the stream's end.
func (r *Recorder) Post(ctx context.Context, conn grpc.ClientConnInterface, client int, at *pb.Point, message string, retry bool) Op {
	op := Op{Client: client, Location: Location(at), Message: message, Retry: retry, Call: r.Now()}
	answer, node, err := postOnce(ctx, conn, at, message)
	op.Return, op.Outcome, op.Node = r.Now(), OutcomeOf(err), node
	if err != nil {
		op.Code, op.Err = status.Code(err), err.Error()
		if len(answer) > 0 {
			op.Outcome = Partial
		}
	}
	for _, n := range answer {
		if loc := Location(n.GetLocation()); loc != op.Location {
			op.Answer = append(op.Answer, WrongLocation(loc, n.GetMessage()))
		} else {
			op.Answer = append(op.Answer, n.GetMessage())
		}
	}
	r.Add(op)
	return op
}

func postOnce(ctx context.Context, conn grpc.ClientConnInterface, at *pb.Point, message string) ([]*pb.RouteNote, string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var header, trailer metadata.MD
	stream, err := pb.NewRouteGuideClient(conn).RouteChat(ctx, grpc.Header(&header), grpc.Trailer(&trailer))
	if err != nil {
		return nil, "", err
	}
	if err := stream.Send(&pb.RouteNote{Location: at, Message: message}); err != nil {
		// The status is in Recv's error.
		if _, recvErr := stream.Recv(); recvErr != nil {
			err = recvErr
		}
		return nil, load.NodeOf(header, trailer), err
	}
	if err := stream.CloseSend(); err != nil {
		return nil, "", err
	}
	var answer []*pb.RouteNote
	for {
		n, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return answer, load.NodeOf(header, trailer), nil
		}
		if err != nil {
			return answer, load.NodeOf(header, trailer), err
		}
		answer = append(answer, n)
	}
}
