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

// depsOf returns, for every package of this module that `go list -deps`
// finds for pkgs (relative to the module root), its path within the module
// and its imports.
func depsOf(t *testing.T, pkgs ...string) map[string][]string {
	t.Helper()
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	args := append([]string{"list", "-deps", "-f", `{{.ImportPath}} {{join .Imports " "}}`}, pkgs...)
	cmd := exec.Command(goTool, args...)
	cmd.Dir = "../.."
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps %s: %v\n%s", strings.Join(pkgs, " "), err, out)
	}
	deps := make(map[string][]string)
	for line := range strings.Lines(string(out)) {
		pkg, imports, _ := strings.Cut(strings.TrimSpace(line), " ")
		if rel, ok := strings.CutPrefix(pkg, module); ok {
			deps[rel] = strings.Fields(imports)
		}
	}
	return deps
}

// TestBinariesLinkNoTestSupport guards the binaries against test code: no
// package of ours that `go list -deps` finds for cmd/node or cmd/client may
// be test support (under internal/testutils/, or named like notestest), nor
// import package testing.
func TestBinariesLinkNoTestSupport(t *testing.T) {
	for rel, imports := range depsOf(t, "./cmd/node", "./cmd/client") {
		switch {
		case strings.HasPrefix(rel, "internal/testutils/"):
			t.Errorf("the binaries link %s, which is test support", rel)
		case strings.HasSuffix(rel, "test"):
			t.Errorf("the binaries link %s, which is named as test support", rel)
		case slices.Contains(imports, "testing"):
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
