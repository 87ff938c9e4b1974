package chatcheck_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/node"
	"github.com/routeguide-cluster/routeguide/internal/testutils/chatcheck"
	"github.com/routeguide-cluster/routeguide/internal/testutils/nodetest"
)

// bounds keep 6 notes at most, and fewer of the longer ones: a message
// of up to 100 bytes costs 128 more, so 1,000 bytes hold 4 to 6 notes.
var bounds = chatcheck.Bounds{PerLocation: 6, AnswerBytes: 1000}

// serverHistory records 8 clients posting 30 notes each at two locations of
// one standalone node, which keeps its notes in memory with bounds.
func serverHistory(t *testing.T) []chatcheck.Op {
	t.Helper()
	n := nodetest.Start(t, "n1", func(c *node.Config) {
		c.NoteLimits.PerLocation = bounds.PerLocation
		c.NoteLimits.AnswerBytes = bounds.AnswerBytes
		c.NoteLimits.MessageBytes = 128
	})
	conn, err := grpc.NewClient(n.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	r := chatcheck.NewRecorder()
	chatcheck.Workload{
		Clients:   8,
		Locations: []*pb.Point{{Latitude: 1, Longitude: 1}, {Latitude: 2, Longitude: 2}},
		MaxPad:    90,
		Timeout:   10 * time.Second,
		Posts:     30,
	}.Run(t.Context(), r, []grpc.ClientConnInterface{conn}, 1)
	return r.Ops()
}

func TestOneServersHistoryFitsTheModel(t *testing.T) {
	ops := serverHistory(t)
	res := chatcheck.Check(ops, bounds, time.Minute)
	if !res.OK() {
		t.Fatalf("%v\n%s", res, strings.Join(res.Findings, "\n"))
	}
	if res.Acked != 240 {
		t.Errorf("%d of 240 posts acked: %v", res.Acked, res)
	}
	// Both bounds forgot notes, so the model's forgetting was put to work.
	if res.FullByCount == 0 || res.FullByBytes == 0 {
		t.Errorf("%d answers full by count, %d by bytes: want both bounds to forget notes", res.FullByCount, res.FullByBytes)
	}
	t.Log(res)
}

// doctor returns a copy of ops whose answer at index i is changed by f.
func doctor(ops []chatcheck.Op, i int, f func(answer []string) []string) []chatcheck.Op {
	out := slices.Clone(ops)
	out[i].Answer = f(slices.Clone(ops[i].Answer))
	return out
}

// fullAnswerLate is the index of an acked op in the second half of the
// history whose answer holds at least 4 notes, each acknowledged before
// the op was called.
func fullAnswerLate(t *testing.T, ops []chatcheck.Op) int {
	t.Helper()
	acked := map[string]time.Duration{}
	for _, op := range ops {
		if op.Outcome == chatcheck.Acked {
			acked[op.Message] = op.Return
		}
	}
	for i := len(ops) / 2; i < len(ops); i++ {
		op := ops[i]
		if len(op.Answer) < 4 {
			continue
		}
		before := true
		for _, m := range op.Answer[:len(op.Answer)-1] {
			if at, ok := acked[m]; !ok || at >= op.Call {
				before = false
			}
		}
		if before {
			return i
		}
	}
	t.Fatal("no answer of 4 notes acknowledged before it in the second half of the history")
	return 0
}

// TestCheckerRejectsDoctoredHistories is the negative control: a history
// one server produced, with one answer changed to break one rule of the
// model, must be rejected, and the finding must name the rule.
func TestCheckerRejectsDoctoredHistories(t *testing.T) {
	ops := serverHistory(t)
	i := fullAnswerLate(t, ops)
	t.Logf("doctoring %v", ops[i])
	for _, c := range []struct {
		name    string
		doctor  func([]string) []string
		finding string
	}{
		{"a note dropped", func(a []string) []string { return slices.Delete(a, 1, 2) }, ""},
		{"two notes swapped", func(a []string) []string { a[0], a[1] = a[1], a[0]; return a }, "in opposite orders"},
		{"a note never posted", func(a []string) []string { a[1] = "never posted"; return a }, "never posted here"},
		{"a note answered twice", func(a []string) []string { return slices.Insert(a, 1, a[0]) }, "answered 2 times in one answer"},
		{"the own note missing", func(a []string) []string { return a[:len(a)-1] }, "without its own note last"},
	} {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			res := chatcheck.Check(doctor(ops, i, c.doctor), bounds, time.Minute)
			if res.OK() {
				t.Fatalf("the checker accepted a history with %s: %v", c.name, res)
			}
			if c.finding != "" && !slices.ContainsFunc(res.Findings, func(f string) bool { return strings.Contains(f, c.finding) }) {
				t.Errorf("findings %q, want one saying %q", res.Findings, c.finding)
			}
		})
	}
}

func TestCheckerRejectsAHistoryWithoutAnAcknowledgedNote(t *testing.T) {
	ops := serverHistory(t)
	doctored, ok := chatcheck.DropAcknowledged(ops)
	if !ok {
		t.Fatal("no answer to doctor")
	}
	res := chatcheck.Check(doctored, bounds, time.Minute)
	if res.OK() || len(res.Failing) != 1 {
		t.Errorf("%v, failing at %q: want one location to fail", res, res.Failing)
	}
}

// op is an op of a hand-written history, at one location.
func op(client int, call, ret time.Duration, message string, outcome chatcheck.Outcome, answer ...string) chatcheck.Op {
	return chatcheck.Op{Client: client, Location: "1,1", Message: message, Call: call, Return: ret, Outcome: outcome, Answer: answer}
}

const (
	acked   = chatcheck.Acked
	unknown = chatcheck.Unknown
	refused = chatcheck.Refused
	partial = chatcheck.Partial
)

// TestCheckerRules checks the model on short histories written by hand,
// with bounds that keep 3 notes.
func TestCheckerRules(t *testing.T) {
	three := chatcheck.Bounds{PerLocation: 3, AnswerBytes: 1 << 20}
	for _, c := range []struct {
		name    string
		ops     []chatcheck.Op
		ok      bool
		finding string
	}{
		{"posts one after another", []chatcheck.Op{
			op(0, 0, 1, "a", acked, "a"), op(1, 2, 3, "b", acked, "a", "b")}, true, ""},
		{"concurrent posts in either order", []chatcheck.Op{
			op(0, 0, 3, "a", acked, "b", "a"), op(1, 1, 2, "b", acked, "b")}, true, ""},
		{"an acked note lost by a later post", []chatcheck.Op{
			op(0, 0, 1, "a", acked, "a"), op(1, 2, 3, "b", acked, "b")}, false, "acknowledged before it began"},
		{"the bound forgets the oldest", []chatcheck.Op{
			op(0, 0, 1, "a", acked, "a"), op(0, 2, 3, "b", acked, "a", "b"), op(0, 4, 5, "c", acked, "a", "b", "c"),
			op(1, 6, 7, "d", acked, "b", "c", "d")}, true, ""},
		{"the bound forgets a newer note", []chatcheck.Op{
			op(0, 0, 1, "a", acked, "a"), op(0, 2, 3, "b", acked, "a", "b"), op(0, 4, 5, "c", acked, "a", "b", "c"),
			op(1, 6, 7, "d", acked, "a", "c", "d")}, false, ""},
		{"an unknown post whose note is never seen", []chatcheck.Op{
			op(0, 0, 1, "a", unknown), op(0, 2, 3, "x", unknown), op(1, 4, 5, "b", acked, "b")}, true, ""},
		{"an unknown post that never took effect", []chatcheck.Op{
			op(0, 0, 1, "a", unknown), op(1, 2, 3, "b", acked, "b"), op(1, 4, 5, "c", acked, "b", "c")}, true, ""},
		{"an unknown post that took effect late", []chatcheck.Op{
			op(0, 0, 1, "a", unknown), op(1, 2, 3, "b", acked, "b"), op(1, 4, 5, "c", acked, "b", "a", "c")}, true, ""},
		{"an unknown post seen, then lost", []chatcheck.Op{
			op(0, 0, 1, "a", unknown), op(1, 2, 3, "b", acked, "a", "b"), op(1, 4, 5, "c", acked, "b", "c")}, false, ""},
		{"a retried post stored twice", []chatcheck.Op{
			op(0, 0, 1, "a", unknown), op(0, 2, 3, "a", acked, "a", "a")}, false, "answered 2 times in one answer"},
		{"a retried post stored twice, seen by another", []chatcheck.Op{
			op(0, 0, 1, "a", unknown), op(0, 2, 3, "a", acked, "a"), op(1, 4, 5, "b", acked, "a", "a", "b")}, false, "answered 2 times in one answer"},
		{"a post stored twice", []chatcheck.Op{
			op(0, 0, 1, "a", acked, "a"), op(1, 2, 3, "b", acked, "a", "a", "b")}, false, "answered 2 times in one answer"},
		{"a retry answered from its first attempt's place", []chatcheck.Op{
			op(0, 0, 1, "a", unknown), op(1, 2, 3, "b", acked, "a", "b"), op(0, 4, 5, "a", acked, "a"), op(1, 6, 7, "c", acked, "a", "b", "c")}, true, ""},
		{"a retry answered with a note newer than its own", []chatcheck.Op{
			op(0, 0, 1, "a", unknown), op(1, 2, 3, "b", acked, "a", "b"), op(0, 4, 5, "a", acked, "a", "b")}, false, ""},
		{"a retry whose note is kept answered with nothing", []chatcheck.Op{
			op(0, 0, 1, "a", unknown), op(1, 2, 3, "b", acked, "a", "b"), op(0, 4, 5, "a", acked)}, false, ""},
		{"a retry whose note is forgotten answered with nothing", []chatcheck.Op{
			op(0, 0, 1, "a", unknown), op(1, 2, 3, "b", acked, "a", "b"), op(1, 4, 5, "c", acked, "a", "b", "c"),
			op(1, 6, 7, "d", acked, "b", "c", "d"), op(0, 8, 9, "a", acked)}, true, ""},
		{"a retry answered with a forgotten note a failed prune left", []chatcheck.Op{
			op(0, 0, 1, "x", acked, "x"), op(0, 2, 3, "a", unknown), op(1, 4, 5, "b", acked, "x", "a", "b"),
			op(1, 6, 7, "c", acked, "a", "b", "c"), op(0, 8, 9, "a", acked, "x", "a")}, true, ""},
		{"a retry that stored the note before its first attempt took effect", []chatcheck.Op{
			op(0, 0, 1, "a", unknown), op(0, 2, 3, "a", acked, "a"), op(1, 4, 5, "b", acked, "a", "b")}, true, ""},
		{"a retry's partial answer", []chatcheck.Op{
			op(0, 0, 1, "a", unknown), op(1, 2, 3, "b", acked, "a", "b"), op(0, 4, 5, "a", partial, "a")}, true, ""},
		{"a refused post stored", []chatcheck.Op{
			op(0, 0, 1, "a", refused), op(1, 2, 3, "b", acked, "a", "b")}, false, ""},
		{"a refused post", []chatcheck.Op{
			op(0, 0, 1, "a", refused), op(1, 2, 3, "b", acked, "b")}, true, ""},
		{"a partial answer, then the note in a later one", []chatcheck.Op{
			op(0, 0, 1, "a", acked, "a"), op(1, 2, 3, "b", partial, "a"), op(0, 4, 5, "c", acked, "a", "b", "c")}, true, ""},
		{"a partial answer that does not begin the answer", []chatcheck.Op{
			op(0, 0, 1, "a", acked, "a"), op(1, 2, 3, "b", partial, "b"), op(0, 4, 5, "c", acked, "a", "b", "c")}, false, ""},
		{"a partial answer whose note is lost", []chatcheck.Op{
			op(0, 0, 1, "a", acked, "a"), op(1, 2, 3, "b", partial, "a"), op(0, 4, 5, "c", acked, "a", "c")}, false, ""},
		{"a note of another location", []chatcheck.Op{
			op(0, 0, 1, "a", acked, chatcheck.WrongLocation("2,2", "x"), "a")}, false, "never posted here"},
	} {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			res := chatcheck.Check(c.ops, three, time.Minute)
			if res.OK() != c.ok {
				t.Fatalf("verdict %v, want ok=%v; findings %q", res.Verdict, c.ok, res.Findings)
			}
			if c.finding != "" && !slices.ContainsFunc(res.Findings, func(f string) bool { return strings.Contains(f, c.finding) }) {
				t.Errorf("findings %q, want one saying %q", res.Findings, c.finding)
			}
		})
	}
}

func TestVisualizeWritesTheHistory(t *testing.T) {
	res := chatcheck.Check([]chatcheck.Op{op(0, 0, 1, "a", acked, "a"), op(1, 2, 3, "b", acked, "b")}, bounds, time.Minute)
	path := filepath.Join(t.TempDir(), "history.html")
	if err := res.Visualize(path); err != nil {
		t.Fatal(err)
	}
	page, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(page), `post \"b\"`) && !strings.Contains(string(page), `post "b"`) {
		t.Errorf("the page (%d bytes) does not show the post of b", len(page))
	}
}
