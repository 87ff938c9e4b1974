package etcdnotes_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/routeguide-cluster/routeguide/internal/localetcd"
	"github.com/routeguide-cluster/routeguide/internal/testutils/etcdtest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/poll"
	"github.com/routeguide-cluster/routeguide/routeguide/notes"
	"github.com/routeguide-cluster/routeguide/routeguide/notes/notestest"
)

// countReplies is an etcd client interceptor that adds the size of every
// answer from etcd to read.
func countReplies(read *atomic.Int64) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if m, ok := reply.(proto.Message); ok {
			read.Add(int64(proto.Size(m)))
		}
		return err
	}
}

// countingClient is an etcd client that adds the size of every answer it
// gets from etcd to read.
func countingClient(t testing.TB, url string, read *atomic.Int64) *clientv3.Client {
	return etcdtest.Client(t, url, grpc.WithChainUnaryInterceptor(countReplies(read)))
}

// sentOps is an etcd client interceptor that hands check every operation
// a request carries: alone, in a transaction's branches, or in a
// transaction nested in one.
func sentOps(check func(*etcdserverpb.RequestOp)) grpc.UnaryClientInterceptor {
	var visit func(ops []*etcdserverpb.RequestOp)
	visit = func(ops []*etcdserverpb.RequestOp) {
		for _, op := range ops {
			check(op)
			if txn := op.GetRequestTxn(); txn != nil {
				visit(slices.Concat(txn.Success, txn.Failure))
			}
		}
	}
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		switch r := req.(type) {
		case *etcdserverpb.RangeRequest:
			check(&etcdserverpb.RequestOp{Request: &etcdserverpb.RequestOp_RequestRange{RequestRange: r}})
		case *etcdserverpb.DeleteRangeRequest:
			check(&etcdserverpb.RequestOp{Request: &etcdserverpb.RequestOp_RequestDeleteRange{RequestDeleteRange: r}})
		case *etcdserverpb.TxnRequest:
			check(&etcdserverpb.RequestOp{Request: &etcdserverpb.RequestOp_RequestTxn{RequestTxn: r}})
			visit(slices.Concat(r.Success, r.Failure))
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

// opsClient is an etcd client whose every operation goes to check first.
func opsClient(t testing.TB, url string, check func(*etcdserverpb.RequestOp)) *clientv3.Client {
	return etcdtest.Client(t, url, grpc.WithChainUnaryInterceptor(sentOps(check)))
}

// TestEtcdEveryRangeOfAPostIsOneEtcdLimitsItself guards the key layout:
// etcd reads, sorts and truncates the whole range of a Range that sorts by
// anything but the key ascending or filters on revisions, whatever its
// limit. A post's reads must be plain ranges with a limit, keys-only
// ranges (etcd's index alone), or single keys.
func TestEtcdEveryRangeOfAPostIsOneEtcdLimitsItself(t *testing.T) {
	srv := etcdtest.Start(t)
	var ranges, unbounded atomic.Int64
	var bad sync.Map
	check := func(op *etcdserverpb.RequestOp) {
		r := op.GetRequestRange()
		if r == nil {
			return
		}
		ranges.Add(1)
		plain := r.SortOrder == etcdserverpb.RangeRequest_NONE && r.MinCreateRevision == 0 && r.MaxCreateRevision == 0 &&
			r.MinModRevision == 0 && r.MaxModRevision == 0
		if !plain || r.Limit == 0 && !r.KeysOnly && len(r.RangeEnd) > 0 {
			unbounded.Add(1)
			bad.Store(r.String(), true)
		}
	}
	var read atomic.Int64
	cli := etcdtest.Client(t, srv.ClientURL(), grpc.WithChainUnaryInterceptor(sentOps(check), countReplies(&read)))
	cfg := testConfig(t)
	cfg.Limits.PerLocation, cfg.Limits.MessageBytes, cfg.Limits.AnswerBytes = 50, 300, 4000
	store := newEtcd(t, cli, cfg)
	// Short notes make answers of several pages, past both bounds, and
	// each post prunes.
	most := int64(0)
	for i := range 120 {
		message := strings.Repeat("m", i%40)
		read.Store(0)
		if _, err := store.Post(t.Context(), notestest.Note(3, 3, message)); err != nil {
			t.Fatal(err)
		}
		most = max(most, read.Load())
	}
	// The answer, the note the last page held beyond it, and what the
	// put, the prune and their headers answer.
	if bound := int64(cfg.Limits.AnswerBytes + cfg.Limits.MessageBytes + 1000); most > bound {
		t.Errorf("a post read up to %d bytes from etcd, want at most %d", most, bound)
	}
	bad.Range(func(k, _ any) bool { t.Errorf("a post sent a Range whose limit etcd drops: %v", k); return true })
	if ranges.Load() < 240 || unbounded.Load() != 0 {
		t.Errorf("%d ranges, %d of them unbounded; want at least two per post, none unbounded", ranges.Load(), unbounded.Load())
	}
}

// TestEtcdAPostAtALocationOfJSONNotesReadsAtMostOneAnswer fills a location
// with what nodes of the JSON era could store: 1000 notes of 4 KiB of
// control characters, 24 MB of JSON. A note of an earlier release costs its
// stored size in an answer, so a post reads at most an answer's bytes of
// them, and prunes the rest.
func TestEtcdAPostAtALocationOfJSONNotesReadsAtMostOneAnswer(t *testing.T) {
	srv := etcdtest.Start(t)
	var read atomic.Int64
	cli := countingClient(t, srv.ClientURL(), &read)
	cfg := testConfig(t)
	store := newEtcd(t, cli, cfg)
	value, err := protojson.Marshal(notestest.Note(5, 5, strings.Repeat("\x01", cfg.Limits.MessageBytes)))
	if err != nil {
		t.Fatal(err)
	}
	fillLocation(t, srv.ClientURL(), store.LocationPrefix(5, 5), "%032x", value)
	// The answer, one value the last page held beyond it, and the keys of
	// the location from etcd's index (about 150 bytes each with their
	// revisions).
	bound := int64(cfg.Limits.AnswerBytes + len(value) + 1000*150)
	for i := range 2 {
		read.Store(0)
		got, err := store.Post(t.Context(), notestest.Note(5, 5, fmt.Sprint("new ", i)))
		if err != nil {
			t.Fatal(err)
		}
		if n := read.Load(); n > bound {
			t.Errorf("post %d read %d bytes from etcd, want at most %d", i, n, bound)
		}
		// Each JSON note counts its %d bytes: the answer holds 42 of them.
		if want := cfg.Limits.AnswerBytes/len(value) + 1 + i; len(got) != want || got[len(got)-1].Message != fmt.Sprint("new ", i) {
			t.Errorf("post %d answered %d notes ending with %q, want %d ending with the new note", i, len(got), got[len(got)-1].Message, want)
		}
	}
	if n := countAt(t, cli, store, 5, 5); n > cfg.Limits.AnswerBytes/len(value)+2 {
		t.Errorf("etcd keeps %d notes at the location, more than an answer holds", n)
	}
}

func TestEtcdAnswersTheNewestNotesThatFitInAnAnswerAndPrunesTheRest(t *testing.T) {
	cli := newClient(t, etcdtest.Start(t).ClientURL())
	cfg := testConfig(t)
	cfg.Limits.MessageBytes, cfg.Limits.AnswerBytes = 300, 2000
	store := newEtcd(t, cli, cfg)
	notestest.CheckAnswerBytes(t, store, cfg.Limits.AnswerBytes)
	// The 60 notes cost about 17 KB; the location keeps one answer's worth.
	if n := countAt(t, cli, store, 7, 7); n > cfg.Limits.AnswerBytes/notes.NoteOverhead {
		t.Errorf("etcd keeps %d notes at the location, more than an answer of %d bytes can hold", n, cfg.Limits.AnswerBytes)
	}
}

func TestEtcdStoresANoteInAFewBytesMoreThanItsMessage(t *testing.T) {
	cli := newClient(t, etcdtest.Start(t).ClientURL())
	store := newEtcd(t, cli, testConfig(t))
	// Control characters took six bytes each in JSON.
	message := strings.Repeat("\x01", 4096)
	if _, err := store.Post(t.Context(), notestest.Note(1, 1, message)); err != nil {
		t.Fatal(err)
	}
	kvs := keysAt(t, cli, store, 1, 1)
	if len(kvs) != 1 {
		t.Fatalf("etcd holds %d notes, want 1", len(kvs))
	}
	if size := len(kvs[0].Value); size > len(message)+32 {
		t.Errorf("a note of %d bytes is stored in %d", len(message), size)
	}
}

func TestEtcdReadsTheNotesThatEarlierNodesStoredAsJSON(t *testing.T) {
	cli := newClient(t, etcdtest.Start(t).ClientURL())
	store := newEtcd(t, cli, testConfig(t))
	old, err := protojson.Marshal(notestest.Note(1, 1, "from an older node"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(t.Context(), store.LocationPrefix(1, 1)+"old", string(old)); err != nil {
		t.Fatal(err)
	}
	got, err := store.Post(t.Context(), notestest.Note(1, 1, "from this one"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"from an older node", "from this one"}; fmt.Sprint(notestest.Messages(got)) != fmt.Sprint(want) {
		t.Errorf("answer %q, want %q", notestest.Messages(got), want)
	}
}

func TestEtcdAPostAtAFullLocationReadsAtMostOneAnswerFromEtcd(t *testing.T) {
	srv := etcdtest.Start(t)
	var read atomic.Int64
	cli := countingClient(t, srv.ClientURL(), &read)
	cfg := testConfig(t)
	store := newEtcd(t, cli, cfg)
	// What an unbounded store let a location hold: 1000 notes of 4 KiB
	// of control characters, 24 MB of JSON that every post there read.
	value, err := proto.Marshal(notestest.Note(5, 5, strings.Repeat("\x00", cfg.Limits.MessageBytes)))
	if err != nil {
		t.Fatal(err)
	}
	fillLocation(t, srv.ClientURL(), store.LocationPrefix(5, 5), "%04d", value)

	read.Store(0)
	got, err := store.Post(t.Context(), notestest.Note(5, 5, "one more"))
	if err != nil {
		t.Fatal(err)
	}
	// The answer, the one note that no longer fit, and the keys of the
	// notes it pruned (about 100 bytes each with their revisions).
	bound := int64(cfg.Limits.AnswerBytes + cfg.Limits.MessageBytes + 1000*100)
	first := read.Load()
	if n := first; n > bound {
		t.Errorf("the post read %d bytes from etcd, want at most %d (AnswerBytes %d, one note and the pruned keys)", n, bound, cfg.Limits.AnswerBytes)
	}
	answered := 0
	for _, n := range got {
		answered += notes.Cost(n.Message)
	}
	if answered > cfg.Limits.AnswerBytes || got[len(got)-1].Message != "one more" {
		t.Errorf("answered %d notes of %d bytes in all ending with %q, want at most %d bytes ending with the new note", len(got), answered, got[len(got)-1].Message, cfg.Limits.AnswerBytes)
	}
	if n := countAt(t, cli, store, 5, 5); n != len(got) {
		t.Errorf("etcd keeps %d notes at the location after the post, want the %d of its answer", n, len(got))
	}
	// The location is now full by bytes: what every later post there costs.
	read.Store(0)
	start := time.Now()
	if _, err := store.Post(t.Context(), notestest.Note(5, 5, strings.Repeat("\x00", cfg.Limits.MessageBytes))); err != nil {
		t.Fatal(err)
	}
	t.Logf("a post at a location of 1000 notes of 4 KiB read %d bytes from etcd; at the full location it leaves, a post read %d bytes in %v",
		first, read.Load(), time.Since(start).Round(time.Microsecond))
}

func TestEtcdRefusesNotesOnceTheBudgetIsReachedAndTakesThemAgainOnceFreed(t *testing.T) {
	srv, err := localetcd.Start(localetcd.Config{Dir: t.TempDir(), ClientAddr: "127.0.0.1:0", QuotaBytes: 32 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	cli := newClient(t, srv.ClientURL())
	status, err := cli.Status(t.Context(), cli.Endpoints()[0])
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.Budget = status.DbSizeInUse + 1<<20
	cfg.BudgetCheck = 50 * time.Millisecond
	store := newEtcd(t, cli, cfg)
	message := strings.Repeat("x", cfg.Limits.MessageBytes)

	posted := 0
	for ; posted < 2000; posted++ {
		_, err = store.Post(t.Context(), notestest.Note(int32(posted), 0, message))
		if err != nil {
			break
		}
	}
	if !errors.Is(err, notes.ErrLimit) || !strings.Contains(err.Error(), "notes budget") {
		t.Fatalf("after %d notes of 4 KiB the post failed with %v, want ErrLimit naming the notes budget", posted, err)
	}
	// 1 MiB holds at most 256 notes of 4 KiB; the estimate between two
	// measurements errs on the safe side, never by more than half.
	if posted < 64 || posted > 256 {
		t.Errorf("the budget of 1 MiB took %d notes of 4 KiB", posted)
	}
	usage := store.Usage()
	if usage.Limit != cfg.Budget || usage.InUse < usage.Limit || usage.MeasuredAt.IsZero() {
		t.Errorf("usage %+v, want the budget %d reached", usage, cfg.Budget)
	}
	alarms, err := cli.AlarmList(t.Context())
	if err != nil || len(alarms.Alarms) != 0 {
		t.Errorf("etcd alarms %v (%v), want none", alarms, err)
	}

	// What an operator does: the notes go (they expire, or are deleted),
	// and a compaction frees their space; notes are taken again.
	deleted, err := cli.Delete(t.Context(), cfg.Prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(t.Context(), deleted.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	// A compaction frees the pages for reuse; how much of them counts as
	// free at once depends on bbolt's pending pages. A defragmentation
	// leaves exactly the live data, as docs/OPERATIONS.md tells operators.
	if _, err := cli.Defragment(t.Context(), cli.Endpoints()[0]); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, "a post after the notes were deleted, compacted and defragmented", func() bool {
		_, err = store.Post(t.Context(), notestest.Note(1, 1, "after the compaction"))
		return err == nil
	})
}

func TestEtcdBudgetNeverPassesThreeQuartersOfTheQuotaEtcdReports(t *testing.T) {
	srv, err := localetcd.Start(localetcd.Config{Dir: t.TempDir(), ClientAddr: "127.0.0.1:0", QuotaBytes: 32 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	cfg := testConfig(t)
	cfg.Budget = 1 << 30
	store := newEtcd(t, newClient(t, srv.ClientURL()), cfg)
	if before := store.Usage(); before.Limit != cfg.Budget || !before.MeasuredAt.IsZero() {
		t.Errorf("before any post: %+v, want the configured budget, never measured", before)
	}
	if _, err := store.Post(t.Context(), notestest.Note(1, 1, "measured")); err != nil {
		t.Fatal(err)
	}
	if got := store.Usage(); got.Limit != 24<<20 || got.InUse <= 0 || got.MeasuredAt.IsZero() {
		t.Errorf("after a post: %+v, want the limit at 3/4 of the 32 MiB quota and a measurement", got)
	}
}

// TestEtcdAPostWhoseAnswerIsCutAfterItsFirstPageFailsAndIsCounted cuts the
// reads of an answer after its first page: the post fails with
// ErrUnavailable and is counted, rather than answer with the notes read so
// far, which would not be a prefix of later answers.
func TestEtcdAPostWhoseAnswerIsCutAfterItsFirstPageFailsAndIsCounted(t *testing.T) {
	srv := etcdtest.Start(t)
	var cut atomic.Bool
	var injected atomic.Int64
	// A page after the first is the only read a post sends alone that is
	// a range at the revision of its put.
	cutPages := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if r, ok := req.(*etcdserverpb.TxnRequest); ok && len(r.Success) == 1 && cut.Load() &&
			r.Success[0].GetRequestRange().GetRevision() > 0 && len(r.Success[0].GetRequestRange().GetRangeEnd()) > 0 {
			injected.Add(1)
			return errors.New("connection cut between two pages")
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	cli := etcdtest.Client(t, srv.ClientURL(), grpc.WithChainUnaryInterceptor(cutPages))
	cfg := testConfig(t)
	cfg.Limits.MessageBytes, cfg.Limits.AnswerBytes = 300, 4000
	store := newEtcd(t, cli, cfg)
	for i := range 20 {
		if _, err := store.Post(t.Context(), notestest.Note(2, 2, fmt.Sprint("short ", i))); err != nil {
			t.Fatal(err)
		}
	}
	cut.Store(true)
	got, err := store.Post(t.Context(), notestest.Note(2, 2, "cut"))
	if !errors.Is(err, notes.ErrUnavailable) || got != nil {
		t.Fatalf("a post whose second page failed: %d notes, %v; want none and ErrUnavailable", len(got), err)
	}
	if injected.Load() == 0 {
		t.Fatal("no page after the first was read: the test cut nothing")
	}
	if s := store.Stats(); s.UnreadAnswers != 1 {
		t.Errorf("stats %+v, want one unread answer", s)
	}
	// The note is stored: the next answer, whole, has it.
	cut.Store(false)
	got, err = store.Post(t.Context(), notestest.Note(2, 2, "after"))
	if err != nil {
		t.Fatal(err)
	}
	if m := notestest.Messages(got); len(m) != 22 || m[20] != "cut" {
		t.Errorf("the next answer %q, want the 20 notes, the cut one and itself", m)
	}
}

// faultyStatusClient is an etcd client that counts the connections it dials
// and the Status calls it makes, and fails those while failStatus is set.
func faultyStatusClient(t *testing.T, url string, dials, statuses *atomic.Int64, failStatus *atomic.Bool) *clientv3.Client {
	t.Helper()
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		dials.Add(1)
		return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	}
	status := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if method == "/etcdserverpb.Maintenance/Status" {
			statuses.Add(1)
			if failStatus.Load() {
				return errors.New("status refused by the test")
			}
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	return etcdtest.Client(t, url, grpc.WithContextDialer(dial), grpc.WithChainUnaryInterceptor(status))
}

func TestEtcdBudgetAsksEtcdOverTheStoresOwnConnection(t *testing.T) {
	srv := etcdtest.Start(t)
	var dials, statuses atomic.Int64
	var fail atomic.Bool
	cfg := testConfig(t)
	cfg.BudgetCheck = time.Millisecond
	store := newEtcd(t, faultyStatusClient(t, srv.ClientURL(), &dials, &statuses, &fail), cfg)
	for i := range 30 {
		if _, err := store.Post(t.Context(), notestest.Note(int32(i), 1, "measured")); err != nil {
			t.Fatal(err)
		}
	}
	if statuses.Load() < 10 || dials.Load() != 1 {
		t.Errorf("%d Status calls over %d connections, want at least 10 over the one connection", statuses.Load(), dials.Load())
	}
}

// TestEtcdBudgetWhileStatusFailsTakesAnAllowanceAndRecovers: while etcd
// takes notes but its Status fails, a store takes Budget/16 of unmeasured
// writes, then refuses saying why, and takes notes again as soon as Status
// answers, with etcd nearly empty all along.
func TestEtcdBudgetWhileStatusFailsTakesAnAllowanceAndRecovers(t *testing.T) {
	srv := etcdtest.Start(t)
	var dials, statuses atomic.Int64
	var fail atomic.Bool
	fail.Store(true)
	cfg := testConfig(t)
	cfg.Budget, cfg.BudgetCheck = 4<<20, 10*time.Millisecond
	store := newEtcd(t, faultyStatusClient(t, srv.ClientURL(), &dials, &statuses, &fail), cfg)
	message := strings.Repeat("x", cfg.Limits.MessageBytes)
	posted := 0
	var err error
	for ; posted < 200; posted++ {
		if _, err = store.Post(t.Context(), notestest.Note(int32(posted), 1, message)); err != nil {
			break
		}
	}
	// 256 KiB counted as twice each note and 128 bytes: 31 notes.
	if !errors.Is(err, notes.ErrLimit) || !strings.Contains(err.Error(), "cannot be measured") || posted < 20 || posted > 32 {
		t.Fatalf("with Status failing, %d notes were taken, then %v; want about 31, then ErrLimit saying the budget cannot be measured", posted, err)
	}
	fail.Store(false)
	poll.Until(t, 10*time.Second, "a note once Status answers", func() bool {
		_, err = store.Post(t.Context(), notestest.Note(1000, 1, message))
		return err == nil
	})
}

// TestEtcdBudgetCountsTheFileEtcdsQuotaChecks: etcd's quota checks the size
// of its file, which a compaction does not shrink; the budget counts it.
func TestEtcdBudgetCountsTheFileEtcdsQuotaChecks(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := newClient(t, srv.ClientURL())
	filler := strings.Repeat("f", 64<<10)
	for i := range 100 {
		if _, err := cli.Put(t.Context(), fmt.Sprint("filler/", i), filler); err != nil {
			t.Fatal(err)
		}
	}
	deleted, err := cli.Delete(t.Context(), "filler/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(t.Context(), deleted.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	status, err := cli.Status(t.Context(), cli.Endpoints()[0])
	if err != nil {
		t.Fatal(err)
	}
	if status.DbSize < status.DbSizeInUse+4<<20 {
		t.Fatalf("etcd's file is %d bytes with %d in use; the test needs them apart", status.DbSize, status.DbSizeInUse)
	}
	store := newEtcd(t, cli, testConfig(t))
	if _, err := store.Post(t.Context(), notestest.Note(1, 1, "measured")); err != nil {
		t.Fatal(err)
	}
	if got := store.Usage().InUse; got < status.DbSize {
		t.Errorf("the budget counts %d bytes, less than etcd's file of %d (in use %d)", got, status.DbSize, status.DbSizeInUse)
	}
}

// fillLocation writes value under 1000 keys of the location at prefix, each
// named by suffix formatted with 0 to 999, as notes of an earlier release.
func fillLocation(t *testing.T, url, prefix, suffix string, value []byte) {
	t.Helper()
	filler := newClient(t, url)
	for i := range 1000 {
		if _, err := filler.Put(t.Context(), prefix+fmt.Sprintf(suffix, i), string(value)); err != nil {
			t.Fatal(err)
		}
	}
}
