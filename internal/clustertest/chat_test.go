package clustertest

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/testutils/nodetest"
)

// TestRouteChatOfTwoClientsOnTwoNodesSharesOnePostingOrder guards that the
// cluster answers RouteChat like one server: each client talks to another
// node, and every note posted through one comes back through the other, in
// one posting order.
func TestRouteChatOfTwoClientsOnTwoNodesSharesOnePostingOrder(t *testing.T) {
	cluster := nodetest.StartCluster(t, 2, nodetest.Config(t))
	nodes := cluster.Nodes()
	// A node that kept its notes to itself would leave a client waiting for
	// an answer that never comes: the deadline turns that into a failure.
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var chats [2]pb.RouteGuide_RouteChatClient
	for i, n := range nodes {
		conn, err := grpc.NewClient(n.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		if chats[i], err = pb.NewRouteGuideClient(conn).RouteChat(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// The clients take turns, each posting at the same spot and reading the
	// whole answer before the other posts.
	here := &pb.Point{Latitude: 407838351, Longitude: -746143763}
	var posted []string
	for turn := range 6 {
		client := turn % 2
		message := fmt.Sprintf("note %d from the client of %s", turn, nodes[client].ID())
		if err := chats[client].Send(&pb.RouteNote{Location: here, Message: message}); err != nil {
			t.Fatal(err)
		}
		posted = append(posted, message)
		var answer []string
		for range posted {
			note, err := chats[client].Recv()
			if err != nil {
				t.Fatalf("turn %d: %v", turn, err)
			}
			answer = append(answer, note.GetMessage())
		}
		if !slices.Equal(answer, posted) {
			t.Fatalf("turn %d through %s answered %q, want every note so far in posting order %q", turn, nodes[client].ID(), answer, posted)
		}
	}
	for _, chat := range chats {
		if err := chat.CloseSend(); err != nil {
			t.Error(err)
		}
		if _, err := chat.Recv(); err == nil {
			t.Error("a chat answered more notes than were posted")
		}
	}
}
