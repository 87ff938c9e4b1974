package benchoutside_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The programs under test, built by TestMain: the node and the client from
// the main module exactly as they ship (built there, with its go.mod), and
// ghz and the example server from this module's.
var bin struct{ node, client, ghz, official, grpcloop string }

// The example module's files: the canonical 100 features and the proto ghz
// reads the service from.
var examples struct{ featuresFile, protoFile string }

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "routeguide-benchoutside")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	out := dir + string(filepath.Separator)
	// go test puts its own go command first on PATH.
	builds := []*exec.Cmd{
		exec.Command("go", "build", "-o", out, "./cmd/node", "./cmd/client"),
		exec.Command("go", "build", "-o", out, "github.com/bojand/ghz/cmd/ghz", "google.golang.org/grpc/examples/route_guide/server", "./cmd/grpcloop"),
	}
	builds[0].Dir = filepath.Join("..", "..")
	for _, b := range builds {
		if out, err := b.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n%s", strings.Join(b.Args, " "), err, out)
			return 1
		}
	}
	bin.node, bin.client = filepath.Join(dir, "node"), filepath.Join(dir, "client")
	bin.ghz, bin.official = filepath.Join(dir, "ghz"), filepath.Join(dir, "server")
	bin.grpcloop = filepath.Join(dir, "grpcloop")
	modDir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "google.golang.org/grpc/examples").Output()
	if err != nil {
		fmt.Fprintf(os.Stderr, "find grpc-go's examples module: %v\n", err)
		return 1
	}
	routeGuide := filepath.Join(strings.TrimSpace(string(modDir)), "route_guide")
	examples.featuresFile = filepath.Join(routeGuide, "testdata", "route_guide_db.json")
	examples.protoFile = filepath.Join(routeGuide, "routeguide", "route_guide.proto")
	return m.Run()
}
