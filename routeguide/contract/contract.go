// Package contract holds what a RouteGuide node and its clients agree on
// beyond the proto, so that a client links none of the server.
package contract

import pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"

// NodeHeader is the response header in which a node names itself (the
// trailer, when no message went out): how a client tells which node
// answered.
const NodeHeader = "routeguide-node"

// HealthService is the service whose health a node reports besides the
// server's as a whole (""), and that clients watch: a node that turns it
// NOT_SERVING, as a draining node does, stops getting new calls at once.
var HealthService = pb.RouteGuide_ServiceDesc.ServiceName

// IdempotentMethods are the calls that change nothing, and so can safely
// be made twice: clients retry them and time their attempts out.
var IdempotentMethods = []string{pb.RouteGuide_GetFeature_FullMethodName, pb.RouteGuide_ListFeatures_FullMethodName}
