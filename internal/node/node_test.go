package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/routeguide-cluster/routeguide/balancer"
	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/testutils"
	"github.com/routeguide-cluster/routeguide/internal/testutils/grayfault"
	"github.com/routeguide-cluster/routeguide/internal/testutils/grpctest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/poll"
	"github.com/routeguide-cluster/routeguide/routeguide/contract"
)

const testNodeID = "test-node"

// testNode is a standalone node on an ephemeral port, with its logs captured
// as JSON and a client connection to it.
type testNode struct {
	*Node
	logs  *logBuffer
	level *slog.LevelVar // Debug unless a test raises it
	conn  *grpc.ClientConn

	cancel   context.CancelFunc
	done     chan struct{} // closed when Run returns
	runErr   error         // what Run returned, once done is closed
	stopOnce sync.Once
}

// newTestNode makes a node, not yet running, from a test configuration changed
// by configure, with the services of register added. Its cleanup stops the
// node and fails the test if any goroutine started since is still running.
func newTestNode(t *testing.T, configure func(*Config), register func(*grpc.Server)) *testNode {
	t.Helper()
	before := testutils.GoroutineStacks()
	tn := &testNode{logs: new(logBuffer), level: new(slog.LevelVar), done: make(chan struct{})}
	tn.level.Set(slog.LevelDebug)
	cfg := DefaultConfig()
	cfg.NodeID = testNodeID
	cfg.Listen = "127.0.0.1:0"
	cfg.Etcd = nil
	cfg.MetricsListen = ""
	cfg.DrainDelay = 0
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.Logger = slog.New(slog.NewJSONHandler(tn.logs, &slog.HandlerOptions{Level: tn.level}))
	if configure != nil {
		configure(&cfg)
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tn.Node = n
	if register != nil {
		register(n.server)
	}
	t.Cleanup(func() {
		if tn.conn != nil {
			tn.conn.Close()
		}
		if tn.cancel == nil { // never run: nothing but the listener to release
			n.listener.Close()
		} else if err := tn.stop(t); err != nil {
			t.Errorf("Run: %v", err)
		}
		checkNoGoroutinesLeft(t, before)
	})
	return tn
}

// start starts Run; cancel stops it and done closes when it has returned.
func (tn *testNode) start() {
	ctx, cancel := context.WithCancel(context.Background())
	tn.cancel = cancel
	go func() {
		tn.runErr = tn.Run(ctx)
		close(tn.done)
	}()
}

// run starts Run, waits until the node is ready and connects to it.
func (tn *testNode) run(t *testing.T) {
	t.Helper()
	tn.start()
	select {
	case <-tn.Ready():
	case <-tn.done:
		t.Fatalf("Run returned before the node was ready: %v", tn.runErr)
	case <-time.After(10 * time.Second):
		t.Fatal("node not ready after 10s")
	}
	tn.conn = dial(t, tn.Addr().String())
}

// startNode is newTestNode and run.
func startNode(t *testing.T, configure func(*Config), register func(*grpc.Server)) *testNode {
	t.Helper()
	tn := newTestNode(t, configure, register)
	tn.run(t)
	return tn
}

// stop cancels the node's context and returns what Run returned.
func (tn *testNode) stop(t *testing.T) error {
	t.Helper()
	tn.stopOnce.Do(tn.cancel)
	select {
	case <-tn.done:
		return tn.runErr
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return 30s after its context ended")
		return nil
	}
}

func (tn *testNode) client() pb.RouteGuideClient { return pb.NewRouteGuideClient(tn.conn) }

func dial(t *testing.T, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// logBuffer collects the JSON records of a slog.JSONHandler.
type logBuffer struct{ testutils.SyncBuffer }

// records returns every record logged so far whose msg is msg.
func (b *logBuffer) records(t *testing.T, msg string) []map[string]any {
	t.Helper()
	var found []map[string]any
	for line := range bytes.Lines([]byte(b.String())) {
		var r map[string]any
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if r["node_id"] != testNodeID {
			t.Errorf("log record without node_id %s: %s", testNodeID, line)
		}
		if r["msg"] == msg {
			found = append(found, r)
		}
	}
	return found
}

// checkNoGoroutinesLeft fails t if goroutines that were not in before are
// still running after a few seconds' grace to finish.
func checkNoGoroutinesLeft(t *testing.T, before map[string]string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var left []string
		for id, stack := range testutils.GoroutineStacks() {
			if _, ok := before[id]; !ok {
				left = append(left, stack)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%d goroutines left behind:\n\n%s", len(left), strings.Join(left, "\n\n"))
			return
		}
		time.Sleep(5 * time.Millisecond) // polling interval of a loop bounded by deadline
	}
}

// writeFeatures writes a features file with the given names, at (i+1, i+1)
// for the i-th, and returns its path.
func writeFeatures(t *testing.T, names ...string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("[\n")
	for i, name := range names {
		if i > 0 {
			b.WriteString(",\n")
		}
		fmt.Fprintf(&b, `{"location": {"latitude": %d, "longitude": %d}, "name": %q}`, i+1, i+1, name)
	}
	b.WriteString("\n]\n")
	path := filepath.Join(t.TempDir(), "features.json")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestEveryResponseNamesTheNode(t *testing.T) {
	tn := startNode(t, nil, nil)
	client := tn.client()
	tests := []struct {
		name     string
		call     func(ctx context.Context) (metadata.MD, error)
		wantCode codes.Code
	}{
		{"unary", func(ctx context.Context) (metadata.MD, error) {
			var header metadata.MD
			_, err := client.GetFeature(ctx, &pb.Point{Latitude: 1, Longitude: 1}, grpc.Header(&header))
			return header, err
		}, codes.OK},
		{"unary error", func(ctx context.Context) (metadata.MD, error) {
			// In the trailer: a header would commit the call (see calls.unary).
			var header, trailer metadata.MD
			_, err := client.GetFeature(ctx, &pb.Point{Latitude: 1e9}, grpc.Header(&header), grpc.Trailer(&trailer))
			if len(header) > 0 {
				t.Errorf("a failed call sent headers %v: its client could not retry it", header)
			}
			return trailer, err
		}, codes.InvalidArgument},
		{"server stream", func(ctx context.Context) (metadata.MD, error) {
			stream, err := client.ListFeatures(ctx, &pb.Rectangle{Lo: &pb.Point{Latitude: -9e8, Longitude: -18e8}, Hi: &pb.Point{Latitude: 9e8, Longitude: 18e8}})
			if err != nil {
				return nil, err
			}
			if err := drain(stream.Recv); err != nil {
				return nil, err
			}
			return stream.Header()
		}, codes.OK},
		{"server stream error", func(ctx context.Context) (metadata.MD, error) {
			stream, err := client.ListFeatures(ctx, &pb.Rectangle{})
			if err != nil {
				return nil, err
			}
			err = drain(stream.Recv)
			if header, _ := stream.Header(); len(header) > 0 {
				t.Errorf("a stream that failed before its first message sent headers %v: its client could not retry it", header)
			}
			return stream.Trailer(), err
		}, codes.InvalidArgument},
		{"client stream", func(ctx context.Context) (metadata.MD, error) {
			stream, err := client.RecordRoute(ctx)
			if err != nil {
				return nil, err
			}
			for i := range int32(3) {
				if err := stream.Send(&pb.Point{Latitude: i, Longitude: i}); err != nil {
					return nil, err
				}
			}
			if _, err := stream.CloseAndRecv(); err != nil {
				return nil, err
			}
			return stream.Header()
		}, codes.OK},
		{"bidirectional stream", func(ctx context.Context) (metadata.MD, error) {
			stream, err := client.RouteChat(ctx)
			if err != nil {
				return nil, err
			}
			if err := stream.Send(&pb.RouteNote{Location: &pb.Point{Latitude: 1, Longitude: 1}, Message: "hi"}); err != nil {
				return nil, err
			}
			if _, err := stream.Recv(); err != nil {
				return nil, err
			}
			if err := stream.CloseSend(); err != nil {
				return nil, err
			}
			if err := drain(stream.Recv); err != nil {
				return nil, err
			}
			return stream.Header()
		}, codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			header, err := tt.call(grpctest.CallContext(t))
			if status.Code(err) != tt.wantCode {
				t.Fatalf("call ended with %v, want code %v", err, tt.wantCode)
			}
			if got := header.Get(contract.NodeHeader); !slices.Equal(got, []string{testNodeID}) {
				t.Errorf("%s header = %q, want %q (all headers: %v)", contract.NodeHeader, got, testNodeID, header)
			}
		})
	}
}

// drain receives until the stream ends, and returns nil if it ended well.
func drain[T any](recv func() (T, error)) error {
	for {
		if _, err := recv(); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

func TestHealthFollowsTheNodeLifecycle(t *testing.T) {
	const drainDelay = 3 * time.Second
	tn := newTestNode(t, func(c *Config) { c.DrainDelay = drainDelay }, nil)
	services := []string{"", contract.HealthService}
	check := func(service string) healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		resp, err := healthpb.NewHealthClient(tn.conn).Check(grpctest.CallContext(t), &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatalf("Check(%q): %v", service, err)
		}
		return resp.Status
	}

	for _, service := range services {
		// Nothing serves yet, so ask the health server itself.
		resp, err := tn.health.Check(t.Context(), &healthpb.HealthCheckRequest{Service: service})
		if err != nil || resp.Status != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Errorf("before Run, Check(%q) = %v, %v; want NOT_SERVING", service, resp, err)
		}
	}

	tn.run(t)
	for _, service := range services {
		if got := check(service); got != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("once ready, Check(%q) = %v, want SERVING", service, got)
		}
	}

	start := time.Now()
	tn.cancel()
	poll.Until(t, 10*time.Second, "health to turn NOT_SERVING", func() bool { return check("") == healthpb.HealthCheckResponse_NOT_SERVING })
	if got := check(contract.HealthService); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("draining, Check(%q) = %v, want NOT_SERVING", contract.HealthService, got)
	}
	// The node keeps answering during the drain delay.
	if _, err := tn.client().GetFeature(grpctest.CallContext(t), &pb.Point{}); err != nil {
		t.Errorf("GetFeature while draining: %v", err)
	}
	if elapsed := time.Since(start); elapsed >= drainDelay {
		t.Fatalf("the checks took %v, longer than the drain delay; the test proves nothing", elapsed)
	}
	if err := tn.stop(t); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	if elapsed := time.Since(start); elapsed < drainDelay {
		t.Errorf("Run returned %v after cancel, before the drain delay of %v", elapsed, drainDelay)
	}
}

func TestReflectionListsTheServices(t *testing.T) {
	tn := startNode(t, nil, nil)
	checkReflectionLists(t, tn.conn)
}

// checkReflectionLists checks that reflection over conn lists RouteGuide
// and the health service.
func checkReflectionLists(t *testing.T, conn grpc.ClientConnInterface) {
	t.Helper()
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(grpctest.CallContext(t))
	if err != nil {
		t.Fatal(err)
	}
	req := &reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}
	if err := stream.Send(req); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.Name)
	}
	for _, want := range []string{"routeguide.RouteGuide", "grpc.health.v1.Health"} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection lists %q, want %s among them", names, want)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
}

func TestLimitsApplyThroughTheNode(t *testing.T) {
	big := strings.Repeat("x", 2000)
	tests := []struct {
		name      string
		configure func(*Config)
		call      func(ctx context.Context, client pb.RouteGuideClient) error
	}{
		{"request larger than --max-msg-size", func(c *Config) { c.MaxMessageBytes = 1024 }, func(ctx context.Context, client pb.RouteGuideClient) error {
			// Padded with an unknown field, so that only the request is large.
			point := &pb.Point{Latitude: 1, Longitude: 1}
			point.ProtoReflect().SetUnknown(protowire.AppendBytes(protowire.AppendTag(nil, 99, protowire.BytesType), []byte(big)))
			_, err := client.GetFeature(ctx, point)
			return err
		}},
		{"request larger than a note of --max-note-bytes and its slack", func(c *Config) { c.NoteLimits.MessageBytes = 100 }, func(ctx context.Context, client pb.RouteGuideClient) error {
			point := &pb.Point{Latitude: 1, Longitude: 1}
			point.ProtoReflect().SetUnknown(protowire.AppendBytes(protowire.AppendTag(nil, 99, protowire.BytesType), []byte(big)))
			_, err := client.GetFeature(ctx, point)
			return err
		}},
		{"response larger than --max-msg-size", func(c *Config) {
			c.MaxMessageBytes = 1024
			c.FeaturesFile = writeFeatures(t, big)
		}, func(ctx context.Context, client pb.RouteGuideClient) error {
			_, err := client.GetFeature(ctx, &pb.Point{Latitude: 1, Longitude: 1})
			return err
		}},
		{"route longer than --max-route-points", func(c *Config) { c.Limits.RoutePoints = 2 }, func(ctx context.Context, client pb.RouteGuideClient) error {
			stream, err := client.RecordRoute(ctx)
			if err != nil {
				return err
			}
			for range 3 {
				if err := stream.Send(&pb.Point{}); err != nil {
					break // the server has answered; CloseAndRecv says how
				}
			}
			_, err = stream.CloseAndRecv()
			return err
		}},
		{"chat longer than --max-chat-notes", func(c *Config) { c.Limits.ChatNotes = 1 }, func(ctx context.Context, client pb.RouteGuideClient) error {
			return chat(ctx, client, 2)
		}},
		{"note longer than --max-note-bytes", func(c *Config) { c.NoteLimits.MessageBytes = 1 }, func(ctx context.Context, client pb.RouteGuideClient) error {
			return chat(ctx, client, 11) // the eleventh note's message is "10"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tn := startNode(t, tt.configure, nil)
			if err := tt.call(grpctest.CallContext(t), tn.client()); status.Code(err) != codes.ResourceExhausted {
				t.Errorf("call ended with %v, want ResourceExhausted", err)
			}
		})
	}
}

// chat sends n notes at one location on one RouteChat stream, reading the
// answers, and returns the error that ends the stream.
func chat(ctx context.Context, client pb.RouteGuideClient, n int) error {
	stream, err := client.RouteChat(ctx)
	if err != nil {
		return err
	}
	for i := range n {
		if err := stream.Send(&pb.RouteNote{Location: &pb.Point{}, Message: fmt.Sprint(i)}); err != nil {
			break // the server has answered; Recv says how
		}
		for range i + 1 {
			if _, err := stream.Recv(); err != nil {
				return err
			}
		}
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	return drain(stream.Recv)
}

func TestDrainCompletesAStreamInFlight(t *testing.T) {
	names := make([]string, 20_000)
	for i := range names {
		names[i] = fmt.Sprintf("feature %05d", i)
	}
	tn := startNode(t, func(c *Config) { c.FeaturesFile = writeFeatures(t, names...) }, nil)

	// Load while the node drains: calls succeed until it stops accepting, and
	// then fail as Unavailable, never otherwise. Each loader ends at its
	// first failure.
	var (
		mu       sync.Mutex
		byCode   = map[codes.Code]int{}
		stopLoad = make(chan struct{})
		loaders  sync.WaitGroup
	)
	for range 4 {
		loaders.Go(func() {
			client := tn.client()
			for {
				select {
				case <-stopLoad:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := client.GetFeature(ctx, &pb.Point{Latitude: 1, Longitude: 1})
				cancel()
				mu.Lock()
				byCode[status.Code(err)]++
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	var stopOnce sync.Once
	stop := func() {
		stopOnce.Do(func() { close(stopLoad) })
		loaders.Wait()
	}
	defer stop() // also when the test fails early

	// A connection of its own with small fixed windows, so that the server
	// cannot send the whole stream before the client reads it: the handler is
	// still sending when the node drains.
	streamConn := dial(t, tn.Addr().String(), grpc.WithInitialWindowSize(1<<16), grpc.WithInitialConnWindowSize(1<<16))
	defer streamConn.Close()
	stream, err := pb.NewRouteGuideClient(streamConn).ListFeatures(grpctest.CallContext(t),
		&pb.Rectangle{Lo: &pb.Point{}, Hi: &pb.Point{Latitude: 1e6, Longitude: 1e6}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	received := 1
	poll.Until(t, 10*time.Second, "a successful call under load", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return byCode[codes.OK] > 0
	})

	tn.cancel()
	// GracefulStop sends GOAWAY, which takes the idle connection out of READY.
	poll.Until(t, 10*time.Second, "the node to stop accepting calls", func() bool { return streamConn.GetState() != connectivity.Ready })
	select {
	case <-tn.done:
		t.Fatal("Run returned while a stream was still being sent")
	default:
	}
	for {
		_, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("stream after %d of %d features: %v", received, len(names), err)
		}
		received++
	}
	if received != len(names) {
		t.Errorf("stream sent %d features, want %d", received, len(names))
	}
	if err := tn.stop(t); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}

	stop()
	for code, n := range byCode {
		if code != codes.OK && code != codes.Unavailable {
			t.Errorf("%d calls under load ended with %v; want only OK and Unavailable", n, code)
		}
	}
}

func TestShutdownTimeoutCutsOpenCalls(t *testing.T) {
	const timeout = 300 * time.Millisecond
	tn := startNode(t, func(c *Config) { c.ShutdownTimeout = timeout }, nil)
	stream, err := tn.client().RouteChat(grpctest.CallContext(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&pb.RouteNote{Location: &pb.Point{}, Message: "hold on"}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}

	// The client never ends the chat: only the timeout ends the drain.
	start := time.Now()
	if err := tn.stop(t); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	if elapsed := time.Since(start); elapsed < timeout {
		t.Errorf("Run returned %v after cancel, before the shutdown timeout of %v", elapsed, timeout)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("open chat ended with %v, want Unavailable", err)
	}
	if records := tn.logs.records(t, "graceful stop timed out; closing open calls"); len(records) != 1 || records[0]["level"] != "WARN" {
		t.Errorf("timeout records %v, want one at WARN", records)
	}
}

func TestClientsCheckingHealthLeaveDuringTheDrainDelay(t *testing.T) {
	const drainDelay = 2 * time.Second
	tn := startNode(t, func(c *Config) { c.DrainDelay = drainDelay }, nil)
	// Client-side health checking, as package balancer configures it.
	conn := dial(t, tn.Addr().String(), grpc.WithDefaultServiceConfig(
		`{"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": "`+contract.HealthService+`"}}`))
	defer conn.Close()
	if _, err := pb.NewRouteGuideClient(conn).GetFeature(grpctest.CallContext(t), &pb.Point{}); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	tn.cancel()
	poll.Until(t, 10*time.Second, "the client to stop picking the node", func() bool { return conn.GetState() != connectivity.Ready })
	if elapsed := time.Since(start); elapsed >= drainDelay {
		t.Errorf("the client left %v after cancel, not within the drain delay of %v", elapsed, drainDelay)
	}
	// Its health watch must not hold up the graceful stop until the timeout.
	if err := tn.stop(t); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	if records := tn.logs.records(t, "graceful stop timed out; closing open calls"); len(records) != 0 {
		t.Errorf("the drain timed out: %v", records)
	}
}

func TestAFullLocationForgetsItsOldestNote(t *testing.T) {
	tn := startNode(t, func(c *Config) { c.NoteLimits.PerLocation = 2 }, nil)
	stream, err := tn.client().RouteChat(grpctest.CallContext(t))
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{{"0"}, {"0", "1"}, {"1", "2"}, {"2", "3"}}
	for i, answer := range want {
		if err := stream.Send(&pb.RouteNote{Location: &pb.Point{}, Message: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
		var got []string
		for range answer {
			note, err := stream.Recv()
			if err != nil {
				t.Fatalf("note %d: %v", i, err)
			}
			got = append(got, note.GetMessage())
		}
		if !slices.Equal(got, answer) {
			t.Errorf("note %d answered %q, want %q", i, got, answer)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if err := drain(stream.Recv); err != nil {
		t.Errorf("chat ended with %v, want a clean end", err)
	}
}

func TestMetadataOverTheBoundIsRefusedAndTheConnectionServesOn(t *testing.T) {
	tn := startNode(t, nil, nil)
	big := metadata.Pairs("x-padding", strings.Repeat("p", balancer.MaxHeaderListBytes))
	_, err := tn.client().GetFeature(metadata.NewOutgoingContext(grpctest.CallContext(t), big), &pb.Point{})
	if status.Code(err) == codes.OK || !strings.Contains(err.Error(), "header list size") {
		t.Errorf("a call with %d bytes of metadata: %v, want it refused for its header list size", balancer.MaxHeaderListBytes, err)
	}
	if _, err := tn.client().GetFeature(grpctest.CallContext(t), &pb.Point{}); err != nil {
		t.Errorf("a call after it: %v", err)
	}
}

// A call the node fails UNAVAILABLE is retried by a client of package
// balancer: the node names itself in the trailer of a failed call, since a
// header would commit the call and gRPC would not retry it.
func TestACallTheNodeFailsIsRetriedByItsClient(t *testing.T) {
	fault := &grayfault.Fault{FailPercent: 50} // every other call
	tn := startNode(t, func(c *Config) { c.ServerOptions = fault.ServerOptions() }, nil)
	opts, err := balancer.DialOptions()
	if err != nil {
		t.Fatal(err)
	}
	conn := dial(t, tn.Addr().String(), opts...)
	t.Cleanup(func() { conn.Close() }) // before the node's check for goroutines left
	client := pb.NewRouteGuideClient(conn)
	for i := range 20 {
		if _, err := client.GetFeature(grpctest.CallContext(t), &pb.Point{Latitude: 1, Longitude: 1}); err != nil {
			t.Fatalf("call %d: %v; want it retried past the failure", i, err)
		}
	}
}
