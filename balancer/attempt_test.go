package balancer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/testutils/faultproxy"
	"github.com/routeguide-cluster/routeguide/internal/testutils/poll"
	"github.com/routeguide-cluster/routeguide/routeguide/contract"
)

// testAttemptTimeout keeps the tests short; what they show does not depend
// on the figure, as long as a live node under -race on a loaded machine
// always answers well within it (some tests assert that it never times out).
const testAttemptTimeout = 300 * time.Millisecond

// behaviour is how a test node answers GetFeature and ListFeatures.
type behaviour int

const (
	answers         behaviour = iota // at once (after delay, if set), one feature named after the node
	hangs                            // never: the handler waits for the call to be cancelled
	firstThenHangs                   // ListFeatures sends one feature, then waits
	headerThenHangs                  // ListFeatures sends its header, then waits
)

// guideNode is a real gRPC server with RouteGuide and health, SERVING.
type guideNode struct {
	pb.UnimplementedRouteGuideServer
	name      string
	behaviour behaviour
	delay     time.Duration
	addr      string // what clients dial: the server, or a proxy in front of it

	gets, lists, records, chats atomic.Int64
}

func (n *guideNode) GetFeature(ctx context.Context, _ *pb.Point) (*pb.Feature, error) {
	n.gets.Add(1)
	if n.behaviour != answers {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	select {
	case <-time.After(n.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &pb.Feature{Name: n.name}, nil
}

func (n *guideNode) ListFeatures(_ *pb.Rectangle, stream grpc.ServerStreamingServer[pb.Feature]) error {
	n.lists.Add(1)
	stream.SetHeader(metadata.Pairs(contract.NodeHeader, n.name))
	stream.SetTrailer(metadata.Pairs(contract.NodeHeader, n.name))
	switch n.behaviour {
	case headerThenHangs:
		if err := stream.SendHeader(nil); err != nil {
			return err
		}
		<-stream.Context().Done()
		return stream.Context().Err()
	case hangs:
		<-stream.Context().Done()
		return stream.Context().Err()
	case firstThenHangs:
		if err := stream.Send(&pb.Feature{Name: n.name}); err != nil {
			return err
		}
		<-stream.Context().Done()
		return stream.Context().Err()
	}
	for range 3 {
		if err := stream.Send(&pb.Feature{Name: n.name}); err != nil {
			return err
		}
	}
	return nil
}

func (n *guideNode) RecordRoute(stream grpc.ClientStreamingServer[pb.Point, pb.RouteSummary]) error {
	n.records.Add(1)
	<-stream.Context().Done()
	return stream.Context().Err()
}

func (n *guideNode) RouteChat(stream grpc.BidiStreamingServer[pb.RouteNote, pb.RouteNote]) error {
	n.chats.Add(1)
	<-stream.Context().Done()
	return stream.Context().Err()
}

// startGuideNode starts a node that behaves as b until the test ends.
func startGuideNode(t *testing.T, name string, b behaviour) *guideNode {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := &guideNode{name: name, behaviour: b, addr: lis.Addr().String()}
	server := grpc.NewServer(ServerOptions()...)
	pb.RegisterRouteGuideServer(server, n)
	hs := health.NewServer()
	hs.SetServingStatus(contract.HealthService, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(server, hs)
	served := make(chan struct{})
	go func() { defer close(served); server.Serve(lis) }()
	t.Cleanup(func() { server.Stop(); <-served })
	return n
}

// behindProxy puts a proxy in front of n, which clients then dial.
func behindProxy(t *testing.T, n *guideNode) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.Start(n.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	n.addr = p.Addr()
	return p
}

// checkNoGoroutineLeft checks, once the test's servers and connections are
// closed, that nothing the attempts started goes on.
func checkNoGoroutineLeft(t *testing.T) {
	t.Helper()
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
}

// attemptLog records every attempt an idempotent unary call made: it sits
// inside the attempt interceptor, where each attempt looks like a call.
type attemptLog struct {
	mu       sync.Mutex
	attempts map[string][]attempt // by the call's id
}

type attempt struct {
	peer string
	code codes.Code
	took time.Duration
}

type callIDKey struct{}

func (l *attemptLog) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	var p peer.Peer
	start := time.Now()
	err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Peer(&p))...)
	a := attempt{code: status.Code(err), took: time.Since(start)}
	if p.Addr != nil {
		a.peer = p.Addr.String()
	}
	id, _ := ctx.Value(callIDKey{}).(string)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.attempts == nil {
		l.attempts = map[string][]attempt{}
	}
	l.attempts[id] = append(l.attempts[id], a)
	return err
}

func (l *attemptLog) of(id string) []attempt {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.attempts[id])
}

// dialGuide connects to nodes with the dial options every client uses and
// the given attempt timeout, and logs attempts into log when it is set.
func dialGuide(t *testing.T, timeout time.Duration, log *attemptLog, nodes ...*guideNode) pb.RouteGuideClient {
	t.Helper()
	return dialGuideWith(t, Name, timeout, log, nodes...)
}

// dialGuideWith is dialGuide with the given policy in place of this
// package's, as a channel whose policy is not ours (round_robin).
func dialGuideWith(t *testing.T, policy string, timeout time.Duration, log *attemptLog, nodes ...*guideNode) pb.RouteGuideClient {
	t.Helper()
	r := manual.NewBuilderWithScheme("test")
	var state resolver.State
	for _, n := range nodes {
		state.Endpoints = append(state.Endpoints, resolver.Endpoint{Addresses: []resolver.Address{{Addr: n.addr}}})
	}
	r.InitialState(state)
	opts := dialOptions(t, WithAttemptTimeout(timeout))
	if policy != Name {
		opts = append(opts, grpc.WithDefaultServiceConfig(strings.Replace(ServiceConfig, `"`+Name+`"`, `"`+policy+`"`, 1)))
	}
	opts = append(opts, grpc.WithResolvers(r), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if log != nil {
		opts = append(opts, grpc.WithChainUnaryInterceptor(log.unary))
	}
	conn, err := grpc.NewClient("test:///routeguide", opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := pb.NewRouteGuideClient(conn)
	// Wait until every node is connected and healthy, so that round robin
	// picks each in turn from the first call on.
	seen := map[string]bool{}
	poll.Until(t, 10*time.Second, "every node connected and healthy", func() bool {
		var p peer.Peer
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p), grpc.WaitForReady(true))
		if p.Addr != nil {
			seen[p.Addr.String()] = true
		}
		return len(seen) == len(nodes)
	})
	return client
}

// getFeatures makes calls GetFeature calls from 4 goroutines, each with
// deadline, and returns the answering node's name, or the error, by call id.
func getFeatures(t *testing.T, client pb.RouteGuideClient, calls int, deadline time.Duration) map[string]error {
	t.Helper()
	var mu sync.Mutex
	errs := map[string]error{}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(calls); i = next.Add(1) {
				id := fmt.Sprintf("call %d", i)
				ctx, cancel := context.WithTimeout(context.WithValue(t.Context(), callIDKey{}, id), deadline)
				_, err := client.GetFeature(ctx, &pb.Point{})
				cancel()
				mu.Lock()
				errs[id] = err
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(errs) != calls {
		t.Fatalf("%d call ids for %d calls", len(errs), calls)
	}
	return errs
}

// TestAttemptTimeoutOffAHungNodeFailsTheCall is why attempt timeouts
// exist: the retry policy retries UNAVAILABLE only, and a node that does not
// answer gives no status at all. The call waits out its deadline, and
// DEADLINE_EXCEEDED is not retried, though another node was there to answer.
func TestAttemptTimeoutOffAHungNodeFailsTheCall(t *testing.T) {
	checkNoGoroutineLeft(t)
	live, hung := startGuideNode(t, "live", answers), startGuideNode(t, "hung", hangs)
	client := dialGuide(t, 0, nil, live, hung)

	errs := getFeatures(t, client, 8, 300*time.Millisecond)
	failed := 0
	for _, err := range errs {
		if err != nil {
			failed++
			if status.Code(err) != codes.DeadlineExceeded {
				t.Errorf("call failed with %v, want DeadlineExceeded", err)
			}
		}
	}
	if failed == 0 || hung.gets.Load() == 0 {
		t.Errorf("%d of 8 calls failed, %d reached the hung node; want calls picked for it to fail", failed, hung.gets.Load())
	}
	t.Logf("without attempt timeouts: %d of 8 calls failed at their deadline", failed)
}

// TestAttemptTimeoutRetriesAHungCallOnAnotherNode: with attempt timeouts,
// every call succeeds, whether the node that does not answer is a server
// whose handler never returns or a connection that went silent.
func TestAttemptTimeoutRetriesAHungCallOnAnotherNode(t *testing.T) {
	for _, tc := range []struct {
		name string
		// start starts the node that goes silent, and returns what makes it
		// silent once it is connected and healthy.
		start func(t *testing.T) (n *guideNode, silence func())
	}{
		{"handler never answers", func(t *testing.T) (*guideNode, func()) {
			return startGuideNode(t, "hung", hangs), func() {}
		}},
		{"connection blackholed", func(t *testing.T) (*guideNode, func()) {
			n := startGuideNode(t, "hung", answers)
			return n, behindProxy(t, n).Blackhole
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkNoGoroutineLeft(t)
			live := startGuideNode(t, "live", answers)
			silent, silence := tc.start(t)
			var log attemptLog
			client := dialGuide(t, testAttemptTimeout, &log, live, silent)
			silence()

			const deadline = 2 * time.Second
			errs := getFeatures(t, client, 40, deadline)
			timedOut := 0
			for id, err := range errs {
				if err != nil {
					t.Errorf("call %s failed: %v; attempts %+v", id, err, log.of(id))
				}
				for _, a := range log.of(id) {
					if a.code == codes.DeadlineExceeded {
						timedOut++
						if a.peer != silent.addr {
							t.Errorf("call %s: an attempt on the live node timed out: %+v", id, a)
						}
					}
				}
			}
			if timedOut == 0 {
				t.Errorf("no attempt timed out: the silent node was never picked")
			}
			t.Logf("40 calls OK; %d attempts timed out on the silent node and were made again", timedOut)
		})
	}
}

// TestAttemptTimeoutAvoidsTheNodesThatHung: with two silent nodes of three,
// a call whose attempt timed out on one node is not picked for it again: the
// policy's picker takes the next node in turn, so each call waits at most
// one attempt timeout per silent node.
func TestAttemptTimeoutAvoidsTheNodesThatHung(t *testing.T) {
	checkNoGoroutineLeft(t)
	live := startGuideNode(t, "live", answers)
	hung1, hung2 := startGuideNode(t, "hung1", hangs), startGuideNode(t, "hung2", hangs)
	var log attemptLog
	client := dialGuide(t, testAttemptTimeout, &log, live, hung1, hung2)

	errs := getFeatures(t, client, 30, 5*time.Second)
	for id, err := range errs {
		if err != nil {
			t.Errorf("call %s failed: %v; attempts %+v", id, err, log.of(id))
		}
		timedOutOn := map[string]bool{}
		for _, a := range log.of(id) {
			if a.code != codes.DeadlineExceeded {
				continue
			}
			if timedOutOn[a.peer] {
				t.Errorf("call %s timed out twice on %s: attempts %+v", id, a.peer, log.of(id))
			}
			timedOutOn[a.peer] = true
		}
	}
	t.Logf("30 calls OK, none timed out twice on one node")
}

// TestAttemptTimeoutWorksUnderAnotherPolicy: a channel whose policy is not
// ours (an xds:/// client's, when its servers name none it knows) still times
// attempts out and makes them again; round robin's next pick is the next
// node, though nothing keeps a call from the node that hung.
func TestAttemptTimeoutWorksUnderAnotherPolicy(t *testing.T) {
	checkNoGoroutineLeft(t)
	live, hung := startGuideNode(t, "live", answers), startGuideNode(t, "hung", hangs)
	client := dialGuideWith(t, "round_robin", testAttemptTimeout, nil, live, hung)
	for i := range 6 { // one caller: round robin alternates
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		f, err := client.GetFeature(ctx, &pb.Point{})
		cancel()
		if err != nil || f.GetName() != "live" {
			t.Fatalf("call %d: %v, %v; want the live node's feature", i, f, err)
		}
	}
	if hung.gets.Load() == 0 {
		t.Error("no attempt went to the hung node")
	}
}

// TestAttemptTimeoutNeverFailsACallThatOnlyNeedsTime: when every node is
// slower than the attempt timeout, attempts time out, each timeout doubling,
// until one has no timeout but the caller's deadline: the call succeeds.
func TestAttemptTimeoutNeverFailsACallThatOnlyNeedsTime(t *testing.T) {
	checkNoGoroutineLeft(t)
	slow := startGuideNode(t, "slow", answers)
	slow.delay = 8 * testAttemptTimeout // more than 1+2+4 attempt timeouts
	var log attemptLog
	client := dialGuide(t, testAttemptTimeout, &log, slow)

	ctx, cancel := context.WithTimeout(context.WithValue(t.Context(), callIDKey{}, "slow"), 5*time.Second)
	defer cancel()
	start := time.Now()
	f, err := client.GetFeature(ctx, &pb.Point{})
	if err != nil || f.GetName() != "slow" {
		t.Fatalf("GetFeature on a slow node: %v, %v", f, err)
	}
	timedOut := 0
	for _, a := range log.of("slow") {
		if a.code == codes.DeadlineExceeded {
			timedOut++
		}
	}
	if timedOut != maxTimedAttempts {
		t.Errorf("%d attempts timed out, want %d timed ones, then one that waits: %+v", timedOut, maxTimedAttempts, log.of("slow"))
	}
	t.Logf("answered after %v", time.Since(start).Round(time.Millisecond))
}

// TestAttemptTimeoutKeepsTheCallersDeadline: a call whose only node hangs
// fails at the caller's deadline, with the caller's code, not before.
func TestAttemptTimeoutKeepsTheCallersDeadline(t *testing.T) {
	checkNoGoroutineLeft(t)
	hung := startGuideNode(t, "hung", hangs)
	client := dialGuide(t, testAttemptTimeout, nil, hung)

	const deadline = 600 * time.Millisecond
	ctx, cancel := context.WithTimeout(t.Context(), deadline)
	defer cancel()
	start := time.Now()
	_, err := client.GetFeature(ctx, &pb.Point{})
	took := time.Since(start)
	if status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("GetFeature on a hung node: %v, want DeadlineExceeded", err)
	}
	if took < deadline {
		t.Errorf("GetFeature failed after %v, before its deadline of %v", took, deadline)
	}
}

// TestAttemptTimeoutLeavesRecordRouteAndRouteChatAlone: calls that change
// state are made once, however long they wait.
func TestAttemptTimeoutLeavesRecordRouteAndRouteChatAlone(t *testing.T) {
	checkNoGoroutineLeft(t)
	hung := startGuideNode(t, "hung", hangs)
	client := dialGuide(t, testAttemptTimeout, nil, hung)
	const deadline = 5 * testAttemptTimeout

	ctx, cancel := context.WithTimeout(t.Context(), deadline)
	defer cancel()
	record, err := client.RecordRoute(ctx)
	if err == nil {
		record.Send(&pb.Point{})
		_, err = record.CloseAndRecv()
	}
	if status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("RecordRoute on a hung node: %v, want DeadlineExceeded", err)
	}

	ctx, cancel = context.WithTimeout(t.Context(), deadline)
	defer cancel()
	chat, err := client.RouteChat(ctx)
	if err == nil {
		chat.Send(&pb.RouteNote{})
		_, err = chat.Recv()
	}
	if status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("RouteChat on a hung node: %v, want DeadlineExceeded", err)
	}
	if r, c := hung.records.Load(), hung.chats.Load(); r != 1 || c != 1 {
		t.Errorf("the node got %d RecordRoute and %d RouteChat streams, want one each", r, c)
	}
}

// TestAttemptTimeoutRemakesListFeaturesOnlyBeforeItsFirstFeature: a stream whose node
// sends nothing is opened again on another node; a stream that has sent a
// feature is the caller's, and is never made again.
func TestAttemptTimeoutRemakesListFeaturesOnlyBeforeItsFirstFeature(t *testing.T) {
	t.Run("silent before the first feature", func(t *testing.T) {
		checkNoGoroutineLeft(t)
		live, hung := startGuideNode(t, "live", answers), startGuideNode(t, "hung", hangs)
		client := dialGuide(t, testAttemptTimeout, nil, live, hung)
		for i := range 10 {
			names, err := listFeatures(t, client, 2*time.Second)
			if err != nil || !slices.Equal(names, []string{"live", "live", "live"}) {
				t.Errorf("stream %d: features from %v, %v; want three from live", i, names, err)
			}
		}
		if hung.lists.Load() == 0 {
			t.Error("no stream went to the hung node")
		}
	})
	t.Run("silent after the first feature", func(t *testing.T) {
		checkNoGoroutineLeft(t)
		stalls := startGuideNode(t, "stalls", firstThenHangs)
		client := dialGuide(t, testAttemptTimeout, nil, stalls)
		deadline := 5 * testAttemptTimeout
		names, err := listFeatures(t, client, deadline)
		if !slices.Equal(names, []string{"stalls"}) || status.Code(err) != codes.DeadlineExceeded {
			t.Errorf("features %v, %v; want the one feature, then DeadlineExceeded", names, err)
		}
		if n := stalls.lists.Load(); n != 1 {
			t.Errorf("the node got %d streams, want 1", n)
		}
	})
}

// TestAttemptTimeoutGivesTheCallerTheResultsOfTheStreamItRead: the header,
// trailer and peer a caller asks for are those of the attempt it read, not
// of one that timed out, though every attempt now fills options of its own
// (resultOptions says why; the race it prevents needs a timeout to fire as
// the first message comes, which no test can time).
func TestAttemptTimeoutGivesTheCallerTheResultsOfTheStreamItRead(t *testing.T) {
	checkNoGoroutineLeft(t)
	live, hung := startGuideNode(t, "live", answers), startGuideNode(t, "hung", headerThenHangs)
	client := dialGuide(t, testAttemptTimeout, nil, live, hung)
	for i := range 6 {
		var header, trailer metadata.MD
		var p peer.Peer
		names, err := listFeatures(t, client, 5*time.Second, grpc.Header(&header), grpc.Trailer(&trailer), grpc.Peer(&p))
		if err != nil || len(names) != 3 {
			t.Fatalf("stream %d: features %v, %v; want three", i, names, err)
		}
		got := []string{strings.Join(header.Get(contract.NodeHeader), ","), strings.Join(trailer.Get(contract.NodeHeader), ","), fmt.Sprint(p.Addr)}
		if want := []string{"live", "live", live.addr}; !slices.Equal(got, want) {
			t.Errorf("stream %d: header, trailer and peer name %v, want %v", i, got, want)
		}
	}
	if hung.lists.Load() == 0 {
		t.Error("no stream went to the hung node")
	}
}

// listFeatures reads a ListFeatures stream to its end and returns the names
// of the features and the error that ended it, nil for the end.
func listFeatures(t *testing.T, client pb.RouteGuideClient, deadline time.Duration, opts ...grpc.CallOption) ([]string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), deadline)
	defer cancel()
	stream, err := client.ListFeatures(ctx, &pb.Rectangle{Lo: &pb.Point{}, Hi: &pb.Point{}}, opts...)
	if err != nil {
		return nil, err
	}
	var names []string
	for {
		f, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return names, nil
		}
		if err != nil {
			return names, err
		}
		names = append(names, f.GetName())
	}
}

// TestAttemptTimeoutCoversTheMethodsWithARetryPolicy: the attempt timeout and the
// retry policy agree on which calls may run twice.
func TestAttemptTimeoutCoversTheMethodsWithARetryPolicy(t *testing.T) {
	var sc struct {
		MethodConfig []struct {
			Name []struct {
				Service, Method string
			}
			RetryPolicy json.RawMessage
		}
	}
	if err := json.Unmarshal([]byte(ServiceConfig), &sc); err != nil {
		t.Fatal(err)
	}
	var retried []string
	for _, mc := range sc.MethodConfig {
		if mc.RetryPolicy == nil {
			continue
		}
		for _, n := range mc.Name {
			retried = append(retried, "/"+n.Service+"/"+n.Method)
		}
	}
	slices.Sort(retried)
	if idempotent := slices.Sorted(slices.Values(contract.IdempotentMethods)); !slices.Equal(retried, idempotent) {
		t.Errorf("retry policy for %v, attempt timeouts for %v", retried, idempotent)
	}
}

// TestEachAttemptHasOptionsOfItsOwn: gRPC reads an attempt's options again
// when the attempt ends, maybe after the next attempt began, so the next
// attempt's result options must not land in the same slice.
func TestEachAttemptHasOptionsOfItsOwn(t *testing.T) {
	var header metadata.MD
	// Three options kept, which append leaves with room for a fourth.
	opts, results := takeResultOptions([]grpc.CallOption{
		grpc.WaitForReady(true), grpc.Header(&header), grpc.MaxCallRecvMsgSize(1 << 20), grpc.StaticMethod(),
	})
	if len(opts) != 3 {
		t.Fatalf("kept %d options, want the 3 that are not results", len(opts))
	}
	first := results.forAttempt(opts)
	firstHeader := first[3]
	second := results.forAttempt(opts)
	if first[3] != firstHeader || first[3] == second[3] {
		t.Errorf("the second attempt's header option %v took the first's place %v", second[3], firstHeader)
	}
}
