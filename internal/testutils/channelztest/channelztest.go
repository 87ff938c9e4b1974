// Package channelztest is gRPC's channelz service inside the test process,
// called directly: it sees every channel and subchannel the process made and
// counts the calls picked for each, retried attempts included, which no
// response can tell. Importing the package turns channelz on.
package channelztest

import (
	"google.golang.org/grpc"
	channelzpb "google.golang.org/grpc/channelz/grpc_channelz_v1"
	channelzservice "google.golang.org/grpc/channelz/service"
)

// Server answers channelz's questions without a connection.
var Server = func() channelzpb.ChannelzServer {
	var r captureRegistrar
	channelzservice.RegisterChannelzServiceToServer(&r)
	return r.impl.(channelzpb.ChannelzServer)
}()

// captureRegistrar keeps the implementation a Register function is given.
type captureRegistrar struct{ impl any }

func (r *captureRegistrar) RegisterService(_ *grpc.ServiceDesc, impl any) { r.impl = impl }
