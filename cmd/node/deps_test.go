package main

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// module is the import path of this module.
const module = "github.com/routeguide-cluster/routeguide/"

// TestBinariesLinkNoTestSupport guards the binaries against test code: no
// package of ours that `go list -deps` finds for cmd/node or cmd/client may
// be test support (under internal/testutils/, or named like notestest), nor
// import package testing.
func TestBinariesLinkNoTestSupport(t *testing.T) {
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	cmd := exec.Command(goTool, "list", "-deps", "-f", `{{.ImportPath}} {{join .Imports " "}}`, "./cmd/node", "./cmd/client")
	cmd.Dir = "../.."
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for line := range strings.Lines(string(out)) {
		pkg, imports, _ := strings.Cut(strings.TrimSpace(line), " ")
		if !strings.HasPrefix(pkg, module) {
			continue
		}
		rel := strings.TrimPrefix(pkg, module)
		switch {
		case strings.HasPrefix(rel, "internal/testutils/"):
			t.Errorf("the binaries link %s, which is test support", pkg)
		case strings.HasSuffix(rel, "test"):
			t.Errorf("the binaries link %s, which is named as test support", pkg)
		case slices.Contains(strings.Fields(imports), "testing"):
			t.Errorf("the binaries link %s, which imports package testing", pkg)
		}
	}
}

// TestTheNodeLinksNoXDSClient: the node serves xDS but is no xDS client. It
// imports package balancer (for its server options), which is why the
// balancer ejects outliers itself rather than through gRPC's
// outlier_detection_experimental, registered only by gRPC's xDS client
// (balancer/ejection.go).
func TestTheNodeLinksNoXDSClient(t *testing.T) {
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	cmd := exec.Command(goTool, "list", "-deps", "./cmd/node")
	cmd.Dir = "../.."
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if !slices.Contains(deps, module+"balancer") {
		t.Fatal("the node no longer links package balancer; this test guards nothing")
	}
	for _, pkg := range []string{"google.golang.org/grpc/xds", "google.golang.org/grpc/internal/xds/balancer/outlierdetection"} {
		if slices.Contains(deps, pkg) {
			t.Errorf("the node links %s", pkg)
		}
	}
}
