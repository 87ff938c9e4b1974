package clustertest

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/routeguide-cluster/routeguide/internal/localetcd"
	"github.com/routeguide-cluster/routeguide/internal/testutils/grpctest"
)

// previousRelease is the last commit whose notes store kept notes under
// random keys, answered in create-revision order (see docs/DESIGN.md,
// "RouteChat in etcd").
const previousRelease = "1af60453cb98f02de36f9515bb80edbacaf52047"

// buildPreviousRelease builds the node command of previousRelease from the
// repository's history, or skips the test when the history is not there.
func buildPreviousRelease(t *testing.T) string {
	t.Helper()
	if err := exec.Command("git", "cat-file", "-e", previousRelease+"^{commit}").Run(); err != nil {
		t.Skipf("the previous release %s is not in this clone's git history (%v): a full clone runs this test", previousRelease[:7], err)
	}
	src := t.TempDir()
	tarball := filepath.Join(t.TempDir(), "previous.tar")
	// From a subdirectory git archive would take only that part of the tree.
	archive := exec.Command("git", "archive", "--format=tar", "-o", tarball, previousRelease)
	archive.Dir = "../.."
	if out, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("git archive %s: %v\n%s", previousRelease, err, out)
	}
	if out, err := exec.Command("tar", "-x", "-f", tarball, "-C", src).CombinedOutput(); err != nil {
		t.Fatalf("extract %s: %v\n%s", previousRelease, err, out)
	}
	bin := filepath.Join(t.TempDir(), "node-previous")
	build := exec.Command("go", "build", "-o", bin, "./cmd/node")
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the previous release's node: %v\n%s", err, out)
	}
	return bin
}

// TestRollingUpgradeFromThePreviousReleaseKeepsEveryNoteInAnswers runs a
// node of the previous release and one of this one on one etcd, as during
// a rolling upgrade, and posts through each in turn: both answer every note
// of the location, in one posting order.
func TestRollingUpgradeFromThePreviousReleaseKeepsEveryNoteInAnswers(t *testing.T) {
	previous := buildPreviousRelease(t)
	etcd, err := localetcd.Start(localetcd.Config{Dir: t.TempDir(), ClientAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Close)
	args := func(id string) []string {
		return []string{"--etcd", etcd.ClientURL(), "--node-id", id, "--lease-ttl", "3s"}
	}
	var nodes []grpc.ClientConnInterface
	for i, bin := range []string{previous, commands.Node} {
		p, addr := startServingBinary(t, bin, nil, args(fmt.Sprint("node-", i))...)
		t.Cleanup(p.kill)
		nodes = append(nodes, grpctest.Dial(t, addr))
	}
	var posted []string
	for i := range 12 {
		via := i % 2
		if i >= 8 {
			via = 1 - via // the order of the nodes changes nothing
		}
		message := fmt.Sprintf("note %d via the %s node", i, []string{"previous", "new"}[via])
		posted = append(posted, message)
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		answer, err := chatOnce(ctx, nodes[via], note(407838351, -746143763, message))
		cancel()
		if err != nil {
			t.Fatalf("post %q: %v", message, err)
		}
		var got []string
		for _, n := range answer {
			got = append(got, n.Message)
		}
		if !slices.Equal(got, posted) {
			t.Fatalf("post %q answered %q, want every note so far, in order: %q", message, got, posted)
		}
	}
}
