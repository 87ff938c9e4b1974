package benchpeers_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// The node binaries, built by TestMain: each node is a process of its own,
// so that SIGTERM and SIGKILL are real signals, and our node does not link
// go-zero (whose proc package handles SIGTERM in every process that
// imports it).
var binaries struct{ ours, zrpc, grpc, faulty string }

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "routeguide-benchpeers")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// go test puts its own go command first on PATH.
	build := exec.Command("go", "build", "-o", dir+string(filepath.Separator),
		"github.com/routeguide-cluster/routeguide/cmd/node", "./cmd/zrpcnode", "./cmd/grpcnode", "./cmd/faultynode")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build the node commands: %v\n%s", err, out)
		return 1
	}
	binaries.ours = filepath.Join(dir, "node")
	binaries.zrpc = filepath.Join(dir, "zrpcnode")
	binaries.grpc = filepath.Join(dir, "grpcnode")
	binaries.faulty = filepath.Join(dir, "faultynode")
	return m.Run()
}
