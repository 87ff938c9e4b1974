package node

import (
	"context"
	"log/slog"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/testutils/cputime"
)

// BenchmarkNodeGetFeature measures a standalone node's GetFeature throughput
// over real TCP, with the metrics listener (and so the gRPC metrics
// interceptors) off and on. ns/op is the inverse of throughput: on/off
// throughput is ns/op(off) / ns/op(on). cpu-ns/op is the CPU time the
// process (client and node) spent per call; on a machine that other work
// shares, it measures the cost of a call better than ns/op does.
//
//	go test -run '^$' -bench NodeGetFeature -count 6 ./internal/node/
func BenchmarkNodeGetFeature(b *testing.B) {
	for _, bc := range []struct {
		name          string
		metricsListen string
	}{
		{"metrics=off", ""},
		{"metrics=on", "127.0.0.1:0"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			client := benchNode(b, bc.metricsListen)
			point := knownPoint(b)
			ctx := context.Background()
			if _, err := client.GetFeature(ctx, point); err != nil { // connects
				b.Fatal(err)
			}
			b.ReportAllocs()
			// Enough calls in flight to keep every CPU busy: throughput, not
			// the latency of one call at a time.
			b.SetParallelism(16)
			b.ResetTimer()
			cpuBefore := cputime.Process(b)
			b.RunParallel(func(p *testing.PB) {
				for p.Next() {
					if _, err := client.GetFeature(ctx, point); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(cputime.Process(b)-cpuBefore)/float64(b.N), "cpu-ns/op")
		})
	}
}

// benchNode runs a standalone node as `node --etcd=` runs it, logging at
// Info to nowhere, and returns a client of it; both stop when b ends.
func benchNode(b *testing.B, metricsListen string) pb.RouteGuideClient {
	b.Helper()
	n := startBenchNode(b, metricsListen, "")
	conn, err := grpc.NewClient(n.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return pb.NewRouteGuideClient(conn)
}

// BenchmarkGRPCMetricsInterceptor is what the gRPC metrics add to one unary
// call on the node, around a handler that does nothing: go-grpc-middleware's
// provider (library), which the node once used, and the node's own,
// as the difference between its interceptor with them (node) and without
// (node-off).
// Compared with the cpu-ns/op of BenchmarkNodeGetFeature, it tells how much
// of the difference between metrics=off and metrics=on the metrics cost.
//
//	go test -run '^$' -bench GRPCMetricsInterceptor -count 6 ./internal/node/
func BenchmarkGRPCMetricsInterceptor(b *testing.B) {
	info := &grpc.UnaryServerInfo{FullMethod: pb.RouteGuide_GetFeature_FullMethodName}
	handler := func(context.Context, any) (any, error) { return nil, nil }
	ctx := context.Background()
	server := grpc.NewServer()
	pb.RegisterRouteGuideServer(server, pb.UnimplementedRouteGuideServer{})

	b.Run("metrics=library", func(b *testing.B) {
		library := newLibraryGRPCMetrics()
		library.InitializeMetrics(server)
		interceptor := library.UnaryServerInterceptor()
		b.ReportAllocs()
		b.RunParallel(func(p *testing.PB) {
			for p.Next() {
				interceptor(ctx, nil, info, handler)
			}
		})
	})
	// The node's metrics are measured inside its interceptor, against the
	// same interceptor without them: the difference is what they cost.
	for _, on := range []bool{false, true} {
		name := "metrics=node-off"
		var m *grpcMetrics
		if on {
			name = "metrics=node"
			m = newGRPCMetrics(grpcHandlingBuckets)
			m.initialize(server)
		}
		b.Run(name, func(b *testing.B) {
			interceptor, _ := callInterceptors(slog.New(slog.DiscardHandler), testNodeID, m)
			b.ReportAllocs()
			b.RunParallel(func(p *testing.PB) {
				for p.Next() {
					interceptor(ctx, nil, info, handler)
				}
			})
		})
	}
}
