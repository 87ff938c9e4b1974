package node

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/routeguide-cluster/routeguide/internal/testutils/grpctest"
	"github.com/routeguide-cluster/routeguide/routeguide/contract"
)

// faultyService is a test service whose calls end as their request says:
// "ok", "invalid" (InvalidArgument), "internal" (Internal) or "panic".
var faultyService = grpc.ServiceDesc{
	ServiceName: "routeguide.test.Faulty",
	HandlerType: (*any)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Unary", Handler: endingAs(behave)}},
	Streams: []grpc.StreamDesc{{
		StreamName: "Stream", Handler: echoUntil(behave), ServerStreams: true, ClientStreams: true,
	}},
}

const (
	faultyUnaryMethod  = "/routeguide.test.Faulty/Unary"
	faultyStreamMethod = "/routeguide.test.Faulty/Stream"
)

func registerFaulty(s *grpc.Server) { s.RegisterService(&faultyService, struct{}{}) }

// endingAs is a unary handler that answers its request with itself, or
// with the error that end, given the request, returns.
func endingAs(end func(string) error) grpc.MethodHandler {
	return func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
		req := new(wrapperspb.StringValue)
		if err := dec(req); err != nil {
			return nil, err
		}
		handler := func(_ context.Context, req any) (any, error) {
			return req, end(req.(*wrapperspb.StringValue).GetValue())
		}
		if interceptor == nil {
			return handler(ctx, req)
		}
		method, _ := grpc.Method(ctx)
		return interceptor(ctx, req, &grpc.UnaryServerInfo{Server: srv, FullMethod: method}, handler)
	}
}

// echoUntil is a stream handler that answers each request with itself until
// end, given the request, returns an error, and ends with that error.
func echoUntil(end func(string) error) grpc.StreamHandler {
	return func(_ any, stream grpc.ServerStream) error {
		for {
			req := new(wrapperspb.StringValue)
			if err := stream.RecvMsg(req); err == io.EOF {
				return nil
			} else if err != nil {
				return err
			}
			if err := end(req.GetValue()); err != nil {
				return err
			}
			if err := stream.SendMsg(req); err != nil {
				return err
			}
		}
	}
}

func behave(what string) error {
	switch what {
	case "ok":
		return nil
	case "invalid":
		return status.Error(codes.InvalidArgument, "asked to be invalid")
	case "internal":
		return status.Error(codes.Internal, "asked to fail")
	case "panic":
		panic("asked to panic")
	}
	return status.Errorf(codes.Unimplemented, "no behaviour %q", what)
}

// callFaulty makes one call to the faulty service, unary or streaming, and
// returns its header and trailer together, and its error.
func callFaulty(t *testing.T, conn *grpc.ClientConn, method, what string) (metadata.MD, error) {
	t.Helper()
	ctx := grpctest.CallContext(t)
	req, resp := wrapperspb.String(what), new(wrapperspb.StringValue)
	if method == faultyUnaryMethod {
		var header, trailer metadata.MD
		err := conn.Invoke(ctx, method, req, resp, grpc.Header(&header), grpc.Trailer(&trailer))
		return metadata.Join(header, trailer), err
	}
	stream, err := conn.NewStream(ctx, &faultyService.Streams[0], method)
	if err != nil {
		return nil, err
	}
	if err := stream.SendMsg(req); err != nil {
		return nil, err
	}
	if err := stream.CloseSend(); err != nil {
		return nil, err
	}
	for err == nil {
		err = stream.RecvMsg(resp)
	}
	if err == io.EOF {
		err = nil
	}
	header, _ := stream.Header()
	return metadata.Join(header, stream.Trailer()), err
}

func TestPanicBecomesInternalNamingMethodAndNode(t *testing.T) {
	tn := startNode(t, nil, registerFaulty)
	for _, method := range []string{faultyUnaryMethod, faultyStreamMethod} {
		t.Run(method, func(t *testing.T) {
			before := len(tn.logs.records(t, "handler panicked"))
			header, err := callFaulty(t, tn.conn, method, "panic")
			st := status.Convert(err)
			if st.Code() != codes.Internal || !strings.Contains(st.Message(), method) || !strings.Contains(st.Message(), testNodeID) {
				t.Errorf("panicking call ended with %v, want Internal naming %s and %s", err, method, testNodeID)
			}
			if strings.Contains(st.Message(), "goroutine") || strings.Contains(st.Message(), "asked to panic") {
				t.Errorf("the client was told about the panic itself: %q", st.Message())
			}
			if got := header.Get(contract.NodeHeader); !slices.Equal(got, []string{testNodeID}) {
				t.Errorf("%s header = %q", contract.NodeHeader, got)
			}

			if _, err := callFaulty(t, tn.conn, method, "ok"); err != nil {
				t.Errorf("call after the panic: %v", err)
			}

			records := tn.logs.records(t, "handler panicked")
			if len(records) != before+1 {
				t.Fatalf("%d new panic records, want 1", len(records)-before)
			}
			r := records[len(records)-1]
			stack, _ := r["stack"].(string)
			if r["level"] != "ERROR" || r["grpc.method"] != method || r["panic"] != "asked to panic" || !strings.Contains(stack, "node.behave") {
				t.Errorf("panic record %v, want ERROR with the method, the panic and a stack through node.behave", r)
			}
		})
	}
}

func TestRequestLogLevelSaysWhoseFault(t *testing.T) {
	tn := startNode(t, nil, registerFaulty)
	tests := []struct {
		what      string
		wantCode  codes.Code
		wantLevel string
	}{
		{"ok", codes.OK, "DEBUG"},
		{"invalid", codes.InvalidArgument, "INFO"},
		{"internal", codes.Internal, "ERROR"},
		{"panic", codes.Internal, "ERROR"},
	}
	for _, method := range []string{faultyUnaryMethod, faultyStreamMethod} {
		for _, tt := range tests {
			t.Run(method+"/"+tt.what, func(t *testing.T) {
				before := len(tn.logs.records(t, "finished call"))
				if _, err := callFaulty(t, tn.conn, method, tt.what); status.Code(err) != tt.wantCode {
					t.Fatalf("call ended with %v, want %v", err, tt.wantCode)
				}
				// The record is written before the status goes out.
				records := tn.logs.records(t, "finished call")
				if len(records) != before+1 {
					t.Fatalf("%d new call records, want 1", len(records)-before)
				}
				r := records[len(records)-1]
				if r["level"] != tt.wantLevel || r["grpc.method"] != method || r["grpc.code"] != tt.wantCode.String() {
					t.Errorf("call record %v, want level %s, method %s, code %v", r, tt.wantLevel, method, tt.wantCode)
				}
			})
		}
	}
}

func TestSuccessfulCallsAreNotLoggedAtInfo(t *testing.T) {
	tn := startNode(t, nil, registerFaulty)
	tn.level.Set(slog.LevelInfo)
	for _, method := range []string{faultyUnaryMethod, faultyStreamMethod} {
		if _, err := callFaulty(t, tn.conn, method, "ok"); err != nil {
			t.Fatal(err)
		}
	}
	if records := tn.logs.records(t, "finished call"); len(records) != 0 {
		t.Errorf("successful calls logged at Info: %v", records)
	}
	if _, err := callFaulty(t, tn.conn, faultyUnaryMethod, "invalid"); status.Code(err) != codes.InvalidArgument {
		t.Fatal(err)
	}
	if records := tn.logs.records(t, "finished call"); len(records) != 1 {
		t.Errorf("an invalid call logged %d records at Info, want 1", len(records))
	}
}

func TestRequestLogCostsNothingWhenDisabled(t *testing.T) {
	logger := slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx := context.Background()
	start := time.Now()
	allocs := testing.AllocsPerRun(1000, func() {
		logCall(ctx, logger, faultyUnaryMethod, start, codes.OK, nil)
	})
	if allocs != 0 {
		t.Errorf("a successful call not logged at Info allocates %v times, want 0", allocs)
	}
}
