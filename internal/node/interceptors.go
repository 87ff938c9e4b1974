package node

import (
	"context"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/routeguide-cluster/routeguide/routeguide"
)

// nodeHeaderInterceptors put the routeguide-node header on every response,
// errors included (gRPC sends it with the trailers when no message went out).
func nodeHeaderInterceptors(nodeID string) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	header := metadata.Pairs(routeguide.NodeHeader, nodeID)
	unary := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := grpc.SetHeader(ctx, header); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := ss.SetHeader(header); err != nil {
			return err
		}
		return handler(srv, ss)
	}
	return unary, stream
}

// recoveryInterceptors turn a panic in a handler into an Internal status that
// says which method on which node failed, and log the stack, so that a server
// error can be traced to where it came from. The client never sees the stack.
func recoveryInterceptors(logger *slog.Logger, nodeID string) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	handler := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		method, _ := grpc.Method(ctx)
		logger.ErrorContext(ctx, "handler panicked", "grpc.method", method, "panic", p, "stack", string(debug.Stack()))
		return status.Errorf(codes.Internal, "internal error in %s on node %s (logged there)", method, nodeID)
	})
	return recovery.UnaryServerInterceptor(handler), recovery.StreamServerInterceptor(handler)
}

// logInterceptors log every finished call: calls that succeed or that the
// client cancelled at Debug, calls the client got wrong at Info, and failures
// of the server at Error.
//
// We do not use go-grpc-middleware's logging interceptor: it builds its fields
// (with fmt and several slices) on every call before asking the logger whether
// the level is enabled. These interceptors ask first, so a node logging at Info
// pays nothing for its successful calls (TestRequestLogCostsNothingWhenDisabled).
func logInterceptors(logger *slog.Logger) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		logCall(ctx, logger, info.FullMethod, start, err)
		return resp, err
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		start := time.Now()
		err := handler(srv, ss)
		logCall(ss.Context(), logger, info.FullMethod, start, err)
		return err
	}
	return unary, stream
}

func logCall(ctx context.Context, logger *slog.Logger, method string, start time.Time, err error) {
	code := status.Code(err)
	level := levelFor(code)
	if !logger.Enabled(ctx, level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("grpc.method", method),
		slog.String("grpc.code", code.String()),
		slog.Duration("duration", time.Since(start)),
	}
	if err != nil {
		attrs = append(attrs, slog.String("error", status.Convert(err).Message()))
	}
	logger.LogAttrs(ctx, level, "finished call", attrs...)
}

// levelFor says how much an operator cares about a call that ended with code.
func levelFor(code codes.Code) slog.Level {
	switch code {
	case codes.OK, codes.Canceled:
		// A cancelled call is the client's choice: every client that goes
		// away cancels its health watch, which is no news to an operator.
		return slog.LevelDebug
	case codes.InvalidArgument, codes.NotFound, codes.AlreadyExists,
		codes.PermissionDenied, codes.Unauthenticated, codes.ResourceExhausted,
		codes.FailedPrecondition, codes.OutOfRange, codes.DeadlineExceeded:
		return slog.LevelInfo
	default: // Unknown, Internal, Unavailable, DataLoss, Unimplemented, Aborted
		return slog.LevelError
	}
}
