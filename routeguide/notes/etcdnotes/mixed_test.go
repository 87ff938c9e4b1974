package etcdnotes_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/routeguide-cluster/routeguide/internal/testutils/chatcheck"
	"github.com/routeguide-cluster/routeguide/internal/testutils/etcdtest"
	"github.com/routeguide-cluster/routeguide/routeguide/notes"
	"github.com/routeguide-cluster/routeguide/routeguide/notes/etcdnotes"
	"github.com/routeguide-cluster/routeguide/routeguide/notes/notestest"
)

// boundedStore is a store with limits of its own, and what one server
// with those limits would answer.
type boundedStore struct {
	store  *etcdnotes.Store
	bounds chatcheck.Bounds
}

func newBoundedStore(t *testing.T, url string, cfg etcdnotes.Config, perLocation, messageBytes, answerBytes int) boundedStore {
	t.Helper()
	cfg.Limits.PerLocation, cfg.Limits.MessageBytes, cfg.Limits.AnswerBytes = perLocation, messageBytes, answerBytes
	return boundedStore{newEtcd(t, newClient(t, url), cfg), chatcheck.Bounds{PerLocation: perLocation, AnswerBytes: answerBytes}}
}

// TestEtcdStoresWithDifferentBoundsPruneNoNoteAnotherStillAnswersWith posts
// in turn through two stores with different limits on one etcd: each must
// answer what one server with its own limits would, so the narrower one
// may not prune a note the wider one still answers with. In "crossed",
// each store is the wider one for some notes: short messages fit more in
// A's bytes, long ones more in B's count.
func TestEtcdStoresWithDifferentBoundsPruneNoNoteAnotherStillAnswersWith(t *testing.T) {
	for _, c := range []struct {
		name       string
		a, b       [3]int // PerLocation, MessageBytes, AnswerBytes
		messageLen func(i int) int
	}{
		{"by count", [3]int{6, 100, 1 << 20}, [3]int{2, 100, 1 << 20}, func(int) int { return 10 }},
		{"by bytes", [3]int{100, 100, 2000}, [3]int{100, 100, 600}, func(i int) int { return 60 + i%40 }},
		{"by message bytes", [3]int{100, 1000, 4000}, [3]int{100, 100, 1000}, func(i int) int { return []int{900, 50}[i%2] }},
		{"crossed", [3]int{10, 300, 1000}, [3]int{3, 300, 100000}, func(i int) int { return []int{5, 280}[i/4%2] }},
	} {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			srv := etcdtest.Start(t)
			cfg := testConfig(t)
			stores := []boundedStore{
				newBoundedStore(t, srv.ClientURL(), cfg, c.a[0], c.a[1], c.a[2]),
				newBoundedStore(t, srv.ClientURL(), cfg, c.b[0], c.b[1], c.b[2]),
			}
			var posted []string
			for i := range 40 {
				s := stores[i%2]
				message := fmt.Sprintf("%02d", i)
				message += strings.Repeat(".", max(0, min(c.messageLen(i), []int{c.a[1], c.b[1]}[i%2])-len(message)))
				posted = append(posted, message)
				got, err := s.store.Post(t.Context(), notestest.Note(1, 1, message))
				if err != nil {
					t.Fatalf("post %d: %v", i, err)
				}
				if want := s.bounds.Keep(posted); !slices.Equal(notestest.Messages(got), want) {
					t.Fatalf("post %d through store %c answered %d notes, want the %d that one server with its bounds keeps:\n got %q\nwant %q",
						i, 'A'+i%2, len(got), len(want), short(notestest.Messages(got)), short(want))
				}
			}
		})
	}
}

// short writes messages without their padding.
func short(messages []string) []string {
	out := make([]string, len(messages))
	for i, m := range messages {
		out[i] = strings.TrimRight(m, ".")
	}
	return out
}

// TestEtcdANarrowStorePrunesToItsBoundsOnceTheWiderOnesLeaseIsGone checks
// the other side: the wider bounds count only while a store declares
// them. Once its lease is gone (expired, as for a node stopped a max-age
// ago; revoked here), a post through the narrower store prunes to its own.
func TestEtcdANarrowStorePrunesToItsBoundsOnceTheWiderOnesLeaseIsGone(t *testing.T) {
	srv := etcdtest.Start(t)
	cfg := testConfig(t)
	wide := newBoundedStore(t, srv.ClientURL(), cfg, 8, 100, 1<<20)
	narrow := newBoundedStore(t, srv.ClientURL(), cfg, 2, 100, 1<<20)
	cli := newClient(t, srv.ClientURL())
	if _, err := wide.store.Post(t.Context(), notestest.Note(1, 1, "wide")); err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		if _, err := narrow.store.Post(t.Context(), notestest.Note(1, 1, fmt.Sprintf("narrow %d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if n := countAt(t, cli, narrow.store, 1, 1); n != 7 {
		t.Fatalf("etcd holds %d notes while a store keeping 8 declares its bounds, want all 7", n)
	}
	lease := clientv3.LeaseID(keysAt(t, cli, wide.store, 1, 1)[0].Lease)
	if _, err := cli.Revoke(t.Context(), lease); err != nil {
		t.Fatal(err)
	}
	// The second post's put carries the prune of the first's answer.
	for _, m := range []string{"narrow last but one", "narrow last"} {
		if _, err := narrow.store.Post(t.Context(), notestest.Note(1, 1, m)); err != nil {
			t.Fatal(err)
		}
	}
	if n := countAt(t, cli, narrow.store, 1, 1); n != 3 {
		t.Errorf("etcd holds %d notes once the wider store's lease is gone, want the narrow store's 2 and one to prune", n)
	}
}

// onPrune is an etcd client interceptor that calls hook, once armed,
// before the first transaction that deletes a range, in a transaction
// nested in it: a put that carries a prune of sequenced notes.
func onPrune(armed *atomic.Bool, hook func()) grpc.UnaryClientInterceptor {
	var deletesRange func(ops []*etcdserverpb.RequestOp) bool
	deletesRange = func(ops []*etcdserverpb.RequestOp) bool {
		return slices.ContainsFunc(ops, func(op *etcdserverpb.RequestOp) bool {
			return len(op.GetRequestDeleteRange().GetRangeEnd()) > 0 || deletesRange(op.GetRequestTxn().GetSuccess())
		})
	}
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if txn, ok := req.(*etcdserverpb.TxnRequest); ok && deletesRange(txn.Success) && armed.CompareAndSwap(true, false) {
			hook()
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

// TestEtcdAPruneDecidedBeforeWiderBoundsWereDeclaredDeletesNothing is the
// race: a narrow store decides its prune from an answer, and a store with
// wider bounds declares them and answers before the prune reaches etcd.
// The prune must not delete what that answer held.
func TestEtcdAPruneDecidedBeforeWiderBoundsWereDeclaredDeletesNothing(t *testing.T) {
	srv := etcdtest.Start(t)
	cfg := testConfig(t)
	cfg.Limits.PerLocation = 2
	var armed atomic.Bool
	var wideAnswer []string
	var wide *etcdnotes.Store
	narrowCli := etcdtest.Client(t, srv.ClientURL(), grpc.WithChainUnaryInterceptor(onPrune(&armed, func() {
		got, err := wide.Post(context.Background(), notestest.Note(1, 1, "wide"))
		if err != nil {
			t.Errorf("post through the wide store: %v", err)
		}
		wideAnswer = notestest.Messages(got)
	})))
	narrow := newEtcd(t, narrowCli, cfg)
	wideCfg := cfg
	wideCfg.Limits.PerLocation = 8
	wide = newEtcd(t, newClient(t, srv.ClientURL()), wideCfg)

	for _, m := range []string{"n0", "n1"} {
		if _, err := narrow.Post(t.Context(), notestest.Note(1, 1, m)); err != nil {
			t.Fatal(err)
		}
	}
	armed.Store(true)
	// The answer [n1 n2] leaves n0 out; before the next put carries its
	// prune, the wide store answers [n0 n1 n2 wide].
	for _, m := range []string{"n2", "n3"} {
		if _, err := narrow.Post(t.Context(), notestest.Note(1, 1, m)); err != nil {
			t.Fatal(err)
		}
	}
	if want := []string{"n0", "n1", "n2", "wide"}; !slices.Equal(wideAnswer, want) {
		t.Fatalf("the wide store answered %q, want %q", wideAnswer, want)
	}
	got, err := wide.Post(t.Context(), notestest.Note(1, 1, "wide again"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"n0", "n1", "n2", "wide", "n3", "wide again"}; !slices.Equal(notestest.Messages(got), want) {
		t.Errorf("after the narrow store's prune the wide store answers %q, want %q", notestest.Messages(got), want)
	}
	if s := narrow.Stats(); s.PrunesRefused != 1 {
		t.Errorf("stats %+v, want the narrow store's prune refused and counted", s)
	}
}

// putLegacy stores message at the location as a node of the previous
// release does: its protobuf under a key of its own, outside the sequenced
// range.
func putLegacy(t *testing.T, cli *clientv3.Client, store *etcdnotes.Store, lat, lon int32, message string) {
	t.Helper()
	value, err := proto.Marshal(notestest.Note(lat, lon, message))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(t.Context(), store.LocationPrefix(lat, lon)+fmt.Sprintf("%032x", rand.Uint64()), string(value)); err != nil {
		t.Fatal(err)
	}
}

func TestEtcdARetryIsAnsweredWithoutTheNotesOfEarlierReleasesPostedAfterIt(t *testing.T) {
	cli := newClient(t, etcdtest.Start(t).ClientURL())
	store := newEtcd(t, cli, testConfig(t))
	putLegacy(t, cli, store, 1, 1, "older")
	ctx := notes.WithNoteID(t.Context(), "client-1.0")
	first, err := store.Post(ctx, notestest.Note(1, 1, "mine"))
	if err != nil {
		t.Fatal(err)
	}
	putLegacy(t, cli, store, 1, 1, "newer")
	got, err := store.Post(ctx, notestest.Note(1, 1, "mine"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"older", "mine"}; !slices.Equal(notestest.Messages(first), want) || !slices.Equal(notestest.Messages(got), want) {
		t.Errorf("the post answered %q and its retry %q, want %q both times", notestest.Messages(first), notestest.Messages(got), want)
	}
}

// TestEtcdAPruneAfterAnAnswerOfNoSequencedNoteDeletesNoSequencedNote builds
// an answer that takes no sequenced note and is full: the retry of a note
// already pruned, answered with the older notes of an earlier release that
// prunes failed to delete. Nothing marks where to prune the sequenced notes
// from, and none may go.
func TestEtcdAPruneAfterAnAnswerOfNoSequencedNoteDeletesNoSequencedNote(t *testing.T) {
	srv := etcdtest.Start(t)
	var failed atomic.Int64
	// Deletes of single keys are the prunes of an earlier release's notes.
	failLegacyDeletes := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if txn, ok := req.(*etcdserverpb.TxnRequest); ok && len(txn.Success) > 0 && !slices.ContainsFunc(txn.Success, func(op *etcdserverpb.RequestOp) bool {
			d := op.GetRequestDeleteRange()
			return d == nil || len(d.RangeEnd) > 0
		}) {
			failed.Add(1)
			return errors.New("connection cut before the prune")
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	cli := etcdtest.Client(t, srv.ClientURL(), grpc.WithChainUnaryInterceptor(failLegacyDeletes))
	cfg := testConfig(t)
	cfg.Limits.PerLocation = 2
	store := newEtcd(t, cli, cfg)
	if _, err := store.Post(t.Context(), notestest.Note(1, 1, "elsewhere")); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"old 1", "old 2", "old 3"} {
		putLegacy(t, cli, store, 5, 5, m)
	}
	ctx := notes.WithNoteID(t.Context(), "client-1.0")
	for _, post := range []struct {
		ctx     context.Context
		message string
	}{{ctx, "retried"}, {t.Context(), "newer 1"}, {t.Context(), "newer 2"}, {t.Context(), "newer 3"}} {
		if _, err := store.Post(post.ctx, notestest.Note(5, 5, post.message)); err != nil {
			t.Fatal(err)
		}
	}
	// "newer 3" pruned "retried", which "newer 2" left out; the old notes
	// stay, as their prunes failed.
	got, err := store.Post(ctx, notestest.Note(5, 5, "retried"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"old 2", "old 3"}; !slices.Equal(notestest.Messages(got), want) {
		t.Fatalf("the retry of a pruned note answered %q, want the older notes still there, %q", notestest.Messages(got), want)
	}
	if failed.Load() == 0 {
		t.Fatal("no prune of the old notes failed: the test built nothing")
	}
	for _, at := range []struct {
		lat, lon int32
		want     int
	}{{1, 1, 1}, {5, 5, 6}} {
		if n := countAt(t, cli, store, at.lat, at.lon); n != at.want {
			t.Errorf("etcd holds %d notes at %d,%d after the prune, want %d", n, at.lat, at.lon, at.want)
		}
	}
}
