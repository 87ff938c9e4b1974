package benchpeers_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/routeguide-cluster/routeguide/internal/testutils"
)

// The node binaries, built by TestMain: each node is a process of its own,
// so that SIGTERM and SIGKILL are real signals, and our node does not link
// go-zero (whose proc package handles SIGTERM in every process that
// imports it).
var binaries struct{ ours, zrpc, grpc, faulty string }

func TestMain(m *testing.M) {
	os.Exit(testutils.RunWithBuilds(m, func(dir string) error {
		ours, err := testutils.BuildCommands(dir)
		if err != nil {
			return err
		}
		binaries.ours = ours.Node
		binaries.zrpc = filepath.Join(dir, "zrpcnode")
		binaries.grpc = filepath.Join(dir, "grpcnode")
		binaries.faulty = filepath.Join(dir, "faultynode")
		return testutils.Build(dir, "./cmd/zrpcnode", "./cmd/grpcnode", "./cmd/faultynode")
	}))
}
