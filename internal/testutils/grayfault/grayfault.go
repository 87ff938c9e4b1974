// Package grayfault makes a gRPC server slow or failing on RouteGuide's
// calls while it stays up and SERVING, for gray-failure tests: interceptors
// that a test-support node adds, never a flag of the product's node.
package grayfault

import (
	"bufio"
	"context"
	"io"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
)

// Fault is what every RouteGuide call meets; other services (health, xDS,
// reflection) are untouched, so the node looks healthy.
type Fault struct {
	// Delay holds each call that long before its handler runs.
	Delay time.Duration
	// FailPercent of the calls fail UNAVAILABLE, spread evenly (never
	// more than one in a row below 50%).
	FailPercent int

	calls atomic.Int64
	off   atomic.Bool // the zero Fault is on
}

// Switch turns the fault on or off.
func (f *Fault) Switch(on bool) { f.off.Store(!on) }

// FollowSwitches switches the fault at each line of r, "on" or "off",
// until r ends; the process that runs a node feeds them through its stdin.
func (f *Fault) FollowSwitches(r io.Reader) {
	lines := bufio.NewScanner(r)
	for lines.Scan() {
		switch strings.TrimSpace(lines.Text()) {
		case "on":
			f.Switch(true)
		case "off":
			f.Switch(false)
		}
	}
}

// ServerOptions are the interceptors of f, chained after the server's own.
func (f *Fault) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(f.unary), grpc.ChainStreamInterceptor(f.stream)}
}

func (f *Fault) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := f.meet(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (f *Fault) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := f.meet(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return handler(srv, ss)
}

// meet applies the fault to a call of method.
func (f *Fault) meet(ctx context.Context, method string) error {
	if f.off.Load() || !strings.HasPrefix(method, "/"+pb.RouteGuide_ServiceDesc.ServiceName+"/") {
		return nil
	}
	if f.FailPercent > 0 {
		// Call n fails when the count of failures due, n*p/100, steps up.
		n := f.calls.Add(1)
		if n*int64(f.FailPercent)/100 != (n-1)*int64(f.FailPercent)/100 {
			return status.Errorf(codes.Unavailable, "grayfault: %d%% of calls fail", f.FailPercent)
		}
	}
	if f.Delay > 0 {
		timer := time.NewTimer(f.Delay)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
	return nil
}
