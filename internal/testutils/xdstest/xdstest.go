// Package xdstest gives tests gRPC's xDS resolver for a bootstrap of their
// own. It stands apart from grpctest so that only the tests of xDS link
// gRPC's xds package.
package xdstest

import (
	"testing"

	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/xds"

	"github.com/routeguide-cluster/routeguide/discovery/xdsserver"
)

// Resolver resolves xds:/// targets from the xDS servers that cfg names.
// A process has one bootstrap, read from its environment when it starts;
// grpc-go offers another only through this testing API, which is why the
// client takes its bootstrap from the environment alone.
func Resolver(tb testing.TB, cfg xdsserver.BootstrapConfig) resolver.Builder {
	tb.Helper()
	bootstrap, err := xdsserver.Bootstrap(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	r, err := xds.NewXDSResolverWithConfigForTesting(bootstrap)
	if err != nil {
		tb.Fatalf("xDS resolver for bootstrap %s: %v", bootstrap, err)
	}
	return r
}
