package etcdnotes_test

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/routeguide-cluster/routeguide/routeguide/notes/notestest"
)

// TestEtcdEveryRangeOfAPostEndsAtTheLocationsFloor guards what etcd walks
// for a post: its index over the whole range of every Range and
// DeleteRange, whatever the limit, deleted keys included until etcd
// compacts. Once a location has been pruned, no read and no prune there
// may reach the end of its notes, where every note it ever pruned lies.
func TestEtcdEveryRangeOfAPostEndsAtTheLocationsFloor(t *testing.T) {
	srv := startEtcd(t)
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
	if n := countAt(t, newClient(t, srv.ClientURL()), store, 4, 4); n != cfg.Limits.PerLocation {
		t.Errorf("etcd keeps %d notes at the location, want %d", n, cfg.Limits.PerLocation)
	}
}

// TestEtcdThePostsOfABatchPruneInOneOperation guards the raft entries of a
// busy location: the posts of one batch read the same answer, and leave
// out the same notes, which the next batch deletes, or the last post to
// leave. Each sending its own prune took one more raft entry per post.
func TestEtcdThePostsOfABatchPruneInOneOperation(t *testing.T) {
	const posters, each = 32, 10
	srv := startEtcd(t)
	cfg := testConfig(t)
	cfg.Limits.PerLocation = 20
	var batches, prunes atomic.Int64
	store := newEtcd(t, opsClient(t, srv.ClientURL(), func(op *etcdserverpb.RequestOp) {
		if txn := op.GetRequestTxn(); txn != nil && slices.ContainsFunc(txn.Success, func(op *etcdserverpb.RequestOp) bool {
			return op.GetRequestPut() != nil && strings.Contains(string(op.GetRequestPut().Key), "/~")
		}) {
			batches.Add(1)
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
	// A batch carries at most one prune, and the last post of a turn sends
	// at most one: a turn had at least one batch.
	if b, p := batches.Load(), prunes.Load(); p > 2*b {
		t.Errorf("%d posts in %d batches sent %d prunes, want two per batch at most", posters*each, b, p)
	} else {
		t.Logf("%d posts in %d batches sent %d prunes", posters*each, b, p)
	}
	if s := store.Stats(); s.PruneFailures != 0 {
		t.Errorf("stats %+v, want no prune failure", s)
	}
}

// TestEtcdANoteIsAnsweredWhenOnlyTheFloorIsLeft guards the numbering once
// every note of a location is gone (expired, or deleted by hand) while its
// floor is still kept: a new note must take a number above the floor, or
// its answer, which ends there, would not hold it.
func TestEtcdANoteIsAnsweredWhenOnlyTheFloorIsLeft(t *testing.T) {
	srv := startEtcd(t)
	cli := newClient(t, srv.ClientURL())
	cfg := testConfig(t)
	cfg.Limits.PerLocation = 3
	store := newEtcd(t, cli, cfg)
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
	// A store of its own knows nothing of the numbers used there.
	got, err := newEtcd(t, cli, cfg).Post(t.Context(), notestest.Note(2, 2, "after"))
	if err != nil {
		t.Fatal(err)
	}
	if msgs := notestest.Messages(got); len(msgs) != 1 || msgs[0] != "after" {
		t.Errorf("answer %q, want the new note alone", msgs)
	}
}
