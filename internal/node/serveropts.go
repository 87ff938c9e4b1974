package node

import (
	"google.golang.org/grpc"
)

// streamWorkers is how many goroutines the gRPC server keeps to run calls.
// Without them it starts a goroutine for every call, whose stack then grows
// (runtime.morestack, copystack) on each of them: about a tenth of the
// server's CPU for GetFeature under load. gRPC falls back to a new goroutine
// when every worker is busy, so a small pool never limits concurrency; 64
// covers the calls in flight of a loaded node (idle workers cost a parked
// goroutine each). See docs/BENCHMARKS.md.
const streamWorkers = 64

// TransportOptions are the gRPC server options a node serves with for
// throughput, besides balancer.ServerOptions. They change how calls are run,
// never what they answer.
func TransportOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.NumStreamWorkers(streamWorkers),
	}
}
