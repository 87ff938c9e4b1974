//go:build unix

package devcluster

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/routeguide-cluster/routeguide/internal/node"
)

// dataDirs lists the data directories and lock files in dir.
func dataDirs(t *testing.T, dir string) []string {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(dir, dataDirPrefix+"*"))
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range matches {
		matches[i] = filepath.Base(m)
	}
	return matches
}

// makeDataDir makes a data directory named name in dir, as a cluster does,
// with a lock file unless lock is nil; a held lock is left open until the
// test ends, as a running cluster holds it.
func makeDataDir(t *testing.T, dir, name string, lock *bool) {
	t.Helper()
	path := filepath.Join(dir, dataDirPrefix+name)
	if err := os.MkdirAll(filepath.Join(path, "member"), 0o700); err != nil {
		t.Fatal(err)
	}
	if lock == nil {
		return
	}
	f, err := os.Create(path + ".lock")
	if err != nil {
		t.Fatal(err)
	}
	if !*lock {
		f.Close()
		return
	}
	if err := tryLock(f); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
}

func TestStartRemovesTheDataOfClustersThatDiedAndCloseItsOwn(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	held, released := true, false
	makeDataDir(t, tmp, "running", &held)
	makeDataDir(t, tmp, "killed", &released)
	makeDataDir(t, tmp, "from-before-the-lock", nil)

	cfg := node.DefaultConfig()
	cfg.Listen, cfg.MetricsListen, cfg.DrainDelay = "127.0.0.1:0", "", 0
	cfg.Logger = slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	c, err := Start(ctx, Config{Nodes: 1, Node: cfg, EtcdAddr: "127.0.0.1:0", Logger: cfg.Logger})
	if err != nil {
		t.Fatal(err)
	}
	own := filepath.Base(c.dir.path)
	want := []string{own, own + ".lock", dataDirPrefix + "running", dataDirPrefix + "running.lock"}
	if got := dataDirs(t, tmp); !sameSet(got, want) {
		t.Errorf("while the cluster runs: %v; want %v (its own, and the one still locked)", got, want)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	want = []string{dataDirPrefix + "running", dataDirPrefix + "running.lock"}
	if got := dataDirs(t, tmp); !sameSet(got, want) {
		t.Errorf("after Close: %v; want %v", got, want)
	}
}

func sameSet(a, b []string) bool {
	return slices.Equal(slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b)))
}
