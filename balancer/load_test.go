package balancer

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/testutils/poll"
)

// load runs workers that call GetFeature one after another until stop.
type loadRun struct {
	stopping chan struct{}
	wg       sync.WaitGroup
	calls    atomic.Int64
	mu       sync.Mutex
	failed   []error
}

func startLoad(t *testing.T, client pb.RouteGuideClient, workers int) *loadRun {
	t.Helper()
	l := &loadRun{stopping: make(chan struct{})}
	for range workers {
		l.wg.Go(func() {
			for {
				select {
				case <-l.stopping:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				_, err := client.GetFeature(ctx, &pb.Point{})
				cancel()
				l.calls.Add(1)
				if err != nil {
					l.mu.Lock()
					l.failed = append(l.failed, err)
					l.mu.Unlock()
				}
			}
		})
	}
	t.Cleanup(func() { l.stop() })
	return l
}

// stop ends the load once the calls in flight have ended, and returns the
// errors callers saw.
func (l *loadRun) stop() []error {
	select {
	case <-l.stopping:
	default:
		close(l.stopping)
	}
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failed
}

// shares counts the GetFeature calls each node took from here on.
type shares struct {
	nodes  []*guideNode
	before []int64
}

func sharesFrom(nodes ...*guideNode) *shares {
	s := &shares{nodes: nodes}
	s.reset()
	return s
}

func (s *shares) reset() {
	s.before = s.before[:0]
	for _, n := range s.nodes {
		s.before = append(s.before, n.gets.Load())
	}
}

// of returns node i's share of the calls since the last reset, and the calls.
func (s *shares) of(i int) (float64, int64) {
	var total, mine int64
	for j, n := range s.nodes {
		d := n.gets.Load() - s.before[j]
		total += d
		if j == i {
			mine = d
		}
	}
	if total == 0 {
		return 0, 0
	}
	return float64(mine) / float64(total), total
}

func (s *shares) String() string {
	out := ""
	for i, n := range s.nodes {
		share, total := s.of(i)
		out += fmt.Sprintf("%s %.1f%% of %d; ", n.name, 100*share, total)
	}
	return out
}

// slowDelay is how late the slow node answers: far more than a call to the
// others takes under -race on a busy machine (a few to tens of ms).
const slowDelay = 200 * time.Millisecond

// startSlowCluster starts two nodes that answer at once and one that answers
// slowDelay late, and 8 workers calling them; it returns the slow node, the
// shares (the slow node's is of(2)) and the load.
func startSlowCluster(t *testing.T) (*guideNode, *shares, *loadRun) {
	t.Helper()
	fast1, fast2, slow := startGuideNode(t, "fast1", answers), startGuideNode(t, "fast2", answers), startGuideNode(t, "slow", answers)
	slow.delay.Store(int64(slowDelay))
	client := dialGuide(t, DefaultAttemptTimeout, nil, fast1, fast2, slow)
	s := sharesFrom(fast1, fast2, slow)
	return slow, s, startLoad(t, client, 8)
}

// TestASlowNodeGetsASmallShare: a node that answers late, where the others
// answer at once, gets a small share of 8 workers' calls, where round robin
// gives it a third.
func TestASlowNodeGetsASmallShare(t *testing.T) {
	_, s, load := startSlowCluster(t)
	// Its first calls go out before the first one is back: count from
	// when the policy has seen it answer (TestAHealedNodeGetsItsShareBack
	// times the reaction).
	poll.Until(t, time.Minute, "500 calls", func() bool { _, total := s.of(2); return total >= 500 })
	s.reset()
	poll.Until(t, time.Minute, "3000 calls", func() bool { _, total := s.of(2); return total >= 3000 })
	if errs := load.stop(); len(errs) > 0 {
		t.Errorf("%d calls failed, first: %v", len(errs), errs[0])
	}
	if share, _ := s.of(2); share > 0.10 {
		t.Errorf("the slow node took %.1f%% of the calls, want at most 10%%: %v", 100*share, s)
	}
}

// TestAHealedNodeGetsItsShareBack: once the slow node answers at once again,
// it gets a fair share back within seconds, as the probes show it healed.
func TestAHealedNodeGetsItsShareBack(t *testing.T) {
	slow, s, load := startSlowCluster(t)
	poll.Until(t, time.Minute, "1000 calls", func() bool { _, total := s.of(2); return total >= 1000 })
	if share, _ := s.of(2); share > 0.15 {
		t.Fatalf("the slow node took %.1f%% of the calls before it healed: %v", 100*share, s)
	}

	slow.delay.Store(0)
	healed := time.Now()
	s.reset()
	// The share over each window of 300 calls; the policy has to react
	// within seconds, and a busy machine must not fail the test.
	poll.Until(t, 20*time.Second, "the healed node's share back to at least 20% of 300 calls", func() bool {
		share, total := s.of(2)
		if total < 300 {
			return false
		}
		if share >= 0.20 {
			return true
		}
		s.reset()
		return false
	})
	t.Logf("share back %v after the node healed: %v", time.Since(healed).Round(time.Millisecond), s)
	if errs := load.stop(); len(errs) > 0 {
		t.Errorf("%d calls failed, first: %v", len(errs), errs[0])
	}
}

// TestASlowNodeIsNeverStarved: a node much slower than the others still gets
// calls now and then, the probes that would see it heal.
func TestASlowNodeIsNeverStarved(t *testing.T) {
	slow, s, load := startSlowCluster(t)
	// Let the policy learn how slow it is, then count what it still gets.
	poll.Until(t, time.Minute, "1000 calls", func() bool { _, total := s.of(2); return total >= 1000 })
	s.reset()
	probesFrom := slow.gets.Load()
	poll.Until(t, 30*time.Second, "5 calls on the slow node, among 300", func() bool {
		_, total := s.of(2)
		return slow.gets.Load()-probesFrom >= 5 && total >= 300
	})
	if errs := load.stop(); len(errs) > 0 {
		t.Errorf("%d calls failed, first: %v", len(errs), errs[0])
	}
	if share, _ := s.of(2); share > 0.15 {
		t.Errorf("the slow node took %.1f%% of the calls, want a few probes: %v", 100*share, s)
	}
}

// TestAStreamsLengthIsNoLatency: a node that held a long stream (a chat
// open while hundreds of calls went by) keeps its share of the unary calls:
// the stream counted in flight, but its length did not go into the EWMA.
func TestAStreamsLengthIsNoLatency(t *testing.T) {
	nodes := []*guideNode{startGuideNode(t, "a", answers), startGuideNode(t, "b", answers), startGuideNode(t, "c", answers)}
	client := dialGuideOpts(t, nodes)
	chatCtx, endChat := context.WithCancel(t.Context())
	chat, err := client.RouteChat(chatCtx)
	if err != nil {
		t.Fatal(err)
	}
	holder := -1
	poll.Until(t, 10*time.Second, "the chat at a node", func() bool {
		for i, n := range nodes {
			if n.chats.Load() == 1 {
				holder = i
			}
		}
		return holder >= 0
	})
	s := sharesFrom(nodes...)
	load := startLoad(t, client, 8)
	poll.Until(t, time.Minute, "300 calls while the chat is open", func() bool { _, total := s.of(holder); return total >= 300 })
	endChat()
	chat.Recv() // the stream's end, which ends its pick
	s.reset()
	poll.Until(t, time.Minute, "600 calls after the chat", func() bool { _, total := s.of(holder); return total >= 600 })
	if errs := load.stop(); len(errs) > 0 {
		t.Errorf("%d calls failed, first: %v", len(errs), errs[0])
	}
	if share, _ := s.of(holder); share < 0.20 {
		t.Errorf("the node that held the chat took %.1f%% of the calls after it, want a fair share: %v", 100*share, s)
	}
}
