package etcdtest

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/routeguide-cluster/routeguide/internal/testutils/poll"
)

// start starts three members and, when t ends, closes them and checks
// that nothing they started still runs.
func start(t *testing.T) *Cluster {
	t.Helper()
	before := goleak.IgnoreCurrent()
	c, err := StartCluster(ClusterConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		goleak.VerifyNone(t, before)
	})
	return c
}

// TestClusterKeepsServingAfterLosingItsLeader starts three members on free
// ports, loses the leader, and writes and reads through the two left.
func TestClusterKeepsServingAfterLosingItsLeader(t *testing.T) {
	c := start(t)
	if n := len(c.ClientURLs()); n != 3 {
		t.Fatalf("%d client URLs, want 3", n)
	}
	cli := c.Client(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "k", "before"); err != nil {
		t.Fatal(err)
	}
	// Every member has the write.
	for _, m := range c.Members() {
		if got := Get(t, m.ClientURL(), "k"); got != "before" {
			t.Errorf("member %s: k = %q, want before", m.Name(), got)
		}
	}

	var leader *Member
	poll.Until(t, 10*time.Second, "a leader", func() bool { leader = c.Leader(); return leader != nil })
	start := time.Now()
	leader.Lose()
	lost := time.Since(start)
	var next *Member
	poll.Until(t, 10*time.Second, "a new leader", func() bool { next = c.Leader(); return next != nil })
	elected := time.Since(start)
	if next == leader {
		t.Fatalf("the lost member %s still leads", leader.Name())
	}
	if _, err := cli.Put(ctx, "k", "after"); err != nil {
		t.Fatalf("write after losing the leader: %v", err)
	}
	for _, m := range c.Members() {
		if m != leader {
			if got := Get(t, m.ClientURL(), "k"); got != "after" {
				t.Errorf("member %s: k = %q, want after", m.Name(), got)
			}
		}
	}
	// A crash takes milliseconds (5-24ms measured); a graceful stop would
	// hand leadership over first, which takes election rounds. The bound
	// leaves a loaded machine two orders of magnitude.
	if lost > 5*time.Second {
		t.Errorf("losing the leader took %v; a crash is not graceful", lost)
	}
	t.Logf("leader %s lost in %v; %s leads %v after the loss", leader.Name(), lost.Round(time.Millisecond), next.Name(), elected.Round(time.Millisecond))
}

// TestLostLeaderRestartsFromItsDataAndCatchesUp loses the leader, writes
// through the two members left, restarts the lost one at its addresses, and
// reads the write from it alone.
func TestLostLeaderRestartsFromItsDataAndCatchesUp(t *testing.T) {
	c := start(t)
	var leader *Member
	poll.Until(t, 10*time.Second, "a leader", func() bool { leader = c.Leader(); return leader != nil })
	leader.Lose()
	poll.Until(t, 10*time.Second, "a new leader", func() bool { return c.Leader() != nil })
	cli := c.Client(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "k", "while lost"); err != nil {
		t.Fatalf("write without the leader: %v", err)
	}
	if err := leader.Restart(); err != nil {
		t.Fatal(err)
	}
	if got := Get(t, leader.ClientURL(), "k"); got != "while lost" {
		t.Errorf("restarted member %s: k = %q, want the write made while it was lost", leader.Name(), got)
	}
	if err := leader.Restart(); err != nil {
		t.Errorf("restarting a running member: %v, want nothing done", err)
	}
	leader.Lose()
	c.Close()
	if err := leader.Restart(); err == nil {
		t.Error("a member of a closed cluster restarted")
	}
}
