package routeguide_test

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/testutils/grpctest"
	"github.com/routeguide-cluster/routeguide/routeguide"
	"github.com/routeguide-cluster/routeguide/routeguide/contract"
	"github.com/routeguide-cluster/routeguide/routeguide/features"
	"github.com/routeguide-cluster/routeguide/routeguide/notes"
	"github.com/routeguide-cluster/routeguide/routeguide/notes/notestest"
)

// TestMain fails the package when its tests leave goroutines running: every
// server, client and stream a test starts must be stopped by its cleanup.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func point(lat, lon int32) *pb.Point { return &pb.Point{Latitude: lat, Longitude: lon} }

func feature(name string, lat, lon int32) *pb.Feature {
	return &pb.Feature{Name: name, Location: point(lat, lon)}
}

func note(lat, lon int32, message string) *pb.RouteNote {
	return &pb.RouteNote{Location: point(lat, lon), Message: message}
}

// config serves db with an unbounded note store, no limits and no observer.
func config(db *features.DB) routeguide.Config {
	return routeguide.Config{Features: db, Notes: notes.NewMemory(notes.Limits{})}
}

// startServer serves cfg on a real gRPC server on 127.0.0.1:0 and returns a
// client connected to it, and its address for more clients. The server is
// ready when startServer returns, and stopped by t's cleanup.
func startServer(t testing.TB, cfg routeguide.Config, opts ...grpc.ServerOption) (pb.RouteGuideClient, string) {
	t.Helper()
	return serve(t, routeguide.NewServer(cfg), opts...)
}

// serve is startServer for any implementation of the service.
func serve(t testing.TB, impl pb.RouteGuideServer, opts ...grpc.ServerOption) (pb.RouteGuideClient, string) {
	t.Helper()
	srv := grpc.NewServer(opts...)
	pb.RegisterRouteGuideServer(srv, impl)
	addr := grpctest.Serve(t, srv)
	return pb.NewRouteGuideClient(dial(t, addr)), addr
}

// dial connects to addr and waits until the connection is ready, which
// needs the server to accept it and answer the HTTP/2 handshake. The
// connection is closed by t's cleanup.
func dial(t testing.TB, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatalf("new client for %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn.Connect()
	for state := conn.GetState(); state != connectivity.Ready; state = conn.GetState() {
		if !conn.WaitForStateChange(ctx, state) {
			t.Fatalf("connect to %s: still %v after 10s", addr, state)
		}
	}
	return conn
}

func listFeatures(ctx context.Context, client pb.RouteGuideClient, rect *pb.Rectangle) ([]*pb.Feature, error) {
	stream, err := client.ListFeatures(ctx, rect)
	if err != nil {
		return nil, err
	}
	return grpctest.RecvAll(stream.Recv)
}

func recordRoute(ctx context.Context, client pb.RouteGuideClient, points []*pb.Point) (*pb.RouteSummary, error) {
	stream, err := client.RecordRoute(ctx)
	if err != nil {
		return nil, err
	}
	for _, p := range points {
		if err := stream.Send(p); err == io.EOF {
			break // the server has answered; CloseAndRecv returns its status
		} else if err != nil {
			return nil, err
		}
	}
	return stream.CloseAndRecv()
}

// chat sends every note on one RouteChat stream, closes it and returns all
// the answers, one flat list, with the error that ended the stream, if any.
func chat(ctx context.Context, client pb.RouteGuideClient, sent ...*pb.RouteNote) ([]*pb.RouteNote, error) {
	stream, err := client.RouteChat(ctx)
	if err != nil {
		return nil, err
	}
	for _, n := range sent {
		if err := stream.Send(n); err == io.EOF {
			break // the server has ended the call; Recv returns its status
		} else if err != nil {
			return nil, err
		}
	}
	if err := stream.CloseSend(); err != nil {
		return nil, err
	}
	return grpctest.RecvAll(stream.Recv)
}

// post sends n on stream and reads the want answers it brings.
func post(t *testing.T, stream pb.RouteGuide_RouteChatClient, n *pb.RouteNote, want int) []string {
	t.Helper()
	if err := stream.Send(n); err != nil {
		t.Fatalf("send note %q: %v", n.Message, err)
	}
	got := make([]string, want)
	for i := range got {
		answer, err := stream.Recv()
		if err != nil {
			t.Fatalf("answer %d to note %q: %v", i, n.Message, err)
		}
		got[i] = answer.Message
	}
	return got
}

func messages(list []*pb.RouteNote) []string {
	out := make([]string, len(list))
	for i, n := range list {
		out[i] = n.Message
	}
	return out
}

func names(list []*pb.Feature) []string {
	out := make([]string, len(list))
	for i, f := range list {
		out[i] = f.Name
	}
	return out
}

// wantStatus fails t unless err is a status with code and a message that
// contains every one of substrings.
func wantStatus(t *testing.T, err error, code codes.Code, substrings ...string) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != code {
		t.Fatalf("error = %v, want code %v", err, code)
	}
	for _, s := range substrings {
		if !strings.Contains(st.Message(), s) {
			t.Errorf("message %q does not say %q", st.Message(), s)
		}
	}
}

// wantServing fails t unless the server still answers a good call.
func wantServing(t *testing.T, client pb.RouteGuideClient) {
	t.Helper()
	if _, err := client.GetFeature(grpctest.CallContext(t), point(0, 0)); err != nil {
		t.Fatalf("the server no longer serves: GetFeature: %v", err)
	}
}

func TestGetFeatureReturnsTheFirstFeatureAtExactlyThePoint(t *testing.T) {
	db := features.New([]*pb.Feature{
		feature("first at A", 407838351, -746143763),
		feature("B", 1, 2),
		feature("second at A", 407838351, -746143763),
		feature("", 3, 4), // a known point without a name, as the canonical file has
	})
	client, _ := startServer(t, config(db))
	tests := []struct {
		name  string
		point *pb.Point
		want  *pb.Feature
	}{
		{"the feature at the point", point(1, 2), feature("B", 1, 2)},
		{"several at one point: the first in file order", point(407838351, -746143763), feature("first at A", 407838351, -746143763)},
		{"unnamed feature", point(3, 4), feature("", 3, 4)},
		{"one unit of longitude off is unknown", point(407838351, -746143762), feature("", 407838351, -746143762)},
		{"one unit of latitude off is unknown", point(407838352, -746143763), feature("", 407838352, -746143763)},
		{"swapped coordinates are unknown", point(2, 1), feature("", 2, 1)},
		{"unknown point", point(0, 0), feature("", 0, 0)},
		{"north-west corner of the globe", point(900000000, -1800000000), feature("", 900000000, -1800000000)},
		{"south-east corner of the globe", point(-900000000, 1800000000), feature("", -900000000, 1800000000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := client.GetFeature(grpctest.CallContext(t), tt.point)
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, tt.want) {
				t.Errorf("GetFeature(%v) = %v, want %v", tt.point, got, tt.want)
			}
		})
	}
}

func TestListFeaturesStreamsEveryFeatureInsideTheRectangleEdgesIncluded(t *testing.T) {
	// The box is latitude [10, 20] by longitude [-20, -10], in E7 units.
	db := features.New([]*pb.Feature{
		feature("inside", 15, -15),
		feature("north-west corner", 20, -20),
		feature("south edge", 10, -15),
		feature("north of the box", 21, -15),
		feature("north-east corner", 20, -10),
		feature("west of the box", 15, -21),
		feature("east edge", 15, -10),
		feature("south-west corner", 10, -20),
		feature("south of the box", 9, -15),
		feature("north edge", 20, -15),
		feature("east of the box", 15, -9),
		feature("south-east corner", 10, -10),
		feature("west edge", 15, -20),
		feature("also inside, at the same point", 15, -15),
		feature("diagonally outside", 21, -9),
	})
	inBox := []string{
		"inside", "north-west corner", "south edge", "north-east corner", "east edge", "south-west corner",
		"north edge", "south-east corner", "west edge", "also inside, at the same point",
	}
	client, _ := startServer(t, config(db))
	tests := []struct {
		name   string
		lo, hi *pb.Point
		want   []string
	}{
		{"lo south-west, hi north-east", point(10, -20), point(20, -10), inBox},
		{"lo north-east, hi south-west", point(20, -10), point(10, -20), inBox},
		{"lo north-west, hi south-east", point(20, -20), point(10, -10), inBox},
		{"lo south-east, hi north-west", point(10, -10), point(20, -20), inBox},
		{"a box of one point holds every feature there", point(15, -15), point(15, -15), []string{"inside", "also inside, at the same point"}},
		{"a box of one line is its edge", point(10, -20), point(20, -20), []string{"north-west corner", "south-west corner", "west edge"}},
		{"an empty box streams nothing", point(100, 100), point(200, 200), nil},
		{"the whole globe holds every feature", point(-900000000, -1800000000), point(900000000, 1800000000), names(db.All())},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := listFeatures(grpctest.CallContext(t), client, &pb.Rectangle{Lo: tt.lo, Hi: tt.hi})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(names(got), tt.want) {
				t.Errorf("ListFeatures(%v, %v) = %q, want %q in file order", tt.lo, tt.hi, names(got), tt.want)
			}
		})
	}
}

// oneDegree is the haversine length of one degree of a great circle with
// R = 6371000 m, 6371000*pi/180 = 111194.93 m, truncated.
const oneDegree = 111194

// halfGlobe is the distance between antipodes, 6371000*pi = 20015086.80 m,
// truncated.
const halfGlobe = 20015086

func TestRecordRouteSummarisesTheRoute(t *testing.T) {
	db := features.New([]*pb.Feature{
		feature("first at A", 10, 10),
		feature("B", 20, 20),
		feature("second at A", 10, 10),
		feature("third at A", 10, 10),
	})
	client, _ := startServer(t, config(db))
	tests := []struct {
		name   string
		points []*pb.Point
		want   *pb.RouteSummary
	}{
		{"an empty route is all zeros", nil, &pb.RouteSummary{}},
		{"a one-point route has no distance", []*pb.Point{point(20, 20)},
			&pb.RouteSummary{PointCount: 1, FeatureCount: 1}},
		{"every feature at a point counts", []*pb.Point{point(10, 10)},
			&pb.RouteSummary{PointCount: 1, FeatureCount: 3}},
		{"a point passed twice counts its features twice", []*pb.Point{point(20, 20), point(20, 20)},
			&pb.RouteSummary{PointCount: 2, FeatureCount: 2}},
		// The last leg is 16 cm long, which truncates to 0 m.
		{"unknown points count no feature", []*pb.Point{point(0, 0), point(0, 0), point(11, 10)},
			&pb.RouteSummary{PointCount: 3}},
		{"one degree of longitude along the equator", []*pb.Point{point(0, 0), point(0, 1e7)},
			&pb.RouteSummary{PointCount: 2, Distance: oneDegree}},
		{"one degree of longitude westwards", []*pb.Point{point(0, 1e7), point(0, 0)},
			&pb.RouteSummary{PointCount: 2, Distance: oneDegree}},
		{"one degree of latitude along a meridian", []*pb.Point{point(45e7, 7e7), point(46e7, 7e7)},
			&pb.RouteSummary{PointCount: 2, Distance: oneDegree}},
		// Summed before truncating, 2 x 111194.93 would read 222389.
		{"each leg is truncated before summing", []*pb.Point{point(0, 0), point(0, 1e7), point(0, 2e7)},
			&pb.RouteSummary{PointCount: 3, Distance: 2 * oneDegree}},
		{"across the antimeridian the short way round", []*pb.Point{point(0, 1795e6), point(0, -1795e6)},
			&pb.RouteSummary{PointCount: 2, Distance: oneDegree}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := recordRoute(grpctest.CallContext(t), client, tt.points)
			if err != nil {
				t.Fatal(err)
			}
			// Every route here takes well under a second: elapsed_time is 0.
			if !proto.Equal(got, tt.want) {
				t.Errorf("RecordRoute(%v) = %v, want %v", tt.points, got, tt.want)
			}
		})
	}
}

// haversine is the test's own great-circle distance in metres, with the same
// formula as the server but written the way the canonical servers write it:
// degrees first, then radians.
func haversine(from, to *pb.Point) float64 {
	const r = 6371000
	radians := func(e7 int32) float64 { return float64(e7) / 1e7 * math.Pi / 180 }
	lat1, lat2 := radians(from.Latitude), radians(to.Latitude)
	dLat := lat2 - lat1
	dLon := radians(to.Longitude) - radians(from.Longitude)
	a := math.Sin(dLat/2)*math.Sin(dLat/2) + math.Cos(lat1)*math.Cos(lat2)*math.Sin(dLon/2)*math.Sin(dLon/2)
	return r * 2 * math.Atan2(math.Sqrt(a), math.Sqrt(1-a))
}

// randomPoint is a point anywhere on the globe.
func randomPoint(rng *rand.Rand) *pb.Point {
	return point(int32(rng.Int64N(2*features.MaxLatitude+1)-features.MaxLatitude),
		int32(rng.Int64N(2*features.MaxLongitude+1)-features.MaxLongitude))
}

func TestRecordRouteDistanceIsTheSumOfLegsTruncatedToWholeMetres(t *testing.T) {
	client, _ := startServer(t, config(features.New(nil)))
	rng := rand.New(rand.NewPCG(1, 2))
	// Routes of 100 points: the fractions of metre of 99 legs add up to many
	// metres, so summing before truncating would give another answer.
	tests := []struct {
		name string
		next func(last *pb.Point) *pb.Point
	}{
		{"random points over the globe", func(*pb.Point) *pb.Point {
			return randomPoint(rng)
		}},
		{"a walk through Manhattan", func(last *pb.Point) *pb.Point {
			if last == nil {
				return point(407484000, -739857000)
			}
			return point(last.Latitude+rng.Int32N(20001)-10000, last.Longitude+rng.Int32N(20001)-10000)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var route []*pb.Point
			var last *pb.Point
			for range 100 {
				last = tt.next(last)
				route = append(route, last)
			}
			var want int64
			var untruncated float64
			for i := 1; i < len(route); i++ {
				leg := haversine(route[i-1], route[i])
				want += int64(int32(leg))
				untruncated += leg
			}
			if want == int64(untruncated) {
				t.Fatalf("the route does not tell per-leg truncation (%d m) from truncating the sum", want)
			}
			got, err := recordRoute(grpctest.CallContext(t), client, route)
			if err != nil {
				t.Fatal(err)
			}
			if int64(got.Distance) != want {
				t.Errorf("distance = %d m, want %d m (truncating the sum would give %d m)", got.Distance, want, int64(untruncated))
			}
		})
	}
}

func TestRecordRouteDistanceSaturatesAtMaxInt32(t *testing.T) {
	client, _ := startServer(t, config(features.New(nil)))
	tests := []struct {
		name string
		legs int
		want int32
	}{
		{"107 legs of half the globe still fit", 107, 107 * halfGlobe},
		{"108 legs of half the globe saturate", 108, math.MaxInt32},
		{"10000 legs stay saturated instead of wrapping", 10000, math.MaxInt32},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			route := []*pb.Point{point(0, 0)}
			for i := range tt.legs {
				route = append(route, point(0, int32(1-i%2)*features.MaxLongitude))
			}
			got, err := recordRoute(grpctest.CallContext(t), client, route)
			if err != nil {
				t.Fatal(err)
			}
			if got.Distance != tt.want || got.PointCount != int32(tt.legs+1) {
				t.Errorf("%d legs: distance = %d m over %d points, want %d m over %d points",
					tt.legs, got.Distance, got.PointCount, tt.want, tt.legs+1)
			}
		})
	}
}

// For some antipodes, haversine's a rounds to just above 1, where sqrt(1-a)
// is NaN; a server that does not clamp it turns the leg into -2^31 metres.
func TestRecordRouteMeasuresAntipodesAsHalfTheGlobe(t *testing.T) {
	client, _ := startServer(t, config(features.New(nil)))
	tests := []struct {
		name     string
		from, to *pb.Point
	}{
		{"along the equator", point(0, 0), point(0, features.MaxLongitude)},
		{"pole to pole", point(features.MaxLatitude, 0), point(-features.MaxLatitude, 0)},
		{"0.02 degrees north and south, a rounds above 1", point(200000, 0), point(-200000, features.MaxLongitude)},
		{"0.29 degrees north and south, a rounds above 1", point(2900000, 0), point(-2900000, features.MaxLongitude)},
		{"0.68 degrees north and south, a rounds above 1", point(6800000, -900000000), point(-6800000, 900000000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := recordRoute(grpctest.CallContext(t), client, []*pb.Point{tt.from, tt.to})
			if err != nil {
				t.Fatal(err)
			}
			if got.Distance != halfGlobe {
				t.Errorf("distance from %v to %v = %d m, want %d m", tt.from, tt.to, got.Distance, halfGlobe)
			}
		})
	}
}

func TestBadInputIsInvalidArgumentAndTheServerStaysUp(t *testing.T) {
	client, _ := startServer(t, config(features.New([]*pb.Feature{feature("A", 1, 1)})))
	const (
		north = features.MaxLatitude + 1
		south = -features.MaxLatitude - 1
		east  = features.MaxLongitude + 1
		west  = -features.MaxLongitude - 1
	)
	ok := point(1, 1)
	getFeature := func(p *pb.Point) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := client.GetFeature(ctx, p)
			return err
		}
	}
	list := func(lo, hi *pb.Point) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := listFeatures(ctx, client, &pb.Rectangle{Lo: lo, Hi: hi})
			return err
		}
	}
	record := func(route ...*pb.Point) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := recordRoute(ctx, client, route)
			return err
		}
	}
	routeChat := func(sent ...*pb.RouteNote) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := chat(ctx, client, sent...)
			return err
		}
	}
	tests := []struct {
		name string
		call func(context.Context) error
		want []string // substrings of the status message
	}{
		{"GetFeature latitude north of the pole", getFeature(point(north, 0)), []string{"point", "latitude 900000001"}},
		{"GetFeature latitude south of the pole", getFeature(point(south, 0)), []string{"point", "latitude -900000001"}},
		{"GetFeature longitude east of 180", getFeature(point(0, east)), []string{"point", "longitude 1800000001"}},
		{"GetFeature longitude west of -180", getFeature(point(0, west)), []string{"point", "longitude -1800000001"}},
		{"GetFeature latitude at the int32 minimum", getFeature(point(math.MinInt32, 0)), []string{"latitude -2147483648"}},
		{"ListFeatures lo latitude", list(point(north, 0), ok), []string{"rectangle.lo", "latitude"}},
		{"ListFeatures lo longitude", list(point(0, west), ok), []string{"rectangle.lo", "longitude"}},
		{"ListFeatures hi latitude", list(ok, point(south, 0)), []string{"rectangle.hi", "latitude"}},
		{"ListFeatures hi longitude", list(ok, point(0, east)), []string{"rectangle.hi", "longitude"}},
		{"ListFeatures missing lo", list(nil, ok), []string{"rectangle.lo is missing"}},
		{"ListFeatures missing hi", list(ok, nil), []string{"rectangle.hi is missing"}},
		{"ListFeatures missing both corners", list(nil, nil), []string{"rectangle.lo is missing"}},
		{"RecordRoute first point latitude", record(point(north, 0)), []string{"route point 0", "latitude"}},
		{"RecordRoute first point longitude", record(point(0, west)), []string{"route point 0", "longitude"}},
		{"RecordRoute a bad point after good ones", record(ok, ok, point(0, east)), []string{"route point 2", "longitude"}},
		{"RouteChat location latitude", routeChat(note(south, 0, "x")), []string{"note 0", "location", "latitude"}},
		{"RouteChat location longitude", routeChat(note(0, east, "x")), []string{"note 0", "location", "longitude"}},
		{"RouteChat note without a location", routeChat(&pb.RouteNote{Message: "nowhere"}), []string{"note 0", "location is missing"}},
		{"RouteChat a bad note after a good one", routeChat(note(1, 1, "fine"), &pb.RouteNote{}), []string{"note 1", "location is missing"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantStatus(t, tt.call(grpctest.CallContext(t)), codes.InvalidArgument, tt.want...)
			wantServing(t, client)
		})
	}
}

// recorder is an Observer that remembers what it hears.
type recorder struct {
	posted chan struct{} // gets a value for each note posted, while it has room

	mu     sync.Mutex
	routes []*pb.RouteSummary
	notes  int
	limits []string
}

func newRecorder() *recorder { return &recorder{posted: make(chan struct{}, 100)} }

func (r *recorder) RouteRecorded(summary *pb.RouteSummary) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.routes = append(r.routes, proto.CloneOf(summary))
}

func (r *recorder) NotePosted() {
	r.mu.Lock()
	r.notes++
	r.mu.Unlock()
	select {
	case r.posted <- struct{}{}:
	default:
	}
}

func (r *recorder) LimitRejected(limit string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.limits = append(r.limits, limit)
}

func (r *recorder) heard() (routes []*pb.RouteSummary, notes int, limits []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.routes), r.notes, slices.Clone(r.limits)
}

func TestRecordRouteRejectsPointsPastTheLimit(t *testing.T) {
	rec := newRecorder()
	cfg := config(features.New(nil))
	cfg.Limits.RoutePoints = 3
	cfg.Observer = rec
	client, _ := startServer(t, cfg)
	ctx := grpctest.CallContext(t)
	p := point(1, 1)

	got, err := recordRoute(ctx, client, []*pb.Point{p, p, p})
	if err != nil || got.PointCount != 3 {
		t.Fatalf("a route of exactly the limit: %v, %v; want 3 points", got, err)
	}
	_, err = recordRoute(ctx, client, []*pb.Point{p, p, p, p})
	wantStatus(t, err, codes.ResourceExhausted, "at most 3 points")
	wantServing(t, client)
	if _, _, limits := rec.heard(); !slices.Equal(limits, []string{"route_points"}) {
		t.Errorf("limits rejected = %q, want [route_points]", limits)
	}
}

func TestRouteChatRejectsNotesPastTheStreamLimitAndKeepsTheEarlierOnes(t *testing.T) {
	rec := newRecorder()
	cfg := config(features.New(nil))
	cfg.Limits.ChatNotes = 2
	cfg.Observer = rec
	client, _ := startServer(t, cfg)
	ctx := grpctest.CallContext(t)

	got, err := chat(ctx, client, note(1, 1, "a1"), note(1, 1, "a2"), note(1, 1, "a3"))
	wantStatus(t, err, codes.ResourceExhausted, "at most 2 notes")
	if want := []string{"a1", "a1", "a2"}; !slices.Equal(messages(got), want) {
		t.Errorf("answers before the rejection = %q, want %q", messages(got), want)
	}
	// A new stream may send again, and the notes stored before are there.
	got, err = chat(ctx, client, note(1, 1, "b1"))
	if want := []string{"a1", "a2", "b1"}; err != nil || !slices.Equal(messages(got), want) {
		t.Errorf("next stream = %q, %v; want %q", messages(got), err, want)
	}
	if _, posted, limits := rec.heard(); posted != 3 || !slices.Equal(limits, []string{"chat_notes"}) {
		t.Errorf("observer heard %d notes posted and limits %q, want 3 and [chat_notes]", posted, limits)
	}
}

func TestRouteChatRejectsNotesTheStoreCannotKeepAndKeepsTheEarlierOnes(t *testing.T) {
	type chatCall struct {
		sent    []*pb.RouteNote
		want    []string // the answers
		wantErr string   // a substring of a ResourceExhausted message, or "" for no error
	}
	tests := []struct {
		name   string
		limits notes.Limits
		calls  []chatCall
		stored int
	}{
		{
			name:   "notes per location",
			limits: notes.Limits{PerLocation: 2},
			calls: []chatCall{
				{[]*pb.RouteNote{note(1, 1, "a1"), note(1, 1, "a2"), note(1, 1, "a3")}, []string{"a1", "a1", "a2"}, "keeps 2 notes at most"},
				{[]*pb.RouteNote{note(1, 1, "a4")}, nil, "keeps 2 notes at most"},
				{[]*pb.RouteNote{note(2, 2, "b1")}, []string{"b1"}, ""}, // another location still takes notes
			},
			stored: 3,
		},
		{
			name: "bytes of all notes",
			// Room for three notes of two bytes.
			limits: notes.Limits{Bytes: 3 * (notes.NoteOverhead + 2)},
			calls: []chatCall{
				{[]*pb.RouteNote{note(1, 1, "a1"), note(1, 1, "a2"), note(2, 2, "big")}, []string{"a1", "a1", "a2"}, "store is full"},
				// A note that fits exactly is kept, and comes back with the earlier ones.
				{[]*pb.RouteNote{note(1, 1, "a3")}, []string{"a1", "a2", "a3"}, ""},
				{[]*pb.RouteNote{note(2, 2, "")}, nil, "store is full"},
			},
			stored: 3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newRecorder()
			store := notes.NewMemory(tt.limits)
			client, _ := startServer(t, routeguide.Config{Features: features.New(nil), Notes: store, Observer: rec})
			wantLimits := []string{}
			for i, call := range tt.calls {
				got, err := chat(grpctest.CallContext(t), client, call.sent...)
				if call.wantErr == "" {
					if err != nil {
						t.Fatalf("call %d: %v", i, err)
					}
				} else {
					wantStatus(t, err, codes.ResourceExhausted, call.wantErr)
					wantLimits = append(wantLimits, "stored_notes")
				}
				if !slices.Equal(messages(got), call.want) {
					t.Errorf("call %d answers = %q, want %q", i, messages(got), call.want)
				}
				wantServing(t, client)
			}
			if store.Len() != tt.stored {
				t.Errorf("store holds %d notes, want %d", store.Len(), tt.stored)
			}
			if _, _, limits := rec.heard(); !slices.Equal(limits, wantLimits) {
				t.Errorf("limits rejected = %q, want %q", limits, wantLimits)
			}
		})
	}
}

// padded returns p with size bytes of an unknown field, which the server
// must still receive in full before it can decode the point.
func padded(p *pb.Point, size int) *pb.Point {
	p.ProtoReflect().SetUnknown(protowire.AppendBytes(protowire.AppendTag(nil, 99, protowire.BytesType), make([]byte, size)))
	return p
}

func TestMessagesOverTheSizeLimitAreResourceExhausted(t *testing.T) {
	const maxBytes = 1024
	client, _ := startServer(t, config(features.New(nil)), grpc.MaxRecvMsgSize(maxBytes))
	tests := []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"GetFeature", func(ctx context.Context) error {
			_, err := client.GetFeature(ctx, padded(point(1, 1), maxBytes))
			return err
		}},
		{"ListFeatures", func(ctx context.Context) error {
			_, err := listFeatures(ctx, client, &pb.Rectangle{Lo: padded(point(1, 1), maxBytes), Hi: point(2, 2)})
			return err
		}},
		{"RecordRoute", func(ctx context.Context) error {
			_, err := recordRoute(ctx, client, []*pb.Point{point(1, 1), padded(point(1, 1), maxBytes)})
			return err
		}},
		{"RouteChat", func(ctx context.Context) error {
			_, err := chat(ctx, client, note(3, 3, "small"), note(3, 3, strings.Repeat("x", maxBytes)))
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantStatus(t, tt.call(grpctest.CallContext(t)), codes.ResourceExhausted, "larger than max")
			wantServing(t, client)
		})
	}
	// The note sent before the one too large was kept.
	got, err := chat(grpctest.CallContext(t), client, note(3, 3, "after"))
	if want := []string{"small", "after"}; err != nil || !slices.Equal(messages(got), want) {
		t.Errorf("RouteChat after a rejected note = %q, %v; want %q", messages(got), err, want)
	}
}

func TestRouteChatAnswersEveryNoteAtTheLocationInPostingOrder(t *testing.T) {
	client, _ := startServer(t, config(features.New(nil)))
	ctx := grpctest.CallContext(t)
	stream, err := client.RouteChat(ctx)
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		note *pb.RouteNote
		want []string
	}{
		{note(1, 1, "a1"), []string{"a1"}},
		{note(1, 1, "a2"), []string{"a1", "a2"}},
		{note(2, 1, "b1"), []string{"b1"}}, // another location: nothing from A
		{note(1, 2, "c1"), []string{"c1"}},
		{note(1, 1, "a3"), []string{"a1", "a2", "a3"}},
	}
	for _, step := range steps {
		if got := post(t, stream, step.note, len(step.want)); !slices.Equal(got, step.want) {
			t.Errorf("answers to %q = %q, want %q", step.note.Message, got, step.want)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if extra, err := stream.Recv(); err != io.EOF {
		t.Errorf("after the last answer: %v, %v; want the end of the stream", extra, err)
	}
}

func TestRouteChatStreamsOfTwoClientsSeeEachOthersNotesInPostingOrder(t *testing.T) {
	_, addr := startServer(t, config(features.New(nil)))
	ctx := grpctest.CallContext(t)
	var streams [2]pb.RouteGuide_RouteChatClient
	for i := range streams {
		var err error
		if streams[i], err = pb.NewRouteGuideClient(dial(t, addr)).RouteChat(ctx); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		client int
		note   *pb.RouteNote
		want   []string
	}{
		{0, note(7, 7, "first from 0"), []string{"first from 0"}},
		{1, note(7, 7, "first from 1"), []string{"first from 0", "first from 1"}},
		{1, note(7, 8, "elsewhere from 1"), []string{"elsewhere from 1"}},
		{0, note(7, 7, "second from 0"), []string{"first from 0", "first from 1", "second from 0"}},
		{1, note(7, 7, "second from 1"), []string{"first from 0", "first from 1", "second from 0", "second from 1"}},
	}
	for _, step := range steps {
		if got := post(t, streams[step.client], step.note, len(step.want)); !slices.Equal(got, step.want) {
			t.Errorf("client %d: answers to %q = %q, want %q", step.client, step.note.Message, got, step.want)
		}
	}
}

func TestRouteChatConcurrentStreamsAgreeOnOnePostingOrder(t *testing.T) {
	client, addr := startServer(t, config(features.New(nil)))
	ctx := grpctest.CallContext(t)
	const clients, each = 4, 25
	// answers[c][i] is the answer to note i of client c.
	answers := make([][][]string, clients)
	var wg sync.WaitGroup
	for c := range clients {
		chatter := pb.NewRouteGuideClient(dial(t, addr))
		answers[c] = make([][]string, each)
		wg.Go(func() {
			stream, err := chatter.RouteChat(ctx)
			if err != nil {
				t.Errorf("client %d: %v", c, err)
				return
			}
			for i := range each {
				sent := fmt.Sprintf("client %d note %d", c, i)
				if err := stream.Send(note(9, 9, sent)); err != nil {
					t.Errorf("client %d: send: %v", c, err)
					return
				}
				// The answer ends with the note just sent, its only copy.
				for {
					n, err := stream.Recv()
					if err != nil {
						t.Errorf("client %d: answer to %q: %v", c, sent, err)
						return
					}
					answers[c][i] = append(answers[c][i], n.Message)
					if n.Message == sent {
						break
					}
				}
			}
			if err := stream.CloseSend(); err != nil {
				t.Errorf("client %d: close: %v", c, err)
			}
			if _, err := stream.Recv(); err != io.EOF {
				t.Errorf("client %d: after the last answer: %v, want the end of the stream", c, err)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	got, err := chat(ctx, client, note(9, 9, "last"))
	if err != nil {
		t.Fatal(err)
	}
	notestest.CheckOnePostingOrder(t, messages(got), clients*each+1, answers)
}

func TestRouteChatReaderThatNeverReadsDoesNotBlockOthersAtItsLocation(t *testing.T) {
	tests := []struct {
		name     string
		sameConn bool
	}{
		{"another client", false},
		{"another stream on the same connection", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const lat, lon = 40e7, -74e7
			store := notes.NewMemory(notes.Limits{})
			// 16 notes of 16 KiB: the answer to one more note here is 17 x 16
			// KiB = 272 KiB, twice what a stream that is not read can take:
			// 64 KiB of flow control window and 64 KiB queued by the server.
			var want []string
			for i := range 16 {
				message := fmt.Sprintf("%02d%s", i, strings.Repeat("x", 16<<10))
				if _, err := store.Post(t.Context(), note(lat, lon, message)); err != nil {
					t.Fatal(err)
				}
				want = append(want, message)
			}
			want = append(want, "never read", "other")
			rec := newRecorder()
			_, addr := startServer(t, routeguide.Config{Features: features.New(nil), Notes: store, Observer: rec})
			slowConn, _ := postUnread(t, addr, lat, lon)
			select {
			case <-rec.posted:
				// The slow stream's handler has stored its note and is now
				// stuck sending the 272 KiB answer that nobody reads.
			case <-time.After(10 * time.Second):
				t.Fatal("the server did not post the slow stream's note within 10s")
			}
			other := pb.NewRouteGuideClient(slowConn)
			if !tt.sameConn {
				other = pb.NewRouteGuideClient(dial(t, addr))
			}
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			got, err := chat(ctx, other, note(lat, lon, "other"))
			if err != nil {
				t.Fatalf("RouteChat beside a stalled stream: %v", err)
			}
			if !slices.Equal(messages(got), want) {
				t.Errorf("got %d notes ending %q, want %d ending %q", len(got), messages(got)[len(got)-2:], len(want), want[len(want)-2:])
			}
		})
	}
}

func TestObserverHearsRoutesNotesAndLimits(t *testing.T) {
	rec := newRecorder()
	cfg := routeguide.Config{
		Features: features.New([]*pb.Feature{feature("A", 0, 0)}),
		Notes:    notes.NewMemory(notes.Limits{PerLocation: 1, MessageBytes: 30}),
		Limits:   routeguide.Limits{RoutePoints: 2, ChatNotes: 2},
		Observer: rec,
	}
	client, _ := startServer(t, cfg)
	ctx := grpctest.CallContext(t)

	if _, err := recordRoute(ctx, client, []*pb.Point{point(0, 0), point(0, 1e7)}); err != nil {
		t.Fatal(err)
	}
	_, err := recordRoute(ctx, client, []*pb.Point{point(0, 0), point(0, 0), point(0, 0)})
	wantStatus(t, err, codes.ResourceExhausted)
	_, err = chat(ctx, client, note(1, 1, "kept"), note(1, 1, "one too many here"))
	wantStatus(t, err, codes.ResourceExhausted)
	_, err = chat(ctx, client, note(2, 2, "kept"), note(3, 3, "kept"), note(4, 4, "one too many on this stream"))
	wantStatus(t, err, codes.ResourceExhausted)
	_, err = chat(ctx, client, note(5, 5, "a message longer than thirty bytes"))
	wantStatus(t, err, codes.ResourceExhausted)
	_, err = recordRoute(ctx, client, []*pb.Point{point(features.MaxLatitude+1, 0)})
	wantStatus(t, err, codes.InvalidArgument) // not a limit

	routes, posted, limits := rec.heard()
	wantRoutes := []*pb.RouteSummary{{PointCount: 2, FeatureCount: 1, Distance: oneDegree}}
	if !slices.EqualFunc(routes, wantRoutes, func(a, b *pb.RouteSummary) bool { return proto.Equal(a, b) }) {
		t.Errorf("routes recorded = %v, want %v", routes, wantRoutes)
	}
	if posted != 3 {
		t.Errorf("notes posted = %d, want 3", posted)
	}
	if want := []string{"route_points", "stored_notes", "chat_notes", "note_bytes"}; !slices.Equal(limits, want) {
		t.Errorf("limits rejected = %q, want %q", limits, want)
	}
}

// TestRouteChatAnswerNotReadWithinItsWaitEndsTheStreamAndGivesBackItsPlace
// has one client hold the only note-write place with an answer it never
// reads: past AnswerWait the node ends that stream, counts it, and another
// client posts.
func TestRouteChatAnswerNotReadWithinItsWaitEndsTheStreamAndGivesBackItsPlace(t *testing.T) {
	const lat, lon = 40e7, -74e7
	store := notes.NewMemory(notes.Limits{})
	// An answer of 17 x 16 KiB, more than an unread stream takes.
	for i := range 16 {
		if _, err := store.Post(t.Context(), note(lat, lon, fmt.Sprintf("%02d%s", i, strings.Repeat("x", 16<<10)))); err != nil {
			t.Fatal(err)
		}
	}
	rec := newRecorder()
	limits := routeguide.Limits{NoteWrites: 1, NoteWriteWait: 10 * time.Second, AnswerWait: 300 * time.Millisecond}
	_, addr := startServer(t, routeguide.Config{Features: features.New(nil), Notes: store, Observer: rec, Limits: limits})
	_, slow := postUnread(t, addr, lat, lon)
	<-rec.posted
	start := time.Now()
	got, err := chat(grpctest.CallContext(t), pb.NewRouteGuideClient(dial(t, addr)), note(1, 1, "other"))
	if err != nil || len(got) != 1 {
		t.Fatalf("a post while another client held the only place: %v, %d notes", err, len(got))
	}
	if waited := time.Since(start); waited < limits.AnswerWait/2 {
		t.Errorf("the other post waited %v, less than the unread answer's wait: the place was not held", waited)
	}
	rec.mu.Lock()
	limitsHit := slices.Clone(rec.limits)
	rec.mu.Unlock()
	if !slices.Equal(limitsHit, []string{routeguide.LimitAnswerWait}) {
		t.Errorf("limits %q, want one %q", limitsHit, routeguide.LimitAnswerWait)
	}
	// The unread stream is over: reading it gives what was sent, then an
	// error, not the rest of the answer.
	var read int
	for {
		if _, err = slow.Recv(); err != nil {
			break
		}
		read++
	}
	t.Logf("the unread stream gave %d notes, then %v", read, err)
	if read >= 17 || status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("the unread stream gave %d notes, then %v; want fewer than 17 and DeadlineExceeded", read, err)
	}
}

func TestRouteChatRefusesANoteIDOutsideItsBound(t *testing.T) {
	client, _ := startServer(t, config(features.New(nil)))
	for _, id := range []string{strings.Repeat("a", contract.MaxNoteIDBytes+1), "has space", "slash/no"} {
		ctx := metadata.AppendToOutgoingContext(grpctest.CallContext(t), contract.NoteIDHeader, id)
		_, err := chat(ctx, client, note(1, 1, "x"))
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), contract.NoteIDHeader) {
			t.Errorf("note id %q: %v, want InvalidArgument naming %s", id, err, contract.NoteIDHeader)
		}
	}
	ctx := metadata.AppendToOutgoingContext(grpctest.CallContext(t), contract.NoteIDHeader, strings.Repeat("a", contract.MaxNoteIDBytes))
	if _, err := chat(ctx, client, note(1, 1, "x")); err != nil {
		t.Errorf("a note id of %d bytes: %v", contract.MaxNoteIDBytes, err)
	}
}

// postUnread posts the note "never read" at (lat, lon) on a connection of its
// own and reads nothing of the answer. The connection's windows are fixed at
// 64 KiB: with the default, BDP estimation may grow them.
func postUnread(t *testing.T, addr string, lat, lon int32) (*grpc.ClientConn, pb.RouteGuide_RouteChatClient) {
	t.Helper()
	conn := dial(t, addr, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	ctx, stop := context.WithCancel(t.Context())
	t.Cleanup(stop)
	slow, err := pb.NewRouteGuideClient(conn).RouteChat(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := slow.Send(note(lat, lon, "never read")); err != nil {
		t.Fatal(err)
	}
	return conn, slow
}
