package clustertest

// The attack suite: what a client with nothing but a RouteGuide client (or a
// raw HTTP/2 connection) can send must not reach the registry or a node's
// memory. Each scenario runs on a real etcd with a small quota and real
// nodes, under well-behaved load on the other RPCs, and asserts that etcd
// raised no alarm, that no node lost its lease, that the well-behaved calls
// all succeeded, and that the heap stayed under the scenario's bound. Each
// logs a FAULT line, as the fault suite does:
//
// go test -race -count=1 -run TestAttack -v ./internal/clustertest/ | grep FAULT

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/routeguide-cluster/routeguide/discovery"
	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/clientcli"
	"github.com/routeguide-cluster/routeguide/internal/load"
	"github.com/routeguide-cluster/routeguide/internal/localetcd"
	"github.com/routeguide-cluster/routeguide/internal/node"
	"github.com/routeguide-cluster/routeguide/internal/testutils"
	"github.com/routeguide-cluster/routeguide/internal/testutils/canonical"
	"github.com/routeguide-cluster/routeguide/internal/testutils/etcdtest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/grpctest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/hostile"
	"github.com/routeguide-cluster/routeguide/internal/testutils/loadtest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/nodetest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/poll"
)

// attackQuota is the etcd quota of the attack suite: small, so that an
// attack that could fill etcd does so within seconds.
const attackQuota = 32 << 20

// attackGround is what the attacks must not break: etcd with a small quota,
// two nodes with metrics, and a well-behaved client under load on
// GetFeature, ListFeatures and RecordRoute.
type attackGround struct {
	etcd    *localetcd.Server
	nodes   []*node.Node
	before  map[string]registration
	calls   *loadtest.Log
	loads   *faultLoad
	heap    *heapWatch
	started time.Time
	left    *heapAllowance
}

// startAttackGround starts the ground with nodes configured by configure
// (nil for the defaults), and the heap watch once every part is up.
func startAttackGround(t *testing.T, configure func(*node.Config)) *attackGround {
	t.Helper()
	left := checkNothingLeftBehind(t)
	etcd, err := localetcd.Start(localetcd.Config{Dir: t.TempDir(), ClientAddr: "127.0.0.1:0", QuotaBytes: attackQuota})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Close)
	template := metricsTemplate(t)
	template.Etcd = []string{etcd.ClientURL()}
	template.NotesBudget = attackQuota / 3
	// The lease the attacks took nodes past: 5s, against 3s for
	// the fault suite, so that a loaded test machine alone never does.
	template.LeaseTTL = 5 * time.Second
	if configure != nil {
		configure(&template)
	}
	g := &attackGround{etcd: etcd, before: map[string]registration{}, left: left}
	for _, id := range []string{"a", "b"} {
		cfg := template
		cfg.NodeID = id
		n := startOwnNode(t, cfg, nil)
		g.nodes = append(g.nodes, n)
		g.before[id] = registrationOf(t, n.MetricsAddr())
	}
	conn, err := clientcli.Dial(t.Context(), target, clientcli.WithEtcdConfig(discovery.EtcdConfig{Endpoints: []string{etcd.ClientURL()}}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	waitAllAnswer(t, conn, "a", "b")
	g.calls = loadtest.NewLog(conn)
	g.loads = startLoads(t, g.calls, loadSpec{load.Get, 4}, loadSpec{load.List, 2}, loadSpec{load.Record, 2})
	g.heap = watchHeap(t)
	g.started = time.Now()
	return g
}

// finish stops the load and the heap watch, checks that nothing was
// harmed and that the heap grew by at most heapBound, and logs the FAULT
// line of scenario with more.
func (g *attackGround) finish(t *testing.T, scenario string, heapBound uint64, more string) {
	t.Helper()
	grown := g.heap.stop()
	results := g.loads.stop(t)
	checkNoneFailed(t, scenario, results, 0, fmt.Sprintf("heap_grown=%dMiB heap_bound=%dMiB %s", grown>>20, heapBound>>20, more), load.Get, load.List, load.Record)
	if grown > heapBound {
		t.Errorf("the live heap grew by %d MiB during the attack, more than its bound of %d MiB", grown>>20, heapBound>>20)
	}
	p99 := results[load.Get].P99
	if p99 > time.Second {
		t.Errorf("GetFeature's p99 under attack was %v, want under 1s", p99)
	}
	cli := etcdtest.Client(t, g.etcd.ClientURL())
	alarms, err := cli.AlarmList(t.Context())
	if err != nil || len(alarms.Alarms) != 0 {
		t.Errorf("etcd alarms after the attack: %v (%v), want none", alarms, err)
	}
	for _, n := range g.nodes {
		now, before := registrationOf(t, n.MetricsAddr()), g.before[n.ID()]
		if now.registered != 1 || now.registrations != before.registrations || now.failures != before.failures {
			t.Errorf("node %s lost its lease during the attack: registration %+v, before %+v", n.ID(), now, before)
		}
	}
}

// heapWatch samples the live heap until stopped, to find its peak.
type heapWatch struct {
	base uint64
	peak atomic.Uint64
	done chan struct{}
	quit chan struct{}
}

func watchHeap(t *testing.T) *heapWatch {
	h := &heapWatch{base: testutils.HeapAfterGC().HeapAlloc, done: make(chan struct{}), quit: make(chan struct{})}
	go func() {
		defer close(h.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			h.peak.Store(max(h.peak.Load(), testutils.HeapAfterGC().HeapAlloc))
			select {
			case <-h.quit:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { h.stop() })
	return h
}

// stop ends the watch and returns how far the live heap rose above where
// it started; stopping it again returns the same.
func (h *heapWatch) stop() uint64 {
	select {
	case <-h.quit:
	default:
		close(h.quit)
	}
	<-h.done
	return h.peak.Load() - min(h.peak.Load(), h.base)
}

// rawClient is hostile.Dial, closed by t's cleanup.
func rawClient(t *testing.T, addr, localIP string) *grpc.ClientConn {
	t.Helper()
	conn, err := hostile.Dial(addr, localIP)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// sumOf adds up the series of name whose label has the value given.
func sumOf(families map[string]*dto.MetricFamily, name, label, value string) float64 {
	sum := 0.0
	for _, m := range families[name].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == label && l.GetValue() == value {
				sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

// chatOnce posts one note through conn and reads its answer.
func chatOnce(ctx context.Context, conn grpc.ClientConnInterface, n *pb.RouteNote) ([]*pb.RouteNote, error) {
	stream, err := pb.NewRouteGuideClient(conn).RouteChat(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(n); err != nil {
		return nil, err
	}
	if err := stream.CloseSend(); err != nil {
		return nil, err
	}
	return grpctest.RecvAll(stream.Recv)
}

func note(lat, lon int32, message string) *pb.RouteNote {
	return &pb.RouteNote{Location: &pb.Point{Latitude: lat, Longitude: lon}, Message: message}
}

// TestAttackNotesCannotFillEtcd posts 4 KiB notes at ever new locations from
// eight clients as fast as the nodes take them. Before the budget this
// filled a 16 MiB etcd in 12s, and etcd then refused every write, the
// registry's too. Now the nodes refuse notes with RESOURCE_EXHAUSTED once
// etcd holds the budget (a third of the quota here), etcd raises no alarm,
// and a node that starts afterwards registers.
func TestAttackNotesCannotFillEtcd(t *testing.T) {
	g := startAttackGround(t, nil)
	// etcd's raft log keeps the entries of the notes in memory, and the
	// closed etcd stays reachable through the test's cleanups.
	g.left.allow(attackQuota / 3)
	message := strings.Repeat("x", 4<<10)
	var posted, refused atomic.Int64
	var wrong sync.Map // unexpected errors, by message
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	for i := range 8 {
		conn := rawClient(t, g.nodes[i%2].Addr().String(), "127.0.0.2")
		wg.Go(func() {
			for lat := int32(i); ctx.Err() == nil; lat += 8 {
				_, err := chatOnce(ctx, conn, note(lat, 1, message))
				switch {
				case err == nil:
					posted.Add(1)
				case status.Code(err) == codes.ResourceExhausted && strings.Contains(err.Error(), "notes budget"):
					if refused.Add(1) >= 100 {
						cancel()
					}
				case ctx.Err() == nil:
					wrong.Store(err.Error(), true)
				}
			}
		})
	}
	wg.Wait()
	if refused.Load() < 100 {
		t.Fatalf("after %d notes, %d were refused for the notes budget within 90s; want 100", posted.Load(), refused.Load())
	}
	wrong.Range(func(k, _ any) bool { t.Errorf("a post failed otherwise: %v", k); return true })

	// Registration still works: a node that starts now registers.
	cfg := metricsTemplate(t)
	cfg.Etcd, cfg.NodeID = []string{g.etcd.ClientURL()}, "after-attack"
	startOwnNode(t, cfg, nil)
	f := scrape(t, g.nodes[0].MetricsAddr())
	inUse, budget := int64(value(f, "routeguide_notes_budget_used_bytes")), int64(value(f, "routeguide_notes_budget_bytes"))
	g.finish(t, "notes-fill-etcd", 64<<20, fmt.Sprintf("notes_posted=%d refused=%d etcd_in_use=%dMiB budget=%dMiB quota=%dMiB",
		posted.Load(), refused.Load(), inUse>>20, budget>>20, attackQuota>>20))
}

// TestAttackBusyLocationCostsABoundedPost fills a location with 1000 notes
// of 4 KiB of control characters (24 MB of JSON that every post there read
// before), then has a hundred streams from one client post there at once
// and never read their answers. Each post now reads at most one answer of
// --max-chat-answer-bytes, and a node holds at most --max-note-writes of
// them; the rest wait and are refused. Meanwhile a chat at another location
// succeeds, on the attacked node from another client, and on the other node.
func TestAttackBusyLocationCostsABoundedPost(t *testing.T) {
	const writes = 16
	g := startAttackGround(t, func(c *node.Config) { c.Limits.NoteWrites = writes })
	cli := etcdtest.Client(t, g.etcd.ClientURL())
	value, err := proto.Marshal(note(90000000, 90000000, strings.Repeat("\x01", 4<<10)))
	if err != nil {
		t.Fatal(err)
	}
	location := node.NotesPrefix(node.DefaultConfig().Service) + "90000000,90000000/"
	for i := range 1000 {
		if _, err := cli.Put(t.Context(), fmt.Sprintf("%s%04d", location, i), string(value)); err != nil {
			t.Fatal(err)
		}
	}

	attacker := rawClient(t, g.nodes[0].Addr().String(), "127.0.0.2")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var refused atomic.Int64
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			stream, err := pb.NewRouteGuideClient(attacker).RouteChat(ctx)
			if err != nil {
				return
			}
			if stream.Send(note(90000000, 90000000, "busy")) != nil {
				return
			}
			// Never read the answer, only whether the node refused.
			<-ctx.Done()
			if _, err := stream.Recv(); status.Code(err) == codes.ResourceExhausted {
				refused.Add(1)
			}
		})
	}
	// The node holds the posts it answers until they are read; the others
	// wait for --note-write-wait and are refused.
	poll.UntilReported(t, 30*time.Second, 100*time.Millisecond, "the node to refuse the posts it had no room for", func() (bool, string) {
		n := sumOf(scrape(t, g.nodes[0].MetricsAddr()), "routeguide_limit_rejections_total", "limit", "note_writes")
		return n >= 100-writes/4, fmt.Sprintf("%v refused", n)
	})
	var took [2]time.Duration
	for i, via := range []*grpc.ClientConn{rawClient(t, g.nodes[0].Addr().String(), "127.0.0.1"), rawClient(t, g.nodes[1].Addr().String(), "127.0.0.1")} {
		start := time.Now()
		answer, err := chatOnce(grpctest.CallContext(t), via, note(1, 1, fmt.Sprintf("calm %d", i)))
		took[i] = time.Since(start)
		if err != nil || len(answer) == 0 {
			t.Errorf("a chat at a calm location on node %s during the attack: %v", g.nodes[i].ID(), err)
		}
	}
	g.heap.stop()
	cancel()
	wg.Wait()
	// What a node holds at most: the unread answers of --max-note-writes
	// posts (one peer takes a quarter), each at most --max-chat-answer-bytes,
	// decoded, and the load's own.
	bound := uint64(writes)*uint64(node.DefaultConfig().NoteLimits.AnswerBytes)*2 + 32<<20
	g.finish(t, "busy-location-unread-posts", bound, fmt.Sprintf("posts=100 refused=%d calm_chat_attacked_node=%v calm_chat_other_node=%v",
		refused.Load(), took[0].Round(time.Millisecond), took[1].Round(time.Millisecond)))
}

// TestAttackHugeMetadataIsRefused opens 40 streams on one raw HTTP/2
// connection, each with 2 MB of metadata: gRPC's default let a node hold
// all of it for the streams' life. The node refuses metadata over
// balancer.MaxHeaderListBytes and holds none of it.
func TestAttackHugeMetadataIsRefused(t *testing.T) {
	g := startAttackGround(t, nil)
	c, err := net.Dial("tcp", g.nodes[0].Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	framer := http2.NewFramer(c, c)
	var resets atomic.Int64
	read := make(chan struct{})
	go func() {
		defer close(read)
		for {
			f, err := framer.ReadFrame()
			if err != nil {
				return
			}
			if _, ok := f.(*http2.RSTStreamFrame); ok {
				resets.Add(1)
			}
		}
	}()
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	if err := framer.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{
		{":method", "POST"}, {":scheme", "http"}, {":authority", "node"},
		{":path", pb.RouteGuide_GetFeature_FullMethodName}, {"content-type", "application/grpc"}, {"te", "trailers"},
		{"x-padding", strings.Repeat("p", 2<<20)},
	} {
		if err := enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}); err != nil {
			t.Fatal(err)
		}
	}
	const streams = 40
	for i := range streams {
		if err := writeHeaderBlock(framer, uint32(2*i+1), block.Bytes()); err != nil {
			break // the node closed the connection
		}
	}
	poll.Until(t, 30*time.Second, "the node to refuse every stream, or close the connection", func() bool {
		select {
		case <-read:
			return true
		default:
			return resets.Load() >= streams
		}
	})
	g.finish(t, "huge-metadata", 16<<20, fmt.Sprintf("streams=%d metadata_each=2MB resets=%d", streams, resets.Load()))
	c.Close()
	<-read
}

// writeHeaderBlock sends block as the header block of a new stream, in
// frames of the default size.
func writeHeaderBlock(framer *http2.Framer, stream uint32, block []byte) error {
	const frame = 16 << 10
	first := block[:min(frame, len(block))]
	if err := framer.WriteHeaders(http2.HeadersFrameParam{StreamID: stream, BlockFragment: first, EndHeaders: len(block) <= frame}); err != nil {
		return err
	}
	for rest := block[len(first):]; len(rest) > 0; {
		chunk := rest[:min(frame, len(rest))]
		rest = rest[len(chunk):]
		if err := framer.WriteContinuation(stream, len(rest) == 0, chunk); err != nil {
			return err
		}
	}
	return nil
}

// TestAttackUnreadListFeaturesHoldLittle opens 150 whole-world ListFeatures
// streams over 200,000 features on one connection and reads none of them.
// They held about 4 MB each at the node before; now a connection has at most
// --max-concurrent-streams of them open (gRPC clients queue the rest), and
// each holds one flow-control window of answers and a bounded index.
func TestAttackUnreadListFeaturesHoldLittle(t *testing.T) {
	file := writeManyFeatures(t, 200_000)
	g := startAttackGround(t, func(c *node.Config) { c.FeaturesFile = file })
	g.left.allow(2 * 200_000 * 400) // two nodes' features, about 400 bytes each as loaded
	attacker := rawClient(t, g.nodes[0].Addr().String(), "127.0.0.2")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	world := &pb.Rectangle{Lo: &pb.Point{Latitude: -900000000, Longitude: -1800000000}, Hi: &pb.Point{Latitude: 900000000, Longitude: 1800000000}}
	var opened atomic.Int64
	var wg sync.WaitGroup
	for range 150 {
		wg.Go(func() {
			stream, err := pb.NewRouteGuideClient(attacker).ListFeatures(ctx, world)
			if err != nil {
				return
			}
			opened.Add(1)
			if _, err := stream.Header(); err != nil {
				return
			}
			<-ctx.Done()
		})
	}
	started := func() float64 {
		f := scrape(t, g.nodes[0].MetricsAddr())
		return sumOf(f, "grpc_server_started_total", "grpc_method", "ListFeatures") - sumOf(f, "grpc_server_handled_total", "grpc_method", "ListFeatures")
	}
	limit := float64(node.DefaultConfig().MaxConcurrentStreams)
	poll.Until(t, 30*time.Second, "the node to run as many unread streams as one connection may open", func() bool { return started() >= limit-1 })
	// The well-behaved load's own ListFeatures come over another connection.
	poll.Until(t, 10*time.Second, "200 more calls under the attack", func() bool { return g.calls.Count("", g.started, time.Time{}) >= 200 })
	open := started()
	g.heap.stop()
	cancel()
	wg.Wait()
	if open > limit+4 {
		t.Errorf("%v ListFeatures streams were open on the node, want at most the %v one connection may open (and the load's own)", open, limit)
	}
	g.finish(t, "unread-list-features", 48<<20, fmt.Sprintf("features=200000 streams=150 open_at_node=%v", open))
}

// writeManyFeatures writes a features file of n named features spread over
// the globe, and returns its path.
func writeManyFeatures(t *testing.T, n int) string {
	t.Helper()
	list := make([]*pb.Feature, n)
	for i := range list {
		at := &pb.Point{Latitude: int32(i%1800)*1000000 - 899000000, Longitude: int32(i/1800)*3000000 - 1790000000}
		list[i] = &pb.Feature{Location: at, Name: fmt.Sprintf("feature %d", i)}
	}
	return canonical.WriteFeatures(t, list)
}

// TestAttackNotesNotUTF8AreTheCallersFault sends notes whose message is not
// valid UTF-8: each is answered INVALID_ARGUMENT, and none counts as a
// server fault, which would move the operator's error-ratio alert.
func TestAttackNotesNotUTF8AreTheCallersFault(t *testing.T) {
	g := startAttackGround(t, nil)
	conn := rawClient(t, g.nodes[0].Addr().String(), "127.0.0.2")
	bad := hostile.NoteNotUTF8()
	for range 50 {
		stream, err := conn.NewStream(grpctest.CallContext(t), &grpc.StreamDesc{ClientStreams: true, ServerStreams: true},
			pb.RouteGuide_RouteChat_FullMethodName, grpc.ForceCodec(hostile.RawCodec{}))
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.SendMsg(&bad); err != nil {
			t.Fatal(err)
		}
		var answer []byte
		if err := stream.RecvMsg(&answer); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("a note that is not UTF-8: %v, want InvalidArgument", err)
		}
	}
	f := scrape(t, g.nodes[0].MetricsAddr())
	if n := sumOf(f, "grpc_server_handled_total", "grpc_code", "Internal"); n != 0 {
		t.Errorf("%v calls counted Internal, want 0", n)
	}
	g.finish(t, "notes-not-utf8", 32<<20, "notes=50")
}

// TestNotesCanLiveInAnEtcdOfTheirOwn runs a node with --notes-etcd: its
// notes go to that cluster, and its registration stays in the registry's,
// which holds no note.
func TestNotesCanLiveInAnEtcdOfTheirOwn(t *testing.T) {
	checkNothingLeftBehind(t)
	var etcds [2]*localetcd.Server
	for i := range etcds {
		srv, err := localetcd.Start(localetcd.Config{Dir: t.TempDir(), ClientAddr: "127.0.0.1:0"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(srv.Close)
		etcds[i] = srv
	}
	cfg := nodetest.Config(t)
	cfg.NodeID, cfg.Etcd, cfg.NotesEtcd = "a", []string{etcds[0].ClientURL()}, []string{etcds[1].ClientURL()}
	n := startOwnNode(t, cfg, nil)
	conn := rawClient(t, n.Addr().String(), "127.0.0.1")
	if _, err := chatOnce(grpctest.CallContext(t), conn, note(1, 1, "kept apart")); err != nil {
		t.Fatal(err)
	}
	registry, notes := etcdtest.Client(t, etcds[0].ClientURL()), etcdtest.Client(t, etcds[1].ClientURL())
	count := func(cli *clientv3.Client, prefix string) int64 {
		resp, err := cli.Get(t.Context(), prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Count
	}
	// The notes' etcd holds the note at its location, and the node's
	// declared bounds beside it; the registry's holds nothing of either.
	notesPrefix := node.NotesPrefix(cfg.Service)
	if got := [2]int64{count(registry, notesPrefix), count(notes, notesPrefix+"1,1/")}; got != [2]int64{0, 1} {
		t.Errorf("keys under %s in the registry's etcd and notes at 1,1 in the notes' etcd: %v, want [0 1]", notesPrefix, got)
	}
	if got := registered(t, registry, cfg.Service); got["a"] != n.AdvertisedAddr() {
		t.Errorf("the registry holds %v, want node a at %s", got, n.AdvertisedAddr())
	}
}

// TestAttackUnreadAnswersFromFewHostsLeaveRoomForOthers is the attack that
// held every note-write place of a node: a location full of 4 KiB notes,
// then four client hosts (127.0.0.2 to .5), each with 16 streams on one
// connection, post there and never read their answers, posting again on a
// new stream whenever the node ends one. An honest client posting once a
// second from another address gets at least 19 of 20 posts through: a host
// holds at most its share of the places, one more host always finds room,
// and an unread answer gives its place back after --chat-answer-wait.
func TestAttackUnreadAnswersFromFewHostsLeaveRoomForOthers(t *testing.T) {
	const wait = 3 * time.Second
	g := startAttackGround(t, func(c *node.Config) { c.Limits.AnswerWait = wait })
	cli := etcdtest.Client(t, g.etcd.ClientURL())
	busy := note(80000000, 80000000, strings.Repeat("\x01", 4<<10))
	value, err := proto.Marshal(busy)
	if err != nil {
		t.Fatal(err)
	}
	location := node.NotesPrefix(node.DefaultConfig().Service) + "80000000,80000000/"
	for batch := range 10 {
		puts := make([]clientv3.Op, 100)
		for i := range puts {
			puts[i] = clientv3.OpPut(fmt.Sprintf("%s%032x", location, batch*100+i), string(value))
		}
		if _, err := cli.Txn(t.Context()).Then(puts...).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	addr := g.nodes[0].Addr().String()
	if _, err := chatOnce(grpctest.CallContext(t), rawClient(t, addr, "127.0.0.1"), busy); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var held, ended atomic.Int64
	var wg sync.WaitGroup
	for host := 2; host <= 5; host++ {
		conn := rawClient(t, addr, fmt.Sprintf("127.0.0.%d", host))
		for range 16 {
			wg.Go(func() {
				for ctx.Err() == nil {
					stream, err := pb.NewRouteGuideClient(conn).RouteChat(ctx)
					if err != nil || stream.Send(busy) != nil {
						continue
					}
					held.Add(1)
					// Read nothing for longer than the node waits, then
					// see how the stream ended, and post again.
					select {
					case <-ctx.Done():
					case <-time.After(wait + time.Second):
					}
					for {
						err := stream.RecvMsg(new(pb.RouteNote))
						if status.Code(err) == codes.DeadlineExceeded {
							ended.Add(1)
						}
						if err != nil {
							break
						}
					}
				}
			})
		}
	}
	poll.Until(t, 30*time.Second, "the attackers to hold their streams", func() bool { return held.Load() >= 48 })

	honest := rawClient(t, addr, "127.0.0.6")
	var through int
	var refusals []string
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for i := range 20 {
		<-tick.C
		if _, err := chatOnce(grpctest.CallContext(t), honest, note(1, 1, fmt.Sprint("honest ", i))); err != nil {
			refusals = append(refusals, err.Error())
		} else {
			through++
		}
	}
	cancel()
	wg.Wait()
	if through < 19 {
		t.Errorf("the honest client got %d of 20 posts through; refused: %q", through, refusals)
	}
	if ended.Load() == 0 {
		t.Errorf("no unread answer ended with DEADLINE_EXCEEDED within %v", 20*time.Second)
	}
	f := scrape(t, g.nodes[0].MetricsAddr())
	g.finish(t, "unread-answers-few-hosts", uint64(node.DefaultConfig().Limits.NoteWrites)*uint64(node.DefaultConfig().NoteLimits.AnswerBytes)*2+32<<20,
		fmt.Sprintf("honest_through=%d/20 attacker_posts=%d ended_deadline=%d refused_note_writes=%v", through, held.Load(), ended.Load(),
			sumOf(f, "routeguide_limit_rejections_total", "limit", "note_writes")))
}
