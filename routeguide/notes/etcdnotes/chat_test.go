package etcdnotes_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/localetcd"
	"github.com/routeguide-cluster/routeguide/internal/testutils/grpctest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/poll"
	"github.com/routeguide-cluster/routeguide/routeguide"
	"github.com/routeguide-cluster/routeguide/routeguide/features"
	"github.com/routeguide-cluster/routeguide/routeguide/notes"
	"github.com/routeguide-cluster/routeguide/routeguide/notes/notestest"
)

// serveNotes serves RouteGuide over store on a real gRPC server on
// 127.0.0.1:0, as one node does, and returns a client of it. Both are
// stopped by t's cleanup.
func serveNotes(t *testing.T, store notes.Store) pb.RouteGuideClient {
	t.Helper()
	srv := grpc.NewServer()
	pb.RegisterRouteGuideServer(srv, routeguide.NewServer(routeguide.Config{Features: features.Default(), Notes: store}))
	return pb.NewRouteGuideClient(grpctest.Dial(t, grpctest.Serve(t, srv)))
}

// chat sends one note on stream and receives the answer of want's length.
func chat(t *testing.T, stream pb.RouteGuide_RouteChatClient, sent *pb.RouteNote, want []string) {
	t.Helper()
	if err := stream.Send(sent); err != nil {
		t.Fatalf("send %q: %v", sent.Message, err)
	}
	got := make([]string, 0, len(want))
	for range want {
		n, err := stream.Recv()
		if err != nil {
			t.Fatalf("receive the answer to %q after %q: %v", sent.Message, got, err)
		}
		got = append(got, n.Message)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("answer to %q = %q, want %q", sent.Message, got, want)
	}
}

// TestRouteChatThroughTwoNodesAnswersInOnePostingOrder is the test of
// a shared RouteChat: two clients on two nodes see each other's notes in one
// order; with etcd down a chat fails with Unavailable, and when etcd is back
// the notes from before are there.
func TestRouteChatThroughTwoNodesAnswersInOnePostingOrder(t *testing.T) {
	dir := t.TempDir()
	etcd, err := localetcd.Start(localetcd.Config{Dir: dir, ClientAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { etcd.Close() })
	addr := etcd.ClientAddr()
	cfg := testConfig(t)
	cfg.Timeout = time.Second
	nodes := []pb.RouteGuideClient{
		serveNotes(t, newEtcd(t, newClient(t, etcd.ClientURL()), cfg)),
		serveNotes(t, newEtcd(t, newClient(t, etcd.ClientURL()), cfg)),
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	streams := make([]pb.RouteGuide_RouteChatClient, len(nodes))
	for i, node := range nodes {
		if streams[i], err = node.RouteChat(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var order []string
	for i := range 6 {
		msg := fmt.Sprintf("note %d through node %d", i, i%2)
		order = append(order, msg)
		chat(t, streams[i%2], notestest.Note(404000000, -740000000, msg), order)
	}

	etcd.Close()
	if err := streams[0].Send(notestest.Note(404000000, -740000000, "while etcd is down")); err != nil {
		t.Fatal(err)
	}
	_, err = streams[0].Recv()
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("chat while etcd is down: %v, want Unavailable", err)
	}

	if etcd, err = localetcd.Start(localetcd.Config{Dir: dir, ClientAddr: addr}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Close)
	poll.Until(t, 20*time.Second, "a chat through node 1 once etcd is back", func() bool {
		stream, err := nodes[1].RouteChat(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer stream.CloseSend()
		if err := stream.Send(notestest.Note(404000000, -740000000, "back")); err != nil {
			t.Fatal(err)
		}
		var got []string
		for {
			n, err := stream.Recv()
			if status.Code(err) == codes.Unavailable {
				return false
			}
			if err != nil {
				t.Fatalf("chat once etcd is back: %v", err)
			}
			if got = append(got, n.Message); n.Message == "back" {
				break
			}
		}
		if want := append(slices.Clone(order), "back"); !slices.Equal(got, want) {
			t.Fatalf("once etcd is back the answer is %q, want %q", got, want)
		}
		return true
	})
	chat(t, streams[1], notestest.Note(404000000, -740000000, "on the old stream"), append(order, "back", "on the old stream"))
}
