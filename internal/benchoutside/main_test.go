package benchoutside_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/routeguide-cluster/routeguide/internal/testutils"
)

// The programs under test, built by TestMain: the node and the client from
// the main module exactly as they ship (built there, with its go.mod), and
// ghz and the example server from this module's.
var bin struct{ node, client, ghz, official, grpcloop string }

// The example module's files: the canonical 100 features and the proto ghz
// reads the service from.
var examples struct{ featuresFile, protoFile string }

func TestMain(m *testing.M) {
	os.Exit(testutils.RunWithBuilds(m, build))
}

func build(dir string) error {
	commands, err := testutils.BuildCommands(dir)
	if err != nil {
		return err
	}
	bin.node, bin.client = commands.Node, commands.Client
	if err := testutils.Build(dir, "github.com/bojand/ghz/cmd/ghz", "google.golang.org/grpc/examples/route_guide/server", "./cmd/grpcloop"); err != nil {
		return err
	}
	bin.ghz, bin.official = filepath.Join(dir, "ghz"), filepath.Join(dir, "server")
	bin.grpcloop = filepath.Join(dir, "grpcloop")
	modDir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "google.golang.org/grpc/examples").Output()
	if err != nil {
		return fmt.Errorf("find grpc-go's examples module: %w", err)
	}
	routeGuide := filepath.Join(strings.TrimSpace(string(modDir)), "route_guide")
	examples.featuresFile = filepath.Join(routeGuide, "testdata", "route_guide_db.json")
	examples.protoFile = filepath.Join(routeGuide, "routeguide", "route_guide.proto")
	return nil
}
