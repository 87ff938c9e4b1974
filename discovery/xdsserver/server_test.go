package xdsserver_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/routeguide-cluster/routeguide/discovery"
	"github.com/routeguide-cluster/routeguide/discovery/xdsserver"
	"github.com/routeguide-cluster/routeguide/internal/localetcd"
	"github.com/routeguide-cluster/routeguide/internal/testutils"
	"github.com/routeguide-cluster/routeguide/internal/testutils/etcdtest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/grpctest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/poll"
)

const service = "routeguide"

// setup starts a real etcd, a View of the registry and an xDS server fed
// by it on a real gRPC server, and returns the etcd server and a client of
// it, and the xDS server and its address.
func setup(t *testing.T) (*localetcd.Server, *clientv3.Client, *xdsserver.Server, string) {
	t.Helper()
	return setupWith(t, "")
}

// setupWith is setup with the xDS server's EndpointPolicy.
func setupWith(t *testing.T, endpointPolicy string) (*localetcd.Server, *clientv3.Client, *xdsserver.Server, string) {
	t.Helper()
	return setupConfig(t, func(c *xdsserver.Config) { c.EndpointPolicy = endpointPolicy })
}

// setupConfig is setup with the xDS server's configuration changed by change.
func setupConfig(t *testing.T, change func(*xdsserver.Config)) (*localetcd.Server, *clientv3.Client, *xdsserver.Server, string) {
	t.Helper()
	etcd := etcdtest.Start(t)
	cli := etcdtest.Client(t, etcd.ClientURL())
	cfg := xdsserver.Config{
		Service:      service,
		RetryMethods: []string{"/routeguide.RouteGuide/GetFeature"},
		Retry:        xdsserver.Retry{On: "unavailable", MaxAttempts: 4, BaseBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond},
	}
	change(&cfg)
	xds, err := xdsserver.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	xds.Register(srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	view := discovery.WatchService(cli, service)
	xds.Follow(view)
	t.Cleanup(func() {
		xds.Close()
		srv.Stop()
		view.Close()
	})
	return etcd, cli, xds, lis.Addr().String()
}

// register writes a node's entry under a lease, as nodes register: an
// entry without one is not a node.
func register(t *testing.T, cli *clientv3.Client, id, addr string) {
	t.Helper()
	value, err := discovery.EncodeEndpoint(addr, discovery.Metadata{NodeID: id})
	if err != nil {
		t.Fatal(err)
	}
	lease, err := cli.Grant(t.Context(), 60)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(t.Context(), discovery.Prefix(service)+id, value, clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
}

// adsStream is a raw ADS stream, as a gRPC client opens it.
type adsStream struct {
	t      testing.TB
	stream discoverypb.AggregatedDiscoveryService_StreamAggregatedResourcesClient
}

func openADS(t testing.TB, ctx context.Context, conn *grpc.ClientConn) *adsStream {
	t.Helper()
	// A server that never answers fails the test, not the run.
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	t.Cleanup(cancel)
	stream, err := discoverypb.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &adsStream{t: t, stream: stream}
}

// subscribe asks for the service's resource of typeURL.
func (a *adsStream) subscribe(typeURL string) {
	a.t.Helper()
	if err := a.stream.Send(&discoverypb.DiscoveryRequest{
		Node: &corev3.Node{Id: "test-client"}, TypeUrl: typeURL, ResourceNames: []string{service},
	}); err != nil {
		a.t.Fatal(err)
	}
}

// answer ACKs resp, or NACKs it when nack.
func (a *adsStream) answer(resp *discoverypb.DiscoveryResponse, nack bool) error {
	req := &discoverypb.DiscoveryRequest{TypeUrl: resp.TypeUrl, ResourceNames: []string{service}, ResponseNonce: resp.Nonce, VersionInfo: resp.VersionInfo}
	if nack {
		req.VersionInfo = ""
		req.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: "test rejects it"}
	}
	return a.stream.Send(req)
}

// nextEndpoints reads responses, ACKing each, until an assignment arrives,
// and returns its addresses.
func (a *adsStream) nextEndpoints() []string {
	a.t.Helper()
	for {
		resp, err := a.stream.Recv()
		if err != nil {
			a.t.Fatal(err)
		}
		if err := a.answer(resp, false); err != nil {
			a.t.Fatal(err)
		}
		if resp.TypeUrl != resourcev3.EndpointType {
			continue
		}
		var addrs []string
		for _, res := range resp.Resources {
			var cla endpointv3.ClusterLoadAssignment
			if err := res.UnmarshalTo(&cla); err != nil {
				a.t.Fatal(err)
			}
			for _, loc := range cla.Endpoints {
				// gRPC clients drop a locality without a weight and reject
				// an endpoint without a locality.
				if loc.Locality == nil || loc.LoadBalancingWeight.GetValue() == 0 {
					a.t.Errorf("locality %v with weight %v: gRPC clients would not use it", loc.Locality, loc.LoadBalancingWeight)
				}
				for _, ep := range loc.LbEndpoints {
					sa := ep.GetEndpoint().GetAddress().GetSocketAddress()
					addrs = append(addrs, net.JoinHostPort(sa.Address, fmt.Sprint(sa.GetPortValue())))
				}
			}
		}
		slices.Sort(addrs)
		return addrs
	}
}

func TestEndpointsFollowTheRegistryThroughJoinsAndLeaves(t *testing.T) {
	_, cli, _, addr := setup(t)
	register(t, cli, "n1", "10.0.0.1:50051")
	register(t, cli, "n2", "10.0.0.2:50051")
	ads := openADS(t, t.Context(), grpctest.Dial(t, addr))
	ads.subscribe(resourcev3.EndpointType)
	want := []string{"10.0.0.1:50051", "10.0.0.2:50051"}
	// The first answer may predate the listing; the registry's comes next.
	for got := ads.nextEndpoints(); !slices.Equal(got, want); got = ads.nextEndpoints() {
		t.Logf("endpoints %v before the registry's", got)
	}
	register(t, cli, "n3", "10.0.0.3:50051")
	if got, want := ads.nextEndpoints(), []string{"10.0.0.1:50051", "10.0.0.2:50051", "10.0.0.3:50051"}; !slices.Equal(got, want) {
		t.Fatalf("after a join: %v, want %v", got, want)
	}
	if _, err := cli.Delete(t.Context(), discovery.Prefix(service)+"n1"); err != nil {
		t.Fatal(err)
	}
	if got, want := ads.nextEndpoints(), []string{"10.0.0.2:50051", "10.0.0.3:50051"}; !slices.Equal(got, want) {
		t.Fatalf("after a leave: %v, want %v", got, want)
	}
}

func TestListenerCarriesTheRouterFilterGRPCRequires(t *testing.T) {
	_, _, _, addr := setup(t)
	var l listenerv3.Listener
	firstResource(t, addr, resourcev3.ListenerType, &l)
	var hcm hcmv3.HttpConnectionManager
	if err := l.ApiListener.ApiListener.UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	filters := hcm.HttpFilters
	if len(filters) == 0 || filters[len(filters)-1].GetTypedConfig().GetTypeUrl() != "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" {
		t.Fatalf("HTTP filters %v: the router must come last", filters)
	}
}

func TestEndpointsStayWhileEtcdIsOut(t *testing.T) {
	etcd, cli, _, addr := setup(t)
	register(t, cli, "n1", "10.0.0.1:50051")
	conn := grpctest.Dial(t, addr)
	ads := openADS(t, t.Context(), conn)
	ads.subscribe(resourcev3.EndpointType)
	for !slices.Equal(ads.nextEndpoints(), []string{"10.0.0.1:50051"}) {
	}
	etcd.Close()
	// A client that connects during the outage still gets the last nodes.
	late := openADS(t, t.Context(), conn)
	late.subscribe(resourcev3.EndpointType)
	if got := late.nextEndpoints(); !slices.Equal(got, []string{"10.0.0.1:50051"}) {
		t.Fatalf("during the outage: %v, want the last known node", got)
	}
}

func TestARejectedVersionIsNotSentInALoop(t *testing.T) {
	_, _, xds, addr := setup(t)
	ads := openADS(t, t.Context(), grpctest.Dial(t, addr))
	ads.subscribe(resourcev3.ListenerType)
	responses := 0
	var err error
	for err == nil {
		var resp *discoverypb.DiscoveryResponse
		if resp, err = ads.stream.Recv(); err == nil {
			if responses++; responses > 10 {
				t.Fatalf("%d responses to rejections: the loop is not broken", responses)
			}
			err = ads.answer(resp, true)
		}
	}
	if _, err = ads.stream.Recv(); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("stream ended with %v, want FailedPrecondition", err)
	}
	if responses != 2 {
		t.Errorf("the rejected version was sent %d times, want 2 (the first and one resend)", responses)
	}
	poll.Until(t, 5*time.Second, "the stream to be forgotten", func() bool { return xds.Streams() == 0 })
}

func TestAClientThatDisappearsLeavesNothingBehind(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	t.Run("run", func(t *testing.T) {
		_, cli, xds, addr := setup(t)
		register(t, cli, "n1", "10.0.0.1:50051")
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		for range 20 {
			ads := openADS(t, context.Background(), conn)
			ads.subscribe(resourcev3.EndpointType)
			ads.nextEndpoints()
		}
		if got := xds.Streams(); got != 20 {
			t.Fatalf("%d streams open, want 20", got)
		}
		conn.Close() // the client vanishes without closing its streams
		poll.Until(t, 5*time.Second, "the server to close the vanished client's streams", func() bool { return xds.Streams() == 0 })
	})
}

// TestThousandStreamsFitInAStatedMemory opens 1000 ADS streams, each
// subscribed to the four resources, as 1000 gRPC clients would, and bounds
// the heap they take, both ends (the clients run in this process too).
//
//	go test -run ThousandStreams -v ./discovery/xdsserver/
func TestThousandStreamsFitInAStatedMemory(t *testing.T) {
	const streams, conns = 1000, 10
	const bound = 64 << 10 // bytes per stream, client and server together
	_, cli, xds, addr := setup(t)
	for i := range 3 {
		register(t, cli, fmt.Sprintf("n%d", i), fmt.Sprintf("10.0.0.%d:50051", i+1))
	}
	clients := make([]*grpc.ClientConn, conns)
	for i := range clients {
		clients[i] = grpctest.Dial(t, addr)
	}
	before := int64(testutils.HeapAfterGC().HeapInuse)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range streams {
		ads := openADS(t, ctx, clients[i%conns])
		for _, typ := range []string{resourcev3.ListenerType, resourcev3.RouteType, resourcev3.ClusterType, resourcev3.EndpointType} {
			ads.subscribe(typ)
		}
		ads.nextEndpoints()
	}
	if got := xds.Streams(); got != streams {
		t.Fatalf("%d streams open, want %d", got, streams)
	}
	perStream := (int64(testutils.HeapAfterGC().HeapInuse) - before) / streams
	t.Logf("%d xDS streams: %d bytes of heap each, client and server together", streams, perStream)
	if perStream > bound {
		t.Errorf("%d bytes per stream, over the bound of %d", perStream, bound)
	}
}

// testEjection is an outlier detection quick enough for a test.
var testEjection = xdsserver.OutlierDetection{
	Interval: 500 * time.Millisecond, BaseEjectionTime: 30 * time.Second, MaxEjectionTime: time.Minute, MaxEjectionPercent: 33,
	FailurePercentageEjection: &xdsserver.FailurePercentageEjection{Threshold: 20, MinimumHosts: 2, RequestVolume: 10},
}

// The cluster names, in order, our policy, least request and round robin,
// and carries failure-percentage outlier detection, with success rate's
// (which needs 5 nodes) turned off.
// firstResource reads into m the first resource of type typ that the
// server at addr sends a new ADS stream.
func firstResource(t *testing.T, addr, typ string, m proto.Message) {
	t.Helper()
	ads := openADS(t, t.Context(), grpctest.Dial(t, addr))
	ads.subscribe(typ)
	resp, err := ads.stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if err := resp.Resources[0].UnmarshalTo(m); err != nil {
		t.Fatal(err)
	}
}

// servedCluster is the cluster resource a server configured by change
// serves.
func servedCluster(t *testing.T, change func(*xdsserver.Config)) *clusterv3.Cluster {
	t.Helper()
	_, _, _, addr := setupConfig(t, change)
	var cluster clusterv3.Cluster
	firstResource(t, addr, resourcev3.ClusterType, &cluster)
	return &cluster
}

func TestClusterCarriesEjectionAndThePoliciesInOrder(t *testing.T) {
	cluster := servedCluster(t, func(c *xdsserver.Config) {
		c.EndpointPolicy, c.LeastRequest, c.OutlierDetection = "routeguide.test.policy", true, &testEjection
	})
	var policies []string
	for _, p := range cluster.GetLoadBalancingPolicy().GetPolicies() {
		policies = append(policies, p.GetTypedExtensionConfig().GetTypedConfig().GetTypeUrl())
	}
	want := []string{
		"type.googleapis.com/xds.type.v3.TypedStruct",
		"type.googleapis.com/envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest",
		"type.googleapis.com/envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin",
	}
	if !slices.Equal(policies, want) {
		t.Errorf("policies %v, want %v", policies, want)
	}
	if cluster.GetLbPolicy() != clusterv3.Cluster_ROUND_ROBIN {
		t.Errorf("lb_policy %v: a client without gRFC A52 needs ROUND_ROBIN", cluster.GetLbPolicy())
	}
	od, fp := cluster.GetOutlierDetection(), testEjection.FailurePercentageEjection
	for _, f := range []struct {
		name      string
		got, want uint32
	}{
		{"enforcing_success_rate", od.GetEnforcingSuccessRate().GetValue(), 0},
		{"enforcing_failure_percentage", od.GetEnforcingFailurePercentage().GetValue(), 100},
		{"failure_percentage_threshold", od.GetFailurePercentageThreshold().GetValue(), fp.Threshold},
		{"failure_percentage_minimum_hosts", od.GetFailurePercentageMinimumHosts().GetValue(), fp.MinimumHosts},
		{"failure_percentage_request_volume", od.GetFailurePercentageRequestVolume().GetValue(), fp.RequestVolume},
		{"max_ejection_percent", od.GetMaxEjectionPercent().GetValue(), testEjection.MaxEjectionPercent},
	} {
		if f.got != f.want {
			t.Errorf("outlier_detection.%s = %d, want %d", f.name, f.got, f.want)
		}
	}
	if od.GetInterval().AsDuration() != testEjection.Interval || od.GetBaseEjectionTime().AsDuration() != testEjection.BaseEjectionTime {
		t.Errorf("outlier_detection interval %v, base ejection time %v; want %v, %v", od.GetInterval(), od.GetBaseEjectionTime(), testEjection.Interval, testEjection.BaseEjectionTime)
	}
}

// The zero fields of an outlier detection are A50's defaults, as in package
// balancer's policy, but for enforcement (100%); without failure-percentage
// ejection the cluster carries none.
func TestClusterFillsA50sDefaultsAndLeavesEjectionOffWhenAsked(t *testing.T) {
	od := servedCluster(t, func(c *xdsserver.Config) {
		c.OutlierDetection = &xdsserver.OutlierDetection{FailurePercentageEjection: &xdsserver.FailurePercentageEjection{}}
	}).GetOutlierDetection()
	got := []any{od.GetInterval().AsDuration(), od.GetBaseEjectionTime().AsDuration(), od.GetMaxEjectionTime().AsDuration(),
		od.GetMaxEjectionPercent().GetValue(), od.GetFailurePercentageThreshold().GetValue(), od.GetEnforcingFailurePercentage().GetValue(),
		od.GetFailurePercentageMinimumHosts().GetValue(), od.GetFailurePercentageRequestVolume().GetValue()}
	want := []any{10 * time.Second, 30 * time.Second, 300 * time.Second, uint32(10), uint32(85), uint32(100), uint32(5), uint32(50)}
	if !slices.Equal(got, want) {
		t.Errorf("interval, base, max time, max %%, threshold, enforcement, hosts, volume = %v, want A50's defaults %v", got, want)
	}
	off := servedCluster(t, func(c *xdsserver.Config) { c.OutlierDetection = &xdsserver.OutlierDetection{Interval: time.Second} })
	if off.GetOutlierDetection() != nil {
		t.Errorf("outlier detection without failure-percentage ejection served as %v, want none", off.GetOutlierDetection())
	}
}

func TestConfigRefusesAnEjectionOutOfA50sBounds(t *testing.T) {
	for _, tt := range []struct {
		name   string
		change func(*xdsserver.OutlierDetection)
	}{
		{"a negative interval", func(e *xdsserver.OutlierDetection) { e.Interval = -time.Second }},
		{"over 100% ejected", func(e *xdsserver.OutlierDetection) { e.MaxEjectionPercent = 101 }},
		{"a threshold over 100%", func(e *xdsserver.OutlierDetection) {
			fp := *e.FailurePercentageEjection
			fp.Threshold = 101
			e.FailurePercentageEjection = &fp
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := testEjection
			tt.change(&e)
			if _, err := xdsserver.New(xdsserver.Config{Service: service, OutlierDetection: &e}); err == nil || !strings.Contains(err.Error(), "xds outlierDetection") {
				t.Errorf("New: %v, want an error naming the outlier detection", err)
			}
		})
	}
	if _, err := xdsserver.New(xdsserver.Config{Service: service, LeastRequest: true}); err == nil {
		t.Error("New took least request without an endpoint policy to list it after")
	}
}

func TestConfigRejectsRetryMethodsThatAreNotFullNames(t *testing.T) {
	retry := xdsserver.Retry{On: "unavailable", MaxAttempts: 4, BaseBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}
	for _, m := range []string{"GetFeature", "/routeguide.RouteGuide", "//GetFeature", "/routeguide.RouteGuide/"} {
		err := xdsserver.Config{Service: service, RetryMethods: []string{m}, Retry: retry}.Validate()
		if err == nil || !strings.Contains(err.Error(), m) {
			t.Errorf("retry method %q: error %v, want one that names it", m, err)
		}
	}
	if err := (xdsserver.Config{Service: service, RetryMethods: []string{"/routeguide.RouteGuide/GetFeature"}, Retry: retry}).Validate(); err != nil {
		t.Errorf("a full method name rejected: %v", err)
	}
}
