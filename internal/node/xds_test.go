package node

import (
	"context"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/routeguide-cluster/routeguide/discovery/xdsserver"
	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/testutils/etcdtest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/grpctest"
)

// subscribeAll asks, on one ADS stream, for the four resources a gRPC
// client asks for.
func subscribeAll(t *testing.T, stream discoverypb.AggregatedDiscoveryService_StreamAggregatedResourcesClient, node *corev3.Node) {
	t.Helper()
	for _, typeURL := range []string{resourcev3.ListenerType, resourcev3.RouteType, resourcev3.ClusterType, resourcev3.EndpointType} {
		if err := stream.Send(&discoverypb.DiscoveryRequest{Node: node, TypeUrl: typeURL, ResourceNames: []string{"routeguide"}}); err != nil {
			t.Fatal(err)
		}
	}
}

// A node that cannot read the registry yet (here etcd is down as it
// starts) serves nothing over xDS: a client keeps what it has, or waits,
// where an empty endpoint list would fail its every call.
func TestXDSServesNothingBeforeTheFirstRegistryRead(t *testing.T) {
	etcd := etcdtest.Start(t)
	etcd.Close()
	tn := newTestNode(t, func(c *Config) { c.Etcd = []string{etcd.ClientURL()} }, nil)
	tn.start() // never ready: it cannot register
	tn.conn = dial(t, tn.Addr().String())

	// Past the node's access check (accessCheckTimeout), after which it
	// follows the registry, or tries to.
	ctx, cancel := context.WithTimeout(t.Context(), accessCheckTimeout+2*time.Second)
	defer cancel()
	stream, err := discoverypb.NewAggregatedDiscoveryServiceClient(tn.conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	subscribeAll(t, stream, &corev3.Node{Id: "test-client"})
	resp, err := stream.Recv()
	if err == nil {
		t.Fatalf("the node served %s (version %s, %d resources) before it read the registry; want nothing", resp.TypeUrl, resp.VersionInfo, len(resp.Resources))
	}
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("stream ended with %v, want it open until the test's deadline", err)
	}
}

// envoyLikeNode is a client's node as Envoy describes itself: an id,
// metadata, and its extensions, some hundreds of them, of about size bytes.
func envoyLikeNode(size int) *corev3.Node {
	n := &corev3.Node{Id: "envoy-like", UserAgentName: "envoy"}
	for i := 0; proto.Size(n) < size; i++ {
		n.Extensions = append(n.Extensions, &corev3.Extension{
			Name:     "envoy.filters.http.extension_number_" + strings.Repeat("x", i%40),
			Category: "envoy.filters.http",
		})
	}
	return n
}

// The xDS service takes requests up to xdsserver.MaxRequestBytes (a large
// node description, a long NACK) though RouteGuide's requests stay bounded
// by a note, and answers past its bound with RESOURCE_EXHAUSTED.
func TestXDSTakesLargeRequestsWithABoundOfItsOwn(t *testing.T) {
	etcd := etcdtest.Start(t)
	etcdtest.Get(t, etcd.ClientURL(), "serving") // etcd's own goroutines are up before the node counts its
	tn := startNode(t, func(c *Config) { c.Etcd = []string{etcd.ClientURL()} }, nil)
	routeGuideBound := DefaultConfig().NoteLimits.MessageBytes + requestSlack
	if xdsserver.MaxRequestBytes < 4*routeGuideBound {
		t.Fatalf("xDS bound %d, RouteGuide's %d: the test needs room between them", xdsserver.MaxRequestBytes, routeGuideBound)
	}

	ads := discoverypb.NewAggregatedDiscoveryServiceClient(tn.conn)
	stream, err := ads.StreamAggregatedResources(grpctest.CallContext(t))
	if err != nil {
		t.Fatal(err)
	}
	node := envoyLikeNode(xdsserver.MaxRequestBytes / 2)
	subscribeAll(t, stream, node)
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("a request with %d bytes of node description: %v", proto.Size(node), err)
	}
	// A NACK with a long error text, as a client lists what it rejects.
	nack := &discoverypb.DiscoveryRequest{
		Node: node, TypeUrl: resp.TypeUrl, ResourceNames: []string{"routeguide"}, ResponseNonce: resp.Nonce,
		ErrorDetail: &statuspb.Status{Code: int32(codes.InvalidArgument), Message: strings.Repeat("field: invalid value; ", xdsserver.MaxRequestBytes/2/22)},
	}
	if err := stream.Send(nack); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("after a NACK of %d bytes: %v", proto.Size(nack), err)
	}

	over := envoyLikeNode(xdsserver.MaxRequestBytes + 1024)
	tooLarge, err := ads.StreamAggregatedResources(grpctest.CallContext(t))
	if err != nil {
		t.Fatal(err)
	}
	// Send fails with io.EOF once the node has ended the stream; Recv says why.
	tooLarge.Send(&discoverypb.DiscoveryRequest{Node: over, TypeUrl: resourcev3.ClusterType, ResourceNames: []string{"routeguide"}})
	for err == nil {
		_, err = tooLarge.Recv()
	}
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "larger than max") {
		t.Errorf("a request of %d bytes over the bound of %d: %v, want RESOURCE_EXHAUSTED, larger than max", proto.Size(over), xdsserver.MaxRequestBytes, err)
	}

	// RouteGuide keeps its own bound, unary and streaming.
	point := &pb.Point{Latitude: 1, Longitude: 1}
	point.ProtoReflect().SetUnknown(protowire.AppendBytes(protowire.AppendTag(nil, 99, protowire.BytesType), make([]byte, routeGuideBound)))
	if _, err := tn.client().GetFeature(grpctest.CallContext(t), point); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("GetFeature of %d bytes: %v, want RESOURCE_EXHAUSTED", proto.Size(point), err)
	}
	route, err := tn.client().RecordRoute(grpctest.CallContext(t))
	if err != nil {
		t.Fatal(err)
	}
	for err == nil {
		err = route.Send(point)
	}
	if _, err := route.CloseAndRecv(); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("RecordRoute of a point of %d bytes: %v, want RESOURCE_EXHAUSTED", proto.Size(point), err)
	}
	if _, err := tn.client().GetFeature(grpctest.CallContext(t), &pb.Point{}); err != nil {
		t.Errorf("a GetFeature in bounds after the refusals: %v", err)
	}
}
