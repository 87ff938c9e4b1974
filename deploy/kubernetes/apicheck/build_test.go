package apicheck

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

// A build of Kubernetes' five binaries from cold takes 10 to 20 minutes on
// CI's 2 cores, far more than go test's default timeout of 10 minutes;
// CoreDNS takes a few, etcd one or two. .ci/run gives the tests the time they
// need (-timeout).
const (
	kubeColdBuild    = 30 * time.Minute
	corednsColdBuild = 15 * time.Minute
	etcdColdBuild    = 5 * time.Minute
)

// tools are the binaries the tests run: the dry run needs the first three,
// the cluster test all.
type tools struct {
	apiserver, kubectl, etcd string

	controllerManager, scheduler, kubelet string
}

// buildTools returns Kubernetes' binaries, built from this module's tool
// directives, and etcd, built from deploy/etcd/build at the version the
// project pins: each from the cache when it holds a build of the same
// go.mod, go.sum, flags and Go version. All five come from one go build, so
// the dry run and the cluster test share it.
func buildTools(t *testing.T) tools {
	t.Helper()
	version := requiredVersion(t, "go.mod", "k8s.io/kubernetes")
	// Without its version kubectl version fails, and the kubelet reports
	// none to the API server.
	kube := cachedBuild(t, ".", "kube-"+version, kubeColdBuild,
		"-ldflags=-X=k8s.io/component-base/version.gitVersion="+version, "tool")
	etcd := cachedBuild(t, "../../etcd/build", "etcd-"+requiredVersion(t, "../../etcd/build/go.mod", "go.etcd.io/etcd/server/v3"), etcdColdBuild, "./cmd/etcd")
	return tools{
		apiserver:         filepath.Join(kube, "kube-apiserver"),
		kubectl:           filepath.Join(kube, "kubectl"),
		etcd:              filepath.Join(etcd, "etcd"),
		controllerManager: filepath.Join(kube, "kube-controller-manager"),
		scheduler:         filepath.Join(kube, "kube-scheduler"),
		kubelet:           filepath.Join(kube, "kubelet"),
	}
}

// buildCoreDNS returns CoreDNS, built from the coredns module's tool
// directive: the test cluster's DNS.
func buildCoreDNS(t *testing.T) string {
	t.Helper()
	dir := cachedBuild(t, "coredns", "coredns-"+requiredVersion(t, "coredns/go.mod", "github.com/coredns/coredns"), corednsColdBuild, "tool")
	return filepath.Join(dir, "coredns")
}

// requiredVersion is the version of module that the go.mod at path requires.
func requiredVersion(t *testing.T, path, module string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*(?:require\s+)?` + regexp.QuoteMeta(module) + `\s+(v\S+)`).FindSubmatch(data)
	if m == nil {
		t.Fatalf("%s requires no %s", path, module)
	}
	return string(m[1])
}

// cachedBuild builds args (flags, then packages) of the module in moduleDir
// into a directory of the user's cache, named after name and a hash of the
// module's go.mod, go.sum and Go files (tests aside), of args and of the Go
// version, and returns it. A
// directory that exists is a complete build (it is renamed into place once
// built), so a change of any of them, or of Go, builds anew; Go's build cache
// makes that quick when little changed.
func cachedBuild(t *testing.T, moduleDir, name string, coldBuild time.Duration, args ...string) string {
	t.Helper()
	h := sha256.New()
	fmt.Fprintln(h, runtime.Version(), args)
	files := []string{"go.mod", "go.sum"}
	err := filepath.WalkDir(moduleDir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() && path != moduleDir {
			if _, statErr := os.Stat(filepath.Join(path, "go.mod")); statErr == nil {
				return fs.SkipDir // a module of its own
			}
		}
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
			rel, _ := filepath.Rel(moduleDir, path)
			files = append(files, rel)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(moduleDir, f))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(h, "%s %d\n", f, len(data))
		h.Write(data)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Fatalf("no cache directory for the builds: %v", err)
	}
	parent := filepath.Join(cache, "routeguide")
	dir := filepath.Join(parent, name+"-"+hex.EncodeToString(h.Sum(nil))[:12])
	if _, err := os.Stat(dir); err == nil {
		t.Logf("%s: built before, in %s", name, dir)
		return dir
	} else if !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}

	if deadline, ok := t.Deadline(); ok && time.Until(deadline) < coldBuild {
		msg := fmt.Sprintf("%s is not built yet (%s), and a build from cold may take up to %v, more than the %v left before go test's timeout; run go test -timeout 60m",
			name, dir, coldBuild, time.Until(deadline).Round(time.Second))
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		// A developer's plain go test stops here rather than time out
		// halfway through a build; CI never does.
		t.Skip(msg)
	}
	if err := os.MkdirAll(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp, err := os.MkdirTemp(parent, name+".building-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp) // after a failure; empty after the rename

	args = append([]string{"build", "-o", tmp + string(filepath.Separator)}, args...)
	cmd := exec.Command("go", args...)
	if nice, err := exec.LookPath("nice"); err == nil {
		// The machine is shared: the build yields to what else runs.
		cmd = exec.Command(nice, append([]string{"-n", "10", "go"}, args...)...)
	}
	cmd.Dir = moduleDir
	t.Logf("%s: go %v in %s (from cold: up to %v) ...", name, args, moduleDir, coldBuild)
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: go %v: %v\n%s", name, args, err, out)
	}
	t.Logf("%s: built in %v", name, time.Since(start).Round(time.Second))
	if err := os.Rename(tmp, dir); err != nil {
		if _, statErr := os.Stat(dir); statErr != nil {
			t.Fatal(err)
		}
		// Another test process built the same meanwhile; use its.
	}
	return dir
}
