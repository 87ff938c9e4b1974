package node

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"runtime/debug"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/testutils"
	"github.com/routeguide-cluster/routeguide/internal/testutils/grpctest"
	"github.com/routeguide-cluster/routeguide/routeguide"
	"github.com/routeguide-cluster/routeguide/routeguide/contract"
	"github.com/routeguide-cluster/routeguide/routeguide/features"
	"github.com/routeguide-cluster/routeguide/routeguide/notes"
)

// allocsPerGetFeature serves GetFeature on a server with opts, in this
// process, and returns the heap allocations per call of client and server
// together, over real TCP. metrics, if not nil, learn the server's methods.
func allocsPerGetFeature(t *testing.T, metrics *grpcMetrics, opts ...grpc.ServerOption) float64 {
	t.Helper()
	db := features.Default()
	srv := grpc.NewServer(append(TransportOptions(db), opts...)...)
	addr := serveGRPC(t, srv, routeguide.NewServer(routeguide.Config{Features: db, Notes: notes.NewMemory(notes.Limits{})}))
	if metrics != nil {
		metrics.initialize(srv)
	}
	conn := dial(t, addr)
	t.Cleanup(func() { conn.Close() })
	client := pb.NewRouteGuideClient(conn)
	point := db.All()[7].Location
	ctx := grpctest.CallContext(t)
	call := func() {
		if _, err := client.GetFeature(ctx, point); err != nil {
			t.Fatal(err)
		}
	}
	call() // connects
	// As testing.AllocsPerRun counts, but without rounding down, and with
	// no garbage collection to empty gRPC's pools in the middle.
	const calls = 2000
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range calls {
		call()
	}
	runtime.ReadMemStats(&after)
	return float64(after.Mallocs-before.Mallocs) / calls
}

// The node's interceptors, metrics on and logging at Info, allocate nothing of
// their own on a successful GetFeature: a call costs what it costs through an
// interceptor that only sends the routeguide-node header. (Any interceptor
// costs the generated handler 2 allocations, and the header field 3 more on
// both ends.) go-grpc-middleware's provider and the chain of four added 8
// allocations on the server.
func TestNodeInterceptorsAllocateNothingOnASuccessfulCall(t *testing.T) {
	header := metadata.Pairs(contract.NodeHeader, testNodeID)
	headerOnly := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		grpc.SendHeader(ctx, header)
		return resp, err
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	metrics := newGRPCMetrics(grpcHandlingBuckets)
	unary, stream := callInterceptors(logger, testNodeID, metrics, requestBound{})

	reference := allocsPerGetFeature(t, nil, grpc.UnaryInterceptor(headerOnly))
	node := allocsPerGetFeature(t, metrics, grpc.UnaryInterceptor(unary), grpc.StreamInterceptor(stream))
	t.Logf("allocations per GetFeature, client and server: %.2f with the header only, %.2f with the node's interceptors", reference, node)
	// Slack for gRPC's pools, which the race detector empties at random:
	// go-grpc-middleware's provider, chained before them, would add 3.
	slack := 0.5
	if testutils.RaceEnabled {
		slack = 2.5
	}
	if added := node - reference; added > slack {
		t.Errorf("the node's interceptors allocate %.2f times per GetFeature, want 0", added)
	}
}
