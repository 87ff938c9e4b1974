package node

import (
	"google.golang.org/grpc"

	"github.com/routeguide-cluster/routeguide/routeguide/features"
)

// streamWorkers is how many goroutines the gRPC server keeps to run calls.
// Without them it starts a goroutine for every call, whose stack then grows
// (runtime.morestack, copystack) on each of them: about a tenth of the
// server's CPU for GetFeature under load. gRPC falls back to a new goroutine
// when every worker is busy, so a small pool never limits concurrency; 64
// covers the calls in flight of a loaded node (idle workers cost a parked
// goroutine each). See docs/BENCHMARKS.md.
const streamWorkers = 64

// TransportOptions are the gRPC server options a node serves the features
// of db with for throughput, besides balancer.ServerOptions. They change how
// calls are run and encoded, never what they answer.
func TransportOptions(db *features.DB) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.NumStreamWorkers(streamWorkers),
		grpc.ForceServerCodecV2(newFeatureCodec(db)), // see codec.go
	}
}
