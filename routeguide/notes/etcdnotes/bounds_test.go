package etcdnotes_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/routeguide-cluster/routeguide/internal/localetcd"
	"github.com/routeguide-cluster/routeguide/internal/testutils/poll"
	"github.com/routeguide-cluster/routeguide/routeguide/notes"
	"github.com/routeguide-cluster/routeguide/routeguide/notes/notestest"
)

// countingClient is an etcd client that adds the size of every answer it
// gets from etcd to read.
func countingClient(t testing.TB, url string, read *atomic.Int64) *clientv3.Client {
	t.Helper()
	count := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if m, ok := reply.(proto.Message); ok {
			read.Add(int64(proto.Size(m)))
		}
		return err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{url},
		DialTimeout: 5 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(count)},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func TestEtcdAnswersTheNewestNotesThatFitInAnAnswerAndPrunesTheRest(t *testing.T) {
	cli := newClient(t, startEtcd(t).ClientURL())
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
	cli := newClient(t, startEtcd(t).ClientURL())
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
	cli := newClient(t, startEtcd(t).ClientURL())
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
	srv := startEtcd(t)
	var read atomic.Int64
	cli := countingClient(t, srv.ClientURL(), &read)
	cfg := testConfig(t)
	store := newEtcd(t, cli, cfg)
	// What an unbounded store let a location hold: 1000 notes of 4 KiB
	// of control characters, 24 MB of JSON that every post there read.
	filler := newClient(t, srv.ClientURL())
	value, err := proto.Marshal(notestest.Note(5, 5, strings.Repeat("\x00", cfg.Limits.MessageBytes)))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		if _, err := filler.Put(t.Context(), fmt.Sprintf("%s%04d", store.LocationPrefix(5, 5), i), string(value)); err != nil {
			t.Fatal(err)
		}
	}

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
