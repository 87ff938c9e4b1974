// Command zrpcnode serves RouteGuide the way go-zero's goctl lays out a zrpc
// service: a YAML file loaded into zrpc.RpcServerConf (so every default of
// its struct tags applies), zrpc.MustNewServer and Start, which publishes
// ListenOn in etcd under Etcd.Key and stops on SIGTERM through go-zero's
// proc package. The handler is routeguide.Server, the one the nodes serve.
package main

import (
	"flag"
	"os"

	"github.com/zeromicro/go-zero/core/conf"
	"github.com/zeromicro/go-zero/zrpc"
	"google.golang.org/grpc"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/benchpeers/handler"
	"github.com/routeguide-cluster/routeguide/internal/testutils/grayfault"
)

var (
	configFile = flag.String("f", "etc/routeguide.yaml", "the config file")
	// A gray fault, for the gray-failure benchmark (package grayfault).
	faultDelay       = flag.Duration("fault-delay", 0, "hold every RouteGuide call this `long`")
	faultFailPercent = flag.Int("fault-fail-percent", 0, "fail this `percent` of RouteGuide calls UNAVAILABLE")
	faultSwitched    = flag.Bool("fault-switched", false, "start with the fault off; lines \"on\" and \"off\" on stdin switch it")
)

func main() {
	flag.Parse()
	var c zrpc.RpcServerConf
	conf.MustLoad(*configFile, &c)
	s := zrpc.MustNewServer(c, func(g *grpc.Server) {
		pb.RegisterRouteGuideServer(g, handler.New())
	})
	if *faultDelay > 0 || *faultFailPercent > 0 {
		fault := &grayfault.Fault{Delay: *faultDelay, FailPercent: *faultFailPercent}
		s.AddOptions(fault.ServerOptions()...)
		if *faultSwitched {
			fault.Switch(false)
			go fault.FollowSwitches(os.Stdin) // ends with the process
		}
	}
	defer s.Stop()
	s.Start()
}
