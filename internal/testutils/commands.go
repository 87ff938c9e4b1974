package testutils

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// mainModule is the module whose commands BuildCommands builds.
const mainModule = "github.com/routeguide-cluster/routeguide"

// Commands are the paths of the node and client commands.
type Commands struct{ Node, Client string }

// BuildCommands builds cmd/node and cmd/client into dir as they ship: in
// the main module, with its go.mod, whichever module the test is in.
func BuildCommands(dir string) (Commands, error) {
	// go test puts its own go command first on PATH.
	root, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", mainModule).Output()
	if err != nil {
		return Commands{}, fmt.Errorf("find the module %s: %w", mainModule, err)
	}
	if err := build(strings.TrimSpace(string(root)), dir, "./cmd/node", "./cmd/client"); err != nil {
		return Commands{}, err
	}
	return Commands{Node: filepath.Join(dir, "node"), Client: filepath.Join(dir, "client")}, nil
}

// Build builds pkgs of the test's own module into dir.
func Build(dir string, pkgs ...string) error { return build("", dir, pkgs...) }

func build(moduleDir, dir string, pkgs ...string) error {
	cmd := exec.Command("go", append([]string{"build", "-o", dir + string(filepath.Separator)}, pkgs...)...)
	cmd.Dir = moduleDir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", strings.Join(pkgs, " "), err, out)
	}
	return nil
}

// RunWithBuilds is the TestMain of tests that run programs: build builds
// them once into a temporary directory, the tests run, and the directory is
// removed. It returns the exit code, for os.Exit.
func RunWithBuilds(m *testing.M, build func(dir string) error) int {
	dir, err := os.MkdirTemp("", "routeguide-test-programs")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := build(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}
