package balancer

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Attempt timeouts: gRPC's retry policy never retries DEADLINE_EXCEEDED, so
// a call picked for a node that went silent without a reset would wait out
// its deadline. Each attempt of an idempotent call gets a timeout and is made
// again elsewhere; docs/DESIGN.md ("Attempt timeouts") tells the whole story.

// DefaultAttemptTimeout is how long an attempt of an idempotent call waits
// for its answer, or a ListFeatures stream for its first feature, before the
// call is made again on another node. A node answers in milliseconds; one
// second leaves a loaded node a wide margin, and is what a silent node costs
// a call at most.
const DefaultAttemptTimeout = time.Second

// maxTimedAttempts is how many attempts of a call have a timeout of their
// own: 1, 2 and 4 times the attempt timeout. The next is bounded by the
// caller's deadline only.
const maxTimedAttempts = 3

// WithAttemptTimeout sets the timeout of each attempt of an idempotent call;
// zero or less turns attempt timeouts off, leaving only the retry policy.
func WithAttemptTimeout(d time.Duration) Option {
	return func(o *options) { o.attemptTimeout = d }
}

var errAttemptTimedOut = errors.New("attempt timed out; made again on another node")

// attemptOptions are the interceptors that time attempts out. Where each
// attempt went they learn from this package's policy, whose picker also
// skips the nodes that hung (or failed) on the same call; xds:/// clients get the policy
// from the nodes' xDS servers (discovery/xdsserver, EndpointPolicy). Under
// another policy attempts are still timed and made again, without the skip.
// (Learning where an attempt went without the policy takes a stats handler,
// and any stats handler makes gRPC build every stats event of every call:
// about 20 allocations and 4 µs a call, docs/BENCHMARKS.md, "Our client
// against plain grpc-go".)
func attemptOptions(timeout time.Duration, idempotentMethods []string) []grpc.DialOption {
	if timeout <= 0 || len(idempotentMethods) == 0 {
		return nil
	}
	a := attempts{timeout: timeout, methods: idempotentMethods}
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(a.unary),
		grpc.WithChainStreamInterceptor(a.stream),
	}
}

type attempts struct {
	timeout time.Duration
	methods []string // idempotent, full names
}

func (a attempts) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if !slices.Contains(a.methods, method) {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	c := &call{parent: ctx, base: a.timeout}
	for {
		attemptCtx := c.begin(true)
		err := invoker(attemptCtx, method, req, reply, cc, opts...)
		again, err := c.finish(err)
		if !again {
			return err
		}
	}
}

func (a attempts) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	if !slices.Contains(a.methods, method) || desc.ClientStreams || !desc.ServerStreams {
		return streamer(ctx, desc, cc, method, opts...)
	}
	s := &timedStream{call: &call{parent: ctx, base: a.timeout}}
	opts, s.results = takeResultOptions(opts)
	s.open = func(ctx context.Context) (grpc.ClientStream, error) {
		return streamer(ctx, desc, cc, method, s.results.forAttempt(opts)...)
	}
	if err := s.attempt(); err != nil {
		return nil, err
	}
	return s, nil
}

// call is one idempotent call and its attempts, made one after another.
type call struct {
	parent   context.Context // the caller's
	base     time.Duration
	timedOut int  // attempts that timed out so far
	timed    bool // the attempt in progress has a timeout

	ctx       context.Context // of the attempt in progress
	cancel    context.CancelCauseFunc
	stopTimer func() bool // for a stream: stops its timeout; false once it has fired

	mu   sync.Mutex // the policy's picker reaches the fields below from within the attempt
	peer string     // where the attempt in progress was sent, once it is
	// avoid holds the nodes where an attempt of the call hung (timed out)
	// or failed by the node's fault: its next attempts go elsewhere.
	avoid map[string]bool
}

type callKey struct{}

// begin starts an attempt. A unary attempt's timeout is a deadline; a
// stream's is a timer that stopTimer stops once the first message is in.
func (c *call) begin(unary bool) context.Context {
	ctx := context.WithValue(c.parent, callKey{}, c)
	var cancel context.CancelCauseFunc
	c.stopTimer = noTimer
	d := c.timeout()
	c.timed = d > 0
	switch {
	case c.timed && unary:
		// One context for the deadline and for ending the attempt: each
		// context costs a registration with the caller's, and this runs on
		// every GetFeature.
		var stop context.CancelFunc
		ctx, stop = context.WithTimeoutCause(ctx, d, errAttemptTimedOut)
		cancel = func(error) { stop() }
	case c.timed:
		ctx, cancel = context.WithCancelCause(ctx)
		timer := time.AfterFunc(d, func() { cancel(errAttemptTimedOut) })
		c.stopTimer = timer.Stop
	default:
		ctx, cancel = context.WithCancelCause(ctx)
	}
	c.mu.Lock()
	c.ctx, c.cancel, c.peer = ctx, cancel, ""
	c.mu.Unlock()
	return ctx
}

// noTimer is stopTimer for an attempt without a timer: there is none to fire.
func noTimer() bool { return true }

// timeout is the timeout of the next attempt, 0 for none.
func (c *call) timeout() time.Duration {
	if c.timedOut >= maxTimedAttempts {
		return 0
	}
	return c.base << c.timedOut
}

// again reports whether the attempt that ended with err is to be made again:
// it was cut short by its own timeout while the caller still waits.
func (c *call) again(err error) bool {
	if err == nil || c.parent.Err() != nil {
		return false
	}
	code := status.Code(err)
	if code != codes.DeadlineExceeded && code != codes.Canceled {
		return false
	}
	cause := context.Cause(c.ctx)
	// The node learns a unary attempt's deadline, and may report it passed
	// a moment before the client's own timer fires: a deadline that is not
	// the caller's is the attempt's.
	if cause == errAttemptTimedOut || (code == codes.DeadlineExceeded && c.timed) {
		c.timedOut++
		c.mu.Lock()
		if c.peer != "" {
			c.avoidLocked(c.peer)
		}
		c.mu.Unlock()
		return true
	}
	return false
}

// finish ends the attempt that returned err: it reports whether to make the
// call again, and the error the caller sees if not.
func (c *call) finish(err error) (again bool, callerErr error) {
	again = c.again(err)
	callerErr = c.callerErr(err)
	c.end()
	return again, callerErr
}

// callerErr is what the caller sees of err, an attempt's error: when the
// caller's own context has ended while this interceptor was cutting the
// attempt short, the caller's DEADLINE_EXCEEDED or CANCELED, not the
// attempt's. Call it before end, which changes the attempt's cause.
func (c *call) callerErr(err error) error {
	parentErr := c.parent.Err()
	if err == nil || parentErr == nil {
		return err
	}
	if context.Cause(c.ctx) == errAttemptTimedOut {
		return status.FromContextError(parentErr).Err()
	}
	return err
}

// end releases the attempt's context.
func (c *call) end() {
	c.stopTimer()
	c.cancel(nil)
}

func (c *call) avoidLocked(addr string) {
	if c.avoid == nil {
		c.avoid = map[string]bool{}
	}
	c.avoid[addr] = true
}

// failedOn notes that an attempt failed on addr, for the retry policy's
// next attempt to go elsewhere.
func (c *call) failedOn(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.avoidLocked(addr)
}

// timedStream is a server stream whose attempts are timed until the first
// message. It holds the one request the caller sent, to send it again.
type timedStream struct {
	grpc.ClientStream // the attempt in progress
	*call
	open    func(context.Context) (grpc.ClientStream, error)
	results resultOptions

	req       any
	closeSent bool
	received  bool // the first message (or the end) came: the stream is the caller's
}

// attempt opens streams until one is open or the call gives up.
func (s *timedStream) attempt() error {
	for {
		stream, err := s.open(s.begin(false))
		if err == nil {
			s.ClientStream = stream
			// Errors of these show in RecvMsg, which decides.
			if s.req != nil {
				stream.SendMsg(s.req)
			}
			if s.closeSent {
				stream.CloseSend()
			}
			return nil
		}
		again, err := s.finish(err)
		if !again {
			s.results.deliver()
			return err
		}
	}
}

func (s *timedStream) SendMsg(m any) error {
	if !s.received {
		// gRPC encodes m before SendMsg returns, and so may the caller
		// change it after; another attempt sends the message as it was.
		if pm, ok := m.(proto.Message); ok {
			s.req = proto.Clone(pm)
		} else {
			s.req = m
		}
	}
	return s.ClientStream.SendMsg(m)
}

func (s *timedStream) CloseSend() error {
	s.closeSent = true
	return s.ClientStream.CloseSend()
}

func (s *timedStream) RecvMsg(m any) error {
	if s.received {
		err := s.ClientStream.RecvMsg(m)
		if err != nil {
			s.ended()
		}
		return err
	}
	for {
		err := s.ClientStream.RecvMsg(m)
		// gRPC has ended the attempt, and filled its result options,
		// once its RecvMsg returns an error; an attempt whose timeout fired
		// as its first message came ends later, on gRPC's goroutine.
		attemptEnded := err != nil
		if err == nil || err == io.EOF {
			if s.stopTimer() {
				s.received = true
				if err != nil {
					s.ended()
				}
				return err
			}
			// The timeout fired as the message came, and took the stream
			// with it: make the call again, and m with it. Stop does not
			// wait for the timer's cancel, which again reads as the cause.
			<-s.ctx.Done()
			err = status.Error(codes.Canceled, errAttemptTimedOut.Error())
		}
		again, err := s.finish(err)
		if !again {
			if attemptEnded {
				s.results.deliver()
			}
			return err
		}
		if err := s.attempt(); err != nil {
			return err
		}
	}
}

// ended ends the call once the stream that is the caller's has ended.
func (s *timedStream) ended() {
	s.end()
	s.results.deliver()
}

// resultOptions are the caller's header, trailer and peer options. gRPC
// fills them when a stream ends, on its own goroutine for an attempt that was
// abandoned, which would race with the caller. Each attempt fills its own;
// the caller's get those of the attempt it read, when RecvMsg returns an error.
type resultOptions struct {
	header, trailer *metadata.MD
	peer            *peer.Peer

	attemptHeader, attemptTrailer *metadata.MD
	attemptPeer                   *peer.Peer
}

// takeResultOptions returns opts without the caller's result options, and
// those options.
func takeResultOptions(opts []grpc.CallOption) ([]grpc.CallOption, resultOptions) {
	var r resultOptions
	kept := opts[:0:0]
	for _, o := range opts {
		switch o := o.(type) {
		case grpc.HeaderCallOption:
			r.header = o.HeaderAddr
		case grpc.TrailerCallOption:
			r.trailer = o.TrailerAddr
		case grpc.PeerCallOption:
			r.peer = o.PeerAddr
		default:
			kept = append(kept, o)
		}
	}
	return kept, r
}

// forAttempt returns opts, the caller's options without its result options,
// and result options that fill fresh values only this attempt writes. The
// slice is the attempt's own: gRPC reads it again when the attempt ends.
func (r *resultOptions) forAttempt(opts []grpc.CallOption) []grpc.CallOption {
	opts = slices.Clip(opts)
	r.attemptHeader, r.attemptTrailer, r.attemptPeer = nil, nil, nil
	if r.header != nil {
		r.attemptHeader = new(metadata.MD)
		opts = append(opts, grpc.Header(r.attemptHeader))
	}
	if r.trailer != nil {
		r.attemptTrailer = new(metadata.MD)
		opts = append(opts, grpc.Trailer(r.attemptTrailer))
	}
	if r.peer != nil {
		r.attemptPeer = new(peer.Peer)
		opts = append(opts, grpc.Peer(r.attemptPeer))
	}
	return opts
}

// deliver gives the caller the last attempt's results. gRPC has filled them
// by the time that attempt's end reached the caller: it fills them while it
// holds the lock that ending the stream takes.
func (r *resultOptions) deliver() {
	if r.header != nil && r.attemptHeader != nil {
		*r.header = *r.attemptHeader
	}
	if r.trailer != nil && r.attemptTrailer != nil {
		*r.trailer = *r.attemptTrailer
	}
	if r.peer != nil && r.attemptPeer != nil {
		*r.peer = *r.attemptPeer
	}
}
