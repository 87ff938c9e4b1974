// Package grpctest serves real gRPC servers on ephemeral ports of 127.0.0.1
// for tests, dials them, and reads their streams.
package grpctest

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Serve serves srv on a free port of 127.0.0.1 until tb ends, and returns its
// address. Serving that ends with an error before Stop fails tb.
func Serve(tb testing.TB, srv *grpc.Server) string {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	tb.Cleanup(func() {
		srv.Stop()
		if err := <-served; err != nil {
			tb.Errorf("serve: %v", err)
		}
	})
	return lis.Addr().String()
}

// Dial returns a connection to addr without TLS, with opts, closed when tb
// ends. Like grpc.NewClient, it does not wait for the connection.
func Dial(tb testing.TB, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	tb.Helper()
	conn, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		tb.Fatalf("dial %s: %v", addr, err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}

// FreeAddr is a loopback address with a port the system just gave and took
// back, for a server in another process that takes an address or a port to
// listen on rather than a listener. Another process may take the port in
// between; on a test machine that is rare enough.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	defer lis.Close()
	return lis.Addr().String()
}

// CallContext bounds a test's calls to 10s, so that a bug fails the test
// instead of hanging it; it ends with the test.
func CallContext(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(tb.Context(), 10*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

// RecvAll receives from a stream (recv is its Recv) until it ends, and
// returns what came, with the error that ended it: nil for io.EOF.
func RecvAll[T any](recv func() (T, error)) ([]T, error) {
	var got []T
	for {
		m, err := recv()
		if errors.Is(err, io.EOF) {
			return got, nil
		}
		if err != nil {
			return got, err
		}
		got = append(got, m)
	}
}
