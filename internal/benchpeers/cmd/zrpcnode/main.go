// Command zrpcnode serves RouteGuide the way go-zero's goctl lays out a zrpc
// service: a YAML file loaded into zrpc.RpcServerConf (so every default of
// its struct tags applies), zrpc.MustNewServer and Start, which publishes
// ListenOn in etcd under Etcd.Key and stops on SIGTERM through go-zero's
// proc package. The handler is routeguide.Server, the one the nodes serve.
package main

import (
	"flag"

	"github.com/zeromicro/go-zero/core/conf"
	"github.com/zeromicro/go-zero/zrpc"
	"google.golang.org/grpc"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/benchpeers/handler"
)

var configFile = flag.String("f", "etc/routeguide.yaml", "the config file")

func main() {
	flag.Parse()
	var c zrpc.RpcServerConf
	conf.MustLoad(*configFile, &c)
	s := zrpc.MustNewServer(c, func(g *grpc.Server) {
		pb.RegisterRouteGuideServer(g, handler.New())
	})
	defer s.Stop()
	s.Start()
}
