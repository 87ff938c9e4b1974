package etcdnotes_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/routeguide-cluster/routeguide/internal/testutils/etcdtest"
	"github.com/routeguide-cluster/routeguide/routeguide/notes/etcdnotes"
	"github.com/routeguide-cluster/routeguide/routeguide/notes/notestest"
)

// TestEtcdEveryRangeOfAPostEndsAtTheLocationsFloor guards what etcd walks
// for a post: its index over the whole range of every Range and
// DeleteRange, whatever the limit, deleted keys included until etcd
// compacts. Once a location has been pruned, no read and no prune there
// may reach the end of its notes, where every note it ever pruned lies.
func TestEtcdEveryRangeOfAPostEndsAtTheLocationsFloor(t *testing.T) {
	srv := etcdtest.Start(t)
	cfg := testConfig(t)
	cfg.Limits.PerLocation = 5
	store := newEtcd(t, newClient(t, srv.ClientURL()), cfg)
	end := store.LocationPrefix(4, 4) + "\x7f"
	var checking atomic.Bool
	var toEnd atomic.Int64
	var mu sync.Mutex
	var seen []string
	check := func(op *etcdserverpb.RequestOp) {
		var rangeEnd []byte
		switch {
		case op.GetRequestRange() != nil:
			rangeEnd = op.GetRequestRange().RangeEnd
		case op.GetRequestDeleteRange() != nil:
			rangeEnd = op.GetRequestDeleteRange().RangeEnd
		default:
			return
		}
		if checking.Load() && string(rangeEnd) == end {
			toEnd.Add(1)
			mu.Lock()
			seen = append(seen, op.String())
			mu.Unlock()
		}
	}
	store = newEtcd(t, opsClient(t, srv.ClientURL(), check), cfg)
	post := func(i int) {
		if _, err := store.Post(t.Context(), notestest.Note(4, 4, fmt.Sprint("note ", i))); err != nil {
			t.Fatal(err)
		}
	}
	// The first prune has no floor to stop at.
	for i := range cfg.Limits.PerLocation + 2 {
		post(i)
	}
	checking.Store(true)
	for i := range 30 {
		post(100 + i)
	}
	var wg sync.WaitGroup
	for p := range 8 {
		wg.Go(func() {
			for i := range 5 {
				post(1000*p + i)
			}
		})
	}
	wg.Wait()
	if n := toEnd.Load(); n != 0 {
		t.Errorf("%d operations of 70 posts at a pruned location reached the end of its notes, want none: %s", n, strings.Join(seen[:min(3, len(seen))], "; "))
	}
	// An answer, and the notes of the two last batches of the 8 posters:
	// the last one's prune waits for the next put, and the one before it
	// may have started while the answers that asked for its prune were read.
	if n := countAt(t, newClient(t, srv.ClientURL()), store, 4, 4); n > cfg.Limits.PerLocation+2*8 {
		t.Errorf("etcd keeps %d notes at the location, want an answer's %d and two batches at most", n, cfg.Limits.PerLocation)
	}
}

// TestEtcdThePostsOfABatchReadAndPruneOnce guards the requests of a busy
// location: the posts of one batch read the same answer, in one read of
// its first page, and leave out the same notes, which the next batch
// deletes in its own transaction. Each sending its own prune took one more
// raft entry per post, and each reading its own page one more request.
func TestEtcdThePostsOfABatchReadAndPruneOnce(t *testing.T) {
	const posters, each = 32, 10
	srv := etcdtest.Start(t)
	cfg := testConfig(t)
	cfg.Limits.PerLocation = 20
	var batches, reads, prunes atomic.Int64
	store := newEtcd(t, opsClient(t, srv.ClientURL(), func(op *etcdserverpb.RequestOp) {
		txn := op.GetRequestTxn()
		switch {
		case txn == nil:
		case slices.ContainsFunc(txn.Success, func(op *etcdserverpb.RequestOp) bool {
			return op.GetRequestPut() != nil && strings.Contains(string(op.GetRequestPut().Key), "/~")
		}):
			batches.Add(1)
		case len(txn.Compare) == 0 && !slices.ContainsFunc(txn.Success, func(op *etcdserverpb.RequestOp) bool { return op.GetRequestRange() == nil }):
			reads.Add(1)
		}
		if op.GetRequestDeleteRange() != nil {
			prunes.Add(1)
		}
	}), cfg)
	for i := range cfg.Limits.PerLocation {
		if _, err := store.Post(t.Context(), notestest.Note(6, 6, fmt.Sprint("before ", i))); err != nil {
			t.Fatal(err)
		}
	}
	batches.Store(0)
	reads.Store(0)
	prunes.Store(0)
	var wg sync.WaitGroup
	for p := range posters {
		wg.Go(func() {
			for i := range each {
				if _, err := store.Post(t.Context(), notestest.Note(6, 6, fmt.Sprintf("poster %d no %d", p, i))); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	// A value not in the cache costs a read too: a few, as the notes of
	// the location were all put through this store.
	if b, r, p := batches.Load(), reads.Load(), prunes.Load(); p > b || r > b+4 {
		t.Errorf("%d posts in %d batches sent %d prunes and %d reads, want one of each per batch at most", posters*each, b, p, r)
	} else {
		t.Logf("%d posts in %d batches sent %d prunes and %d reads", posters*each, b, p, r)
	}
	if s := store.Stats(); s.PruneFailures != 0 {
		t.Errorf("stats %+v, want no prune failure", s)
	}
}

// TestEtcdANoteIsAnsweredWhenOnlyTheFloorIsLeft guards the numbering once
// every note of a location is gone (expired, or deleted by hand) while its
// floor is still kept: a new note must be above the floor, or its answer,
// which ends there, would not hold it. A store that knows nothing of the
// location numbers from the floor; one that posted there before the floor
// was set, and remembers a lower number, finds the floor under its note and
// drops it.
func TestEtcdANoteIsAnsweredWhenOnlyTheFloorIsLeft(t *testing.T) {
	for _, remembers := range []bool{false, true} {
		t.Run(fmt.Sprint("remembers a number=", remembers), func(t *testing.T) {
			srv := etcdtest.Start(t)
			cli := newClient(t, srv.ClientURL())
			cfg := testConfig(t)
			cfg.Limits.PerLocation = 3
			store, other := newEtcd(t, cli, cfg), newEtcd(t, cli, cfg)
			if remembers {
				if _, err := other.Post(t.Context(), notestest.Note(2, 2, "early")); err != nil {
					t.Fatal(err)
				}
			}
			for i := range 6 {
				if _, err := store.Post(t.Context(), notestest.Note(2, 2, fmt.Sprint("note ", i))); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := cli.Delete(t.Context(), store.LocationPrefix(2, 2), clientv3.WithPrefix()); err != nil {
				t.Fatal(err)
			}
			floors, err := cli.Get(t.Context(), cfg.Prefix+"floors/", clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err != nil || floors.Count != 1 {
				t.Fatalf("%v floors kept (%v), want the location's", floors.Count, err)
			}
			for _, message := range []string{"after", "and after"} {
				got, err := other.Post(t.Context(), notestest.Note(2, 2, message))
				if err != nil {
					t.Fatal(err)
				}
				if msgs := notestest.Messages(got); msgs[len(msgs)-1] != message {
					t.Errorf("answer %q, want it to end with the new note %q", msgs, message)
				}
			}
		})
	}
}

// TestEtcdAPostAtAFullLocationTakesTwoRequests guards the round trips of a
// post where notes come one at a time: its put (with the prune its
// predecessor asked for), and the first page of its answer, which holds
// the note that no longer fits. The location's newest number is not read
// again once known, and no page is read for that one note.
func TestEtcdAPostAtAFullLocationTakesTwoRequests(t *testing.T) {
	srv := etcdtest.Start(t)
	cfg := testConfig(t)
	cfg.Limits.MessageBytes, cfg.Limits.AnswerBytes = 1000, 10000
	var mu sync.Mutex
	var sent []string
	record := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if strings.HasPrefix(method, "/etcdserverpb.KV/") {
			mu.Lock()
			sent = append(sent, strings.TrimPrefix(method, "/etcdserverpb.KV/"))
			mu.Unlock()
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	store := newEtcd(t, etcdtest.Client(t, srv.ClientURL(), grpc.WithChainUnaryInterceptor(record)), cfg)
	full := strings.Repeat("x", cfg.Limits.MessageBytes)
	const posts = 10
	for i := range 2 * posts {
		if i == posts {
			// The location is full, and pruned.
			mu.Lock()
			sent = nil
			mu.Unlock()
		}
		if _, err := store.Post(t.Context(), notestest.Note(8, 8, full)); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sent) != 2*posts {
		t.Errorf("%d posts at a full location sent %d requests, want two each: %v", posts, len(sent), sent)
	}
}

// A floor comes from etcd, where anyone with write access may put one: a
// floor that is no note key of its location bounds no range, and is
// deleted and counted.
func TestEtcdAFloorThatIsNoNoteOfItsLocationReachesNoOtherLocation(t *testing.T) {
	for _, c := range []struct {
		name  string
		floor func(store *etcdnotes.Store) string
	}{
		{"another location's key", func(store *etcdnotes.Store) string { return store.LocationPrefix(2, 2) + "\x7f" }},
		{"past every key", func(*etcdnotes.Store) string { return "\xff" }},
		{"a number about to wrap", func(store *etcdnotes.Store) string {
			return store.LocationPrefix(1, 1) + "~0000000000000000"
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cli := newClient(t, etcdtest.Start(t).ClientURL())
			cfg := testConfig(t)
			cfg.Limits.PerLocation = 2
			store := newEtcd(t, cli, cfg)
			for i := range 2 {
				if _, err := store.Post(t.Context(), notestest.Note(2, 2, fmt.Sprint("acknowledged ", i))); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := cli.Put(t.Context(), cfg.Prefix+"floors/1,1/", c.floor(store)); err != nil {
				t.Fatal(err)
			}
			for _, m := range []string{"one", "two", "three"} {
				if _, err := store.Post(t.Context(), notestest.Note(1, 1, m)); err != nil {
					t.Fatalf("post %q at (1,1) under a hostile floor: %v", m, err)
				}
			}
			got, err := newEtcd(t, cli, cfg).Post(t.Context(), notestest.Note(2, 2, "later"))
			if err != nil {
				t.Fatal(err)
			}
			if want := []string{"acknowledged 1", "later"}; !slices.Equal(notestest.Messages(got), want) {
				t.Errorf("answer at (2,2) %q, want %q: a floor at (1,1) pruned (2,2)", notestest.Messages(got), want)
			}
			if st := store.Stats(); st.BadFloors == 0 {
				t.Errorf("stats %+v, want the hostile floor counted", st)
			}
		})
	}
}
