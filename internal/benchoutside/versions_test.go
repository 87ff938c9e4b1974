package benchoutside_test

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestExampleServerBuiltWithTheNodesGRPC guards what the ratio means: the
// example server (built with this module's versions) and the node (built
// with the main module's) must run the same grpc-go and protobuf, so that
// the difference between them is the code on top.
func TestExampleServerBuiltWithTheNodesGRPC(t *testing.T) {
	for _, mod := range []string{"google.golang.org/grpc", "google.golang.org/protobuf", "golang.org/x/net"} {
		here, main := moduleVersion(t, ".", mod), moduleVersion(t, filepath.Join("..", ".."), mod)
		if here != main {
			t.Errorf("%s: %s here, %s in the main module; align this module's go.mod", mod, here, main)
		}
	}
}

func moduleVersion(t *testing.T, dir, mod string) string {
	t.Helper()
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Version}}", mod)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -m %s in %s: %v", mod, dir, err)
	}
	return strings.TrimSpace(string(out))
}
