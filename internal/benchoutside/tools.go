//go:build tools

// The programs of other projects the benchmark builds, so that go.mod pins
// them: ghz, and grpc-go's example RouteGuide server.
package benchoutside

import (
	_ "github.com/bojand/ghz/cmd/ghz"
	_ "google.golang.org/grpc/examples/route_guide/server"
)
