package node

import (
	"context"
	"log/slog"
	"runtime/debug"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/routeguide-cluster/routeguide/routeguide/contract"
)

// callInterceptors are the node's one unary and one stream interceptor:
// metrics (nil: none), the routeguide-node header, logCall, recovery from
// a panic, in that order, and a request over bound's size refused (see
// requestBound). One instead of a chain saves gRPC's closure per link. See
// docs/DESIGN.md, "One interceptor for each kind of call".
func callInterceptors(logger *slog.Logger, nodeID string, metrics *grpcMetrics, bound requestBound) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	c := &calls{logger: logger, nodeID: nodeID, metrics: metrics, header: metadata.Pairs(contract.NodeHeader, nodeID), bound: bound}
	return c.unary, c.stream
}

type calls struct {
	logger  *slog.Logger
	nodeID  string
	metrics *grpcMetrics
	header  metadata.MD // sent as it is on every call, never changed
	bound   requestBound
}

// requestBound is the size of a request to any service but one, when the
// gRPC server's own limit (MaxRecvMsgSize, for every service) is set for
// that one: the xDS service takes larger requests than RouteGuide's. Bytes
// 0 checks nothing. A request is measured once decoded, so it is held, up
// to the server's limit, until refused.
type requestBound struct {
	Bytes  int
	Except string // a service's name: its methods are /Except/...
}

// check refuses req, a request of method, when it is over the bound.
func (b requestBound) check(method string, req any) error {
	if b.Bytes == 0 || b.exempt(method) {
		return nil
	}
	m, ok := req.(proto.Message)
	if !ok {
		return nil
	}
	if size := proto.Size(m); size > b.Bytes {
		return status.Errorf(codes.ResourceExhausted, "grpc: received message larger than max (%d vs. %d) for %s", size, b.Bytes, method)
	}
	return nil
}

func (b requestBound) exempt(method string) bool {
	return b.Except != "" && len(method) > len(b.Except)+1 && method[1:len(b.Except)+1] == b.Except && method[len(b.Except)+1] == '/'
}

func (c *calls) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	series := c.metrics.start(info.FullMethod, unaryCall)
	series.messageReceived()
	err := c.bound.check(info.FullMethod, req)
	var resp any
	if err == nil {
		resp, err = c.recoverUnary(ctx, req, info.FullMethod, handler)
	}
	// Sent whole, where grpc.SetHeader would metadata.Join it: the same
	// frames go out, though gRPC may now flush the header in a write of its
	// own. A header the handler set is merged; a handler that called
	// grpc.SendHeader itself would lose this one (the node's call none).
	if err == nil {
		grpc.SendHeader(ctx, c.header)
		series.messageSent()
	} else {
		// A failed call names the node in its trailer: headers would commit
		// the call, and the client could not retry it (gRFC A6).
		grpc.SetTrailer(ctx, c.header)
	}
	c.finished(ctx, info.FullMethod, start, series, err)
	return resp, err
}

// finished logs and counts a call that ended with err, read once as the
// status gRPC sends.
func (c *calls) finished(ctx context.Context, method string, start time.Time, series callSeries, err error) {
	code := callCode(err)
	logCall(ctx, c.logger, method, start, code, err)
	series.handled(code, start)
}

func (c *calls) recoverUnary(ctx context.Context, req any, method string, handler grpc.UnaryHandler) (_ any, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = c.panicked(ctx, method, p)
		}
	}()
	return handler(ctx, req)
}

func (c *calls) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	start := time.Now()
	s := &callStream{ServerStream: ss, header: c.header, series: c.metrics.start(info.FullMethod, streamCallType(info))}
	if !c.bound.exempt(info.FullMethod) {
		s.bound, s.method = c.bound, info.FullMethod
	}
	err := c.recoverStream(srv, s, info.FullMethod, handler)
	if err != nil && !s.headerSent.Load() {
		s.SetTrailer(s.header) // as for a unary call that failed
	} else {
		s.sendHeader()
	}
	c.finished(ss.Context(), info.FullMethod, start, s.series, err)
	return err
}

func (c *calls) recoverStream(srv any, s *callStream, method string, handler grpc.StreamHandler) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = c.panicked(s.Context(), method, p)
		}
	}()
	return handler(srv, s)
}

// panicked logs a handler's panic p, with its stack, and returns the status
// the client gets, which says which method on which node failed.
func (c *calls) panicked(ctx context.Context, method string, p any) error {
	c.logger.ErrorContext(ctx, "handler panicked", "grpc.method", method, "panic", p, "stack", string(debug.Stack()))
	return status.Errorf(codes.Internal, "internal error in %s on node %s (logged there)", method, c.nodeID)
}

// callStream is a stream as its handler sees it: it counts the messages,
// and sends the node header before the first message, or at the end.
type callStream struct {
	grpc.ServerStream
	header metadata.MD
	// headerSent is read by the interceptor while a sender the handler gave
	// up on (an unread RouteChat answer) may still be in SendMsg.
	headerSent atomic.Bool
	series     callSeries
	bound      requestBound // zero for a stream exempt from it
	method     string
}

// sendHeader sends the node header unless it went out already. Sending it
// whole, where SetHeader would merge it into the stream's header, saves
// gRPC's metadata.Join and its allocations on every call. A header the
// handler set is merged by gRPC as before; one the handler sent itself
// through SendHeader below carries the node's too.
func (s *callStream) sendHeader() {
	if s.headerSent.CompareAndSwap(false, true) {
		s.ServerStream.SendHeader(s.header)
	}
}

func (s *callStream) SendHeader(md metadata.MD) error {
	if !s.headerSent.CompareAndSwap(false, true) {
		return s.ServerStream.SendHeader(md) // refused, as gRPC refuses a second one
	}
	return s.ServerStream.SendHeader(metadata.Join(s.header, md))
}

func (s *callStream) SendMsg(m any) error {
	s.sendHeader()
	err := s.ServerStream.SendMsg(m)
	if err == nil {
		s.series.messageSent()
	}
	return err
}

func (s *callStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err == nil {
		s.series.messageReceived()
		err = s.bound.check(s.method, m)
	}
	return err
}

// logCall logs a finished call: calls that succeed or that the client
// cancelled at Debug, calls the client got wrong at Info, and failures of the
// server at Error.
//
// We do not use go-grpc-middleware's logging interceptor: it builds its fields
// (with fmt and several slices) on every call before asking the logger whether
// the level is enabled. logCall asks first, so a node logging at Info pays
// nothing for its successful calls (TestRequestLogCostsNothingWhenDisabled).
func logCall(ctx context.Context, logger *slog.Logger, method string, start time.Time, code codes.Code, err error) {
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

// callCode is the code of the status a handler's err becomes: gRPC sends a
// bare context error as its own code (Canceled, DeadlineExceeded), and so do
// the metrics and the log count it.
func callCode(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	if st, ok := status.FromError(err); ok {
		return st.Code()
	}
	return status.FromContextError(err).Code()
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
