package clustertest

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"google.golang.org/grpc"

	"github.com/routeguide-cluster/routeguide/discovery"
	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/clientcli"
	"github.com/routeguide-cluster/routeguide/internal/testutils/chatcheck"
	"github.com/routeguide-cluster/routeguide/internal/testutils/etcdtest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/faultproxy"
	"github.com/routeguide-cluster/routeguide/internal/testutils/poll"
)

// The RouteChat consistency check: clients post notes through three node
// processes over a three-member etcd while faults strike, and each history
// is checked against one server with the same bounds (package chatcheck).
// CI runs a few histories; the figures in docs/BENCHMARKS.md come from
//
//	go test -race -count=1 -timeout 60m -run TestRouteChatAnswersLikeOneServerUnderFaults -v ./internal/clustertest/ -chat.histories 60
var (
	chatHistories = flag.Int("chat.histories", 3, "RouteChat histories to record and check, one fault each, in turn")
	chatClients   = flag.Int("chat.clients", 12, "clients posting notes in each RouteChat history")
)

// chatBounds keep 8 notes at a location, and fewer of the longer ones: a
// message of up to 107 bytes costs 128 more, so 1,600 bytes hold 6 to 12
// notes and either bound forgets some. With messages of up to chatMessageBytes, a page read from etcd
// holds one note: an answer takes up to 8 reads after its post's commit.
var chatBounds = chatcheck.Bounds{PerLocation: 8, AnswerBytes: 1600}

const (
	chatMessageBytes = 1024
	// chatPostTimeout is longer than a node's own bound on a post's etcd
	// work (5s), so that the node's answer, whatever it is, reaches the
	// client: RouteChat clients often set no deadline at all.
	chatPostTimeout = 10 * time.Second
	// chatProgress is how many posts must be acked between two steps of a
	// fault, so that every step is in the history.
	chatProgress = 40
)

// chatNode is a node process of the check, whose log is read (and thrown
// away) so that it never blocks on writing it.
type chatNode struct {
	*process
	id      string
	drained chan struct{}
	once    sync.Once
}

func startChatNode(t *testing.T, id string, etcd []string) *chatNode {
	t.Helper()
	p, _ := startServing(t, "--etcd", strings.Join(etcd, ","), "--node-id", id, "--lease-ttl", clusterTTL.String(),
		"--drain-delay", clusterDrain.String(), "--log-format", "json",
		"--max-notes-per-location", strconv.Itoa(chatBounds.PerLocation),
		"--max-chat-answer-bytes", strconv.Itoa(chatBounds.AnswerBytes),
		"--max-note-bytes", strconv.Itoa(chatMessageBytes))
	p.waitFor(t, "registered")
	n := &chatNode{process: p, id: id, drained: make(chan struct{})}
	go func() {
		defer close(n.drained)
		for range p.records { // closed at the end of stderr
		}
	}()
	t.Cleanup(n.kill)
	return n
}

// kill sends SIGKILL and waits for the process to end.
func (n *chatNode) kill() {
	n.once.Do(func() {
		n.cmd.Process.Kill()
		<-n.drained
		n.cmd.Wait()
	})
}

// chatSlot is the place of one node: the proxies that are its only way to
// etcd, and the node process there now.
type chatSlot struct {
	name     string
	proxies  []*faultproxy.Proxy
	node     *chatNode
	restarts int
}

func (s *chatSlot) etcdURLs() []string {
	var urls []string
	for _, p := range s.proxies {
		urls = append(urls, "http://"+p.Addr())
	}
	return urls
}

type chatCluster struct {
	etcd  *etcdtest.Cluster
	slots []*chatSlot
	conns []grpc.ClientConnInterface
}

func startChatCluster(t *testing.T) *chatCluster {
	t.Helper()
	etcd, err := etcdtest.StartCluster(etcdtest.ClusterConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Close)
	c := &chatCluster{etcd: etcd}
	for i := range 3 {
		s := &chatSlot{name: fmt.Sprintf("n%d", i+1)}
		for _, m := range etcd.Members() {
			p, err := faultproxy.Start(strings.TrimPrefix(m.ClientURL(), "http://"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(p.Close)
			s.proxies = append(s.proxies, p)
		}
		s.node = startChatNode(t, s.name, s.etcdURLs())
		c.slots = append(c.slots, s)
	}
	// Three client connections, as three client hosts would have.
	for range 3 {
		conn, err := clientcli.Dial(t.Context(), etcdClient.target(), clientcli.WithEtcdConfig(discovery.EtcdConfig{Endpoints: etcd.ClientURLs()}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		c.conns = append(c.conns, conn)
	}
	return c
}

// victim is the node a fault strikes: each round of faults (one history
// each) strikes other nodes than the last, and within a round, the fault with
// offset 1 another node than the one with offset 0.
func (c *chatCluster) victim(round, offset int) *chatSlot {
	return c.slots[(round+offset)%len(c.slots)]
}

// progress waits until chatProgress posts have been acked since now.
func progress(t *testing.T, r *chatcheck.Recorder, what string) {
	t.Helper()
	since := r.Now()
	poll.Until(t, 60*time.Second, fmt.Sprintf("%d posts acked %s", chatProgress, what), func() bool {
		return r.Count(chatcheck.Acked, "", since) >= chatProgress
	})
}

// answers waits until node has acked a post since now.
func answers(t *testing.T, r *chatcheck.Recorder, node, what string) {
	t.Helper()
	since := r.Now()
	poll.Until(t, 60*time.Second, node+" to ack a post "+what, func() bool { return r.Count(chatcheck.Acked, node, since) > 0 })
}

// A chatFault strikes the cluster while the clients post, and heals it.
type chatFault struct {
	name   string
	strike func(t *testing.T, c *chatCluster, r *chatcheck.Recorder, round int) string
}

var chatFaults = []chatFault{
	{"node-killed", killAndRestartNode},
	{"etcd-leader-lost", loseAndRestartEtcdLeader},
	{"node-cut-from-etcd", cutNodeFromEtcd},
}

// killAndRestartNode sends SIGKILL to a node and, once the others have
// acked posts, starts a new node in its place (under a new id, as the old
// one's key waits for its lease to end).
func killAndRestartNode(t *testing.T, c *chatCluster, r *chatcheck.Recorder, round int) string {
	s := c.victim(round, 0)
	victim := s.node.id
	s.node.kill()
	progress(t, r, "after "+victim+" was killed")
	s.restarts++
	s.node = startChatNode(t, fmt.Sprintf("%s-r%d", s.name, s.restarts), s.etcdURLs())
	answers(t, r, s.node.id, "after it started")
	return fmt.Sprintf("killed %s, started %s", victim, s.node.id)
}

// loseAndRestartEtcdLeader crashes the etcd leader and, once posts are
// acked under the new one, restarts the lost member from its data.
func loseAndRestartEtcdLeader(t *testing.T, c *chatCluster, r *chatcheck.Recorder, _ int) string {
	var leader *etcdtest.Member
	poll.Until(t, 30*time.Second, "an etcd leader", func() bool { leader = c.etcd.Leader(); return leader != nil })
	leader.Lose()
	poll.Until(t, 30*time.Second, "a new etcd leader", func() bool { return c.etcd.Leader() != nil })
	progress(t, r, "under the new leader")
	if err := leader.Restart(); err != nil {
		t.Fatal(err)
	}
	return "lost and restarted leader " + leader.Name()
}

// cutNodeFromEtcd cuts every connection of a node to etcd, with resets or,
// every other round of faults, silently, until a post has failed and the others
// have acked posts; then heals the cut and waits for the node to ack.
func cutNodeFromEtcd(t *testing.T, c *chatCluster, r *chatcheck.Recorder, round int) string {
	s := c.victim(round, 1)
	how := "reset"
	for _, p := range s.proxies {
		if round%2 == 0 {
			p.Cut()
		} else {
			how = "silent"
			p.Blackhole()
		}
	}
	since := r.Now()
	poll.Until(t, 60*time.Second, "a post to fail and others to be acked while "+s.node.id+" is cut from etcd", func() bool {
		return r.Count(chatcheck.Unknown, "", since) > 0 && r.Count(chatcheck.Acked, "", since) >= chatProgress
	})
	for _, p := range s.proxies {
		p.Restore()
	}
	answers(t, r, s.node.id, "after its cut from etcd healed")
	return fmt.Sprintf("cut %s from etcd (%s) and healed", s.node.id, how)
}

// chatTotals add up the histories of one run.
type chatTotals struct {
	histories, ops, acked, unknown, unseen, refused, partial, retries, twice, anomalies int
	fullByCount, fullByBytes                                                            int
	faults, failed                                                                      map[string]int
}

func (s *chatTotals) add(fault string, ops []chatcheck.Op, res chatcheck.Result) {
	for _, op := range ops {
		if op.Outcome != chatcheck.Acked {
			s.failed[op.Code.String()]++
		}
	}
	s.twice += res.Duplicates
	s.fullByCount += res.FullByCount
	s.fullByBytes += res.FullByBytes
	s.histories++
	s.ops += res.Ops
	s.acked += res.Acked
	s.unknown += res.Unknown
	s.unseen += res.Unseen
	s.refused += res.Refused
	s.partial += res.Partial
	s.retries += res.Retries
	if !res.OK() {
		s.anomalies++
	}
	s.faults[fault]++
}

// TestRouteChatAnswersLikeOneServerUnderFaults records, history after
// history, 12 clients posting notes through three node processes over a
// three-member etcd while one fault strikes and heals, and checks each
// history against one server with the same bounds (package chatcheck).
// A history the checker rejects fails the test, with porcupine's view of
// it written to the test's artifact directory (kept with -artifacts).
func TestRouteChatAnswersLikeOneServerUnderFaults(t *testing.T) {
	c := startChatCluster(t)
	totals := chatTotals{faults: map[string]int{}, failed: map[string]int{}}
	duplicateControlled := false
	for h := range *chatHistories {
		fault := chatFaults[h%len(chatFaults)]
		start := time.Now()
		ops, what := recordChatHistory(t, c, h, fault)
		recorded := time.Since(start)
		res := chatcheck.Check(ops, chatBounds, 2*time.Minute)
		totals.add(fault.name, ops, res)
		t.Logf("history %d, %s (%s): %v; recorded in %v (median acked post %v), checked in %v", h, fault.name, what, res,
			recorded.Round(time.Millisecond), medianAcked(ops).Round(time.Millisecond), (time.Since(start) - recorded).Round(time.Millisecond))
		switch res.Verdict {
		case porcupine.Illegal:
			reportChatAnomaly(t, h, ops, res)
		case porcupine.Unknown:
			t.Errorf("history %d: porcupine found no verdict within its 2 minutes", h)
		}
		if h == 0 {
			checkNegativeControl(t, ops)
		}
		if !duplicateControlled {
			duplicateControlled = checkDuplicateControl(t, ops)
		}
	}
	if !duplicateControlled {
		t.Errorf("negative control: no answer in %d histories holds a retried note to doctor", totals.histories)
	}
	if totals.fullByCount == 0 || totals.fullByBytes == 0 {
		t.Errorf("%d answers full by count, %d by bytes: want both bounds to forget notes", totals.fullByCount, totals.fullByBytes)
	}
	if totals.acked < *chatHistories*3*chatProgress {
		t.Errorf("%d posts acked over %d histories, want at least %d each", totals.acked, totals.histories, 3*chatProgress)
	}
	t.Logf("CHATCHECK histories=%d ops=%d acked=%d unknown=%d unseen=%d refused=%d partial=%d retries=%d stored_twice=%d full_by_count=%d full_by_bytes=%d anomalies=%d faults=%v failed_by_code=%v",
		totals.histories, totals.ops, totals.acked, totals.unknown, totals.unseen, totals.refused, totals.partial, totals.retries, totals.twice,
		totals.fullByCount, totals.fullByBytes, totals.anomalies, totals.faults, totals.failed)
}

// recordChatHistory runs the clients at three locations of the history's
// own while fault strikes and heals, and returns what they recorded.
func recordChatHistory(t *testing.T, c *chatCluster, h int, fault chatFault) ([]chatcheck.Op, string) {
	t.Helper()
	r := chatcheck.NewRecorder()
	var locations []*pb.Point
	for i := range 3 {
		locations = append(locations, &pb.Point{Latitude: int32(100*h + i + 1), Longitude: 7})
	}
	stopped := make(chan struct{})
	w := chatcheck.Workload{Clients: *chatClients, Locations: locations, MaxPad: 100, Timeout: chatPostTimeout, Retry: true, Stop: stopped}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx, r, c.conns, uint64(h))
	}()
	// A failing test cuts the posts short; a history ends after them.
	defer func() { cancel(); <-done }()
	progress(t, r, "before the fault")
	what := fault.strike(t, c, r, h/len(chatFaults))
	progress(t, r, "after the fault healed")
	close(stopped)
	<-done
	return r.Ops(), what
}

func medianAcked(ops []chatcheck.Op) time.Duration {
	var took []time.Duration
	for _, op := range ops {
		if op.Outcome == chatcheck.Acked {
			took = append(took, op.Return-op.Call)
		}
	}
	if len(took) == 0 {
		return 0
	}
	slices.Sort(took)
	return took[len(took)/2]
}

// reportChatAnomaly fails t with the rules the history breaks, and writes
// the history and porcupine's view of it where the test keeps artifacts.
func reportChatAnomaly(t *testing.T, h int, ops []chatcheck.Op, res chatcheck.Result) {
	t.Helper()
	dir := t.ArtifactDir()
	page := filepath.Join(dir, fmt.Sprintf("history-%d.html", h))
	if err := res.Visualize(page); err != nil {
		t.Errorf("visualize history %d: %v", h, err)
	}
	var text strings.Builder
	for _, loc := range res.Failing {
		fmt.Fprintf(&text, "location %s:\n%s\n\n", loc, chatcheck.Describe(ops, loc))
	}
	ops0 := filepath.Join(dir, fmt.Sprintf("history-%d.txt", h))
	if err := os.WriteFile(ops0, []byte(text.String()), 0o644); err != nil {
		t.Errorf("write history %d: %v", h, err)
	}
	t.Errorf("history %d does not fit one server (%v), at %q:\n%s\nthe ops at those locations: %s\nporcupine's view: %s",
		h, res, res.Failing, strings.Join(res.Findings, "\n"), ops0, page)
}

// checkNegativeControl makes sure the checker is not vacuous: the recorded
// history, with one acknowledged note dropped from a later answer, must be
// rejected.
func checkNegativeControl(t *testing.T, ops []chatcheck.Op) {
	t.Helper()
	doctored, ok := chatcheck.DropAcknowledged(ops)
	if !ok {
		t.Fatal("negative control: no answer in the history to drop an acknowledged note from")
	}
	if res := chatcheck.Check(doctored, chatBounds, 2*time.Minute); res.Verdict != porcupine.Illegal {
		t.Errorf("negative control: the history with an acknowledged note dropped is %v, want %v", res, porcupine.Illegal)
	}
}

// checkDuplicateControl makes sure the checker forbids duplicates: the
// history, with a retried note (one note id, posted twice) answered twice,
// must be rejected. It reports false when no answer holds a retried note.
func checkDuplicateControl(t *testing.T, ops []chatcheck.Op) bool {
	t.Helper()
	doctored, ok := chatcheck.DuplicateRetried(ops)
	if !ok {
		return false
	}
	if res := chatcheck.Check(doctored, chatBounds, 2*time.Minute); res.Verdict != porcupine.Illegal {
		t.Errorf("negative control: the history with a retried note answered twice is %v, want %v", res, porcupine.Illegal)
	}
	return true
}
