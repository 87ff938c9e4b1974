package main

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// module is the import path of this module.
const module = "github.com/routeguide-cluster/routeguide/"

// pkg is a package of this module as `go list` describes it.
type pkg struct {
	imports []string
	dir     string
	goFiles []string // without the tests
}

// depsOf returns every package of this module that `go list -deps` finds
// for pkgs (relative to the module root), by its path within the module.
func depsOf(t *testing.T, pkgs ...string) map[string]pkg {
	t.Helper()
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	args := append([]string{"list", "-deps", "-f", `{{.ImportPath}}|{{join .Imports " "}}|{{.Dir}}|{{join .GoFiles " "}}`}, pkgs...)
	cmd := exec.Command(goTool, args...)
	cmd.Dir = "../.."
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps %s: %v\n%s", strings.Join(pkgs, " "), err, out)
	}
	deps := make(map[string]pkg)
	for line := range strings.Lines(string(out)) {
		fields := strings.Split(strings.TrimSpace(line), "|")
		if len(fields) != 4 {
			t.Fatalf("go list line %q: want 4 fields", line)
		}
		if rel, ok := strings.CutPrefix(fields[0], module); ok {
			deps[rel] = pkg{imports: strings.Fields(fields[1]), dir: fields[2], goFiles: strings.Fields(fields[3])}
		}
	}
	return deps
}

// TestBinariesLinkNoTestSupport guards the binaries against test code: no
// package of ours that `go list -deps` finds for cmd/node or cmd/client may
// be test support (under internal/testutils/, or named like notestest), nor
// import package testing.
func TestBinariesLinkNoTestSupport(t *testing.T) {
	for rel, p := range depsOf(t, "./cmd/node", "./cmd/client") {
		switch {
		case strings.HasPrefix(rel, "internal/testutils/"):
			t.Errorf("the binaries link %s, which is test support", rel)
		case strings.HasSuffix(rel, "test"):
			t.Errorf("the binaries link %s, which is named as test support", rel)
		case slices.Contains(p.imports, "testing"):
			t.Errorf("the binaries link %s, which imports package testing", rel)
		}
	}
}

// TestClientLibrariesLinkNoServer guards what a user's Go client imports:
// balancer and discovery may share the contract with the node, but must not
// pull in the service, its notes store or its feature database.
func TestClientLibrariesLinkNoServer(t *testing.T) {
	for rel := range depsOf(t, "./balancer", "./discovery") {
		server := rel == "routeguide" || strings.HasPrefix(rel, "routeguide/") && rel != "routeguide/contract" ||
			rel == "internal/node" || strings.HasPrefix(rel, "cmd/")
		if server {
			t.Errorf("balancer or discovery links %s, which is server code", rel)
		}
	}
}

// allDepsOf lists every package, ours or not, that `go list -deps` finds
// for pkgs (relative to the module root).
func allDepsOf(t *testing.T, pkgs ...string) []string {
	t.Helper()
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	cmd := exec.Command(goTool, append([]string{"list", "-deps"}, pkgs...)...)
	cmd.Dir = "../.."
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps %s: %v\n%s", strings.Join(pkgs, " "), err, out)
	}
	return strings.Fields(string(out))
}

// TestClientLibrariesKeepToTheirLayers: discovery (xdsserver with it)
// knows nothing of RouteGuide or of package balancer, and balancer nothing
// of etcd or of discovery; what both say of calls is internal/callpolicy.
func TestClientLibrariesKeepToTheirLayers(t *testing.T) {
	for _, dep := range allDepsOf(t, "./discovery/...") {
		rel, ours := strings.CutPrefix(dep, module)
		if ours && (rel == "balancer" || rel == "gen/routeguidepb" || rel == "routeguide" || strings.HasPrefix(rel, "routeguide/")) {
			t.Errorf("discovery links %s", rel)
		}
	}
	for _, dep := range allDepsOf(t, "./balancer") {
		if strings.HasPrefix(dep, module+"discovery") || strings.HasPrefix(dep, "go.etcd.io/") {
			t.Errorf("balancer links %s", dep)
		}
	}
}

// TestTheNodeLinksNoXDSClient: the node serves xDS but is no xDS client. It
// imports package balancer (for its server options), which is why the
// balancer ejects outliers itself rather than through gRPC's
// outlier_detection_experimental, registered only by gRPC's xDS client
// (balancer/ejection.go).
func TestTheNodeLinksNoXDSClient(t *testing.T) {
	deps := allDepsOf(t, "./cmd/node")
	if !slices.Contains(deps, module+"balancer") {
		t.Fatal("the node no longer links package balancer; this test guards nothing")
	}
	for _, pkg := range []string{"google.golang.org/grpc/xds", "google.golang.org/grpc/internal/xds/balancer/outlierdetection"} {
		if slices.Contains(deps, pkg) {
			t.Errorf("the node links %s", pkg)
		}
	}
}

// TestBinariesCallNoTestingAPI guards the binaries against the testing APIs
// of the libraries (grpc-go's ...ForTesting functions, for one): no package
// of ours that they link may name one. The source is read rather than the
// binary's symbols, since such a one-line wrapper is inlined away.
func TestBinariesCallNoTestingAPI(t *testing.T) {
	for rel, p := range depsOf(t, "./cmd/node", "./cmd/client") {
		for _, file := range p.goFiles {
			for _, use := range testingAPIUses(t, filepath.Join(p.dir, file)) {
				t.Errorf("the binaries link %s, which calls %s", rel, use)
			}
		}
	}
}

// testingAPIUses lists the selectors in file that name a testing API, with
// their position.
func testingAPIUses(t *testing.T, file string) []string {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, file, nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	var uses []string
	ast.Inspect(f, func(n ast.Node) bool {
		if sel, ok := n.(*ast.SelectorExpr); ok && strings.Contains(sel.Sel.Name, "ForTesting") {
			uses = append(uses, fmt.Sprintf("%s (%s)", sel.Sel.Name, fset.Position(sel.Pos())))
		}
		return true
	})
	return uses
}

func TestTestingAPIUsesFindsACallToAForTestingFunction(t *testing.T) {
	file := filepath.Join(t.TempDir(), "x.go")
	src := "package x\n\nimport \"google.golang.org/grpc/xds\"\n\nvar r, _ = xds.NewXDSResolverWithConfigForTesting(nil)\n\nfunc ok() {}\n"
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	uses := testingAPIUses(t, file)
	if len(uses) != 1 || !strings.Contains(uses[0], "NewXDSResolverWithConfigForTesting") || !strings.Contains(uses[0], "x.go:5") {
		t.Errorf("uses = %q, want the one call, at x.go:5", uses)
	}
}
