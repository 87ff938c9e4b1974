package xdsserver

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"

	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	leastrequestv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/least_request/v3"
	roundrobinv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/round_robin/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/routeguide-cluster/routeguide/discovery"
)

// adsSource points a resource at the stream it came on (gRFC A27 accepts
// only ads or self).
var adsSource = &corev3.ConfigSource{
	ResourceApiVersion:    corev3.ApiVersion_V3,
	ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
}

// routerFilter is the HTTP router filter. gRPC clients reject an HTTP
// connection manager without it as the last filter (gRFC A39).
const routerFilter = "envoy.filters.http.router"

// staticResources are the listener, route and cluster of cfg: they depend on
// the configuration only, never on the registry.
func staticResources(cfg Config) (listener, route, cluster types.Resource, err error) {
	router, err := anypb.New(&routerv3.Router{})
	if err != nil {
		return nil, nil, nil, err
	}
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{ConfigSource: adsSource, RouteConfigName: cfg.Service}},
		HttpFilters:    []*hcmv3.HttpFilter{{Name: routerFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}},
	})
	if err != nil {
		return nil, nil, nil, err
	}
	listener = &listenerv3.Listener{Name: cfg.Service, ApiListener: &listenerv3.ApiListener{ApiListener: hcm}}

	toCluster := &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cfg.Service}}}
	var routes []*routev3.Route
	for _, method := range cfg.RetryMethods {
		action := proto.Clone(toCluster.Route).(*routev3.RouteAction)
		action.RetryPolicy = retryPolicy(cfg.Retry)
		routes = append(routes, &routev3.Route{
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: method}},
			Action: &routev3.Route_Route{Route: action},
		})
	}
	// The last route catches every other call, as gRPC requires of it.
	routes = append(routes, &routev3.Route{
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: toCluster,
	})
	route = &routev3.RouteConfiguration{
		Name:         cfg.Service,
		VirtualHosts: []*routev3.VirtualHost{{Name: cfg.Service, Domains: []string{"*"}, Routes: routes}},
	}

	c := &clusterv3.Cluster{
		Name:                 cfg.Service,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource, ServiceName: cfg.Service},
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
	}
	if cfg.EndpointPolicy != "" {
		if c.LoadBalancingPolicy, err = endpointPolicies(cfg.EndpointPolicy, cfg.LeastRequest); err != nil {
			return nil, nil, nil, err
		}
	}
	if od := cfg.OutlierDetection; od != nil && od.FailurePercentageEjection != nil {
		c.OutlierDetection = outlierDetection(od.WithDefaults())
	}
	return listener, route, c, nil
}

// endpointPolicies lists the policy named name, then least request when
// leastRequest, then round robin (gRFC A52): a client takes the first it
// knows. gRPC takes a TypedStruct whose type URL ends in the name of a
// policy it has registered; a client without A52 reads lb_policy instead
// (round robin). See docs/DESIGN.md, "xDS clients: which policy each takes".
func endpointPolicies(name string, leastRequest bool) (*clusterv3.LoadBalancingPolicy, error) {
	custom, err := anypb.New(&xdstypev3.TypedStruct{TypeUrl: "type.googleapis.com/" + name, Value: &structpb.Struct{}})
	if err != nil {
		return nil, err
	}
	policies := []*clusterv3.LoadBalancingPolicy_Policy{{TypedExtensionConfig: &corev3.TypedExtensionConfig{Name: name, TypedConfig: custom}}}
	if leastRequest {
		lr, err := anypb.New(&leastrequestv3.LeastRequest{ChoiceCount: wrapperspb.UInt32(2)})
		if err != nil {
			return nil, err
		}
		policies = append(policies, &clusterv3.LoadBalancingPolicy_Policy{
			TypedExtensionConfig: &corev3.TypedExtensionConfig{Name: "envoy.load_balancing_policies.least_request", TypedConfig: lr},
		})
	}
	roundRobin, err := anypb.New(&roundrobinv3.RoundRobin{})
	if err != nil {
		return nil, err
	}
	policies = append(policies, &clusterv3.LoadBalancingPolicy_Policy{
		TypedExtensionConfig: &corev3.TypedExtensionConfig{Name: "envoy.load_balancing_policies.round_robin", TypedConfig: roundRobin},
	})
	return &clusterv3.LoadBalancingPolicy{Policies: policies}, nil
}

// outlierDetection is od, its defaults filled in, as the cluster carries
// it: failure percentage only, with success rate's enforcement at 0, which
// turns it off (A50).
func outlierDetection(od OutlierDetection) *clusterv3.OutlierDetection {
	fp := od.FailurePercentageEjection
	return &clusterv3.OutlierDetection{
		Interval:                       durationpb.New(od.Interval),
		BaseEjectionTime:               durationpb.New(od.BaseEjectionTime),
		MaxEjectionTime:                durationpb.New(od.MaxEjectionTime),
		MaxEjectionPercent:             wrapperspb.UInt32(od.MaxEjectionPercent),
		EnforcingSuccessRate:           wrapperspb.UInt32(0),
		FailurePercentageThreshold:     wrapperspb.UInt32(fp.Threshold),
		EnforcingFailurePercentage:     wrapperspb.UInt32(fp.EnforcementPercentage),
		FailurePercentageMinimumHosts:  wrapperspb.UInt32(fp.MinimumHosts),
		FailurePercentageRequestVolume: wrapperspb.UInt32(fp.RequestVolume),
	}
}

// retryPolicy is r as xDS says it (gRFC A44): on the status codes, up to
// MaxAttempts-1 retries.
func retryPolicy(r Retry) *routev3.RetryPolicy {
	return &routev3.RetryPolicy{
		RetryOn:    r.On,
		NumRetries: wrapperspb.UInt32(uint32(r.MaxAttempts - 1)),
		RetryBackOff: &routev3.RetryPolicy_RetryBackOff{
			BaseInterval: durationpb.New(r.BaseBackoff),
			MaxInterval:  durationpb.New(r.MaxBackoff),
		},
	}
}

// loadAssignment is the cluster's endpoints: every node of eps (at IP:port
// addresses), all in
// one locality. gRPC clients reject an endpoint outside a locality and drop a
// locality without a weight, so both are always set.
func loadAssignment(service string, eps []discovery.Endpoint) (*endpointv3.ClusterLoadAssignment, error) {
	lbEndpoints := make([]*endpointv3.LbEndpoint, 0, len(eps))
	for _, ep := range eps {
		ap, err := netip.ParseAddrPort(ep.Addr)
		if err != nil {
			return nil, fmt.Errorf("endpoint %s: %w", ep.Key, err)
		}
		lbEndpoints = append(lbEndpoints, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Protocol:      corev3.SocketAddress_TCP,
					Address:       ap.Addr().String(),
					PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(ap.Port())},
				}}},
				Hostname: ep.Metadata.NodeID,
			}},
			HealthStatus:        corev3.HealthStatus_HEALTHY,
			LoadBalancingWeight: wrapperspb.UInt32(1),
		})
	}
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: service}
	if len(lbEndpoints) > 0 {
		cla.Endpoints = []*endpointv3.LocalityLbEndpoints{{
			Locality:            &corev3.Locality{Region: service},
			LbEndpoints:         lbEndpoints,
			LoadBalancingWeight: wrapperspb.UInt32(1),
		}}
	}
	return cla, nil
}

// validator is what the generated Envoy messages offer to check themselves
// against the API's constraints.
type validator interface{ ValidateAll() error }

// newSnapshot builds the snapshot of the four resources, each type versioned
// by a hash of its content: the same registry gives the same versions on
// every node, so a client that moves to another node is not sent again what
// it has. (The cache's Consistent does not see the route an API listener
// names; here every name is the service's by construction.) A resource that breaks the API's constraints is an error, never
// served: a client would reject it.
func newSnapshot(static [3]types.Resource, cla *endpointv3.ClusterLoadAssignment) (*cache.Snapshot, error) {
	byType := [...]struct {
		index    types.ResponseType
		resource types.Resource
	}{
		{types.Listener, static[0]},
		{types.Route, static[1]},
		{types.Cluster, static[2]},
		{types.Endpoint, cla},
	}
	snap := &cache.Snapshot{}
	for _, r := range byType {
		if err := r.resource.(validator).ValidateAll(); err != nil {
			return nil, fmt.Errorf("invalid %T %q: %w", r.resource, cache.GetResourceName(r.resource), err)
		}
		version, err := contentVersion(r.resource)
		if err != nil {
			return nil, err
		}
		snap.Resources[r.index] = cache.NewResources(version, []types.Resource{r.resource})
	}
	return snap, nil
}

// contentVersion is a short hash of m's deterministic encoding.
func contentVersion(m types.Resource) (string, error) {
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:8]), nil
}
