package clustertest

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDevClusterDrainsWhenItsOutputIsGone is `node -dev | tee log` and
// Ctrl-C: the terminal's SIGINT ends tee first, and the node drains into a
// closed pipe. It must drain, exit 0 and remove etcd's data.
func TestDevClusterDrainsWhenItsOutputIsGone(t *testing.T) {
	tmp := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := command(ctx, []string{"TMPDIR=" + tmp, "ROUTEGUIDE_LOG_FORMAT=json"},
		"-dev", "--dev-etcd-listen=127.0.0.1:0", "--dev-nodes=2", "--drain-delay=100ms")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	scanner := bufio.NewScanner(r)
	for scanner.Scan() && !strings.Contains(scanner.Text(), "Ctrl-C drains") {
	}
	if matches, _ := filepath.Glob(filepath.Join(tmp, "routeguide-dev-etcd-*")); len(matches) == 0 {
		t.Error("the running cluster has no etcd data directory in TMPDIR: the test proves nothing")
	}
	r.Close() // tee is gone
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	if status, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && status.Signaled() {
		t.Fatalf("node -dev killed by %v while draining into a closed pipe; want exit 0", status.Signal())
	}
	if err != nil {
		t.Fatalf("node -dev after SIGINT: %v; want exit 0", err)
	}
	if matches, _ := filepath.Glob(filepath.Join(tmp, "routeguide-dev-*")); len(matches) != 0 {
		t.Errorf("left behind in TMPDIR: %v", matches)
	}
}
