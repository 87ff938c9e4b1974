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

// Flow-control windows: what a client may send before the node reads it, on
// one stream and on its whole connection. Setting them also turns off
// gRPC's window growth (BDP estimation), which would let one connection's
// unread data grow to megabytes.
const (
	streamWindow = 64 << 10
	connWindow   = 512 << 10
)

// requestSlack is what a request may carry beyond a note's message: its
// point, its framing, and unknown fields an older or newer client adds.
const requestSlack = 1 << 10

// boundOptions bound what one client connection can make the node hold
// (docs/OPERATIONS.md's "Bounds" adds them up): its streams, the size of each
// request (no RouteGuide request is larger than a note), and the data
// buffered for it.
func boundOptions(cfg Config) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxConcurrentStreams(uint32(cfg.MaxConcurrentStreams)),
		grpc.MaxRecvMsgSize(min(cfg.MaxMessageBytes, cfg.NoteLimits.MessageBytes+requestSlack)),
		grpc.MaxSendMsgSize(cfg.MaxMessageBytes),
		grpc.InitialWindowSize(streamWindow),
		grpc.InitialConnWindowSize(connWindow),
	}
}
