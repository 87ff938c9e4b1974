package etcdnotes_test

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/routeguide-cluster/routeguide/discovery"
	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/localetcd"
	"github.com/routeguide-cluster/routeguide/internal/testutils/etcdtest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/poll"
	"github.com/routeguide-cluster/routeguide/routeguide/notes"
	"github.com/routeguide-cluster/routeguide/routeguide/notes/etcdnotes"
	"github.com/routeguide-cluster/routeguide/routeguide/notes/notestest"
)

// TestMain fails the package when a test leaves goroutines running: every
// etcd server, client and gRPC server a test starts is stopped by its cleanup.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newClient is an etcd client as a node has one, closed by t's cleanup.
func newClient(t testing.TB, url string) *clientv3.Client {
	t.Helper()
	cli, err := discovery.NewEtcdClient(discovery.EtcdConfig{Endpoints: []string{url}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// testConfig is the default configuration with a prefix of the test's own,
// and no write rate to speak of: the tests of the rate set theirs.
func testConfig(t testing.TB) etcdnotes.Config {
	cfg := etcdnotes.DefaultConfig()
	cfg.Prefix = "notes-test/" + t.Name() + "/"
	cfg.WriteRate = math.MaxInt32
	return cfg
}

func newEtcd(t testing.TB, cli *clientv3.Client, cfg etcdnotes.Config) *etcdnotes.Store {
	t.Helper()
	store, err := etcdnotes.New(cli, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return store
}

// keysAt lists the keys etcd holds at a location, oldest first: by create
// revision, and within one (the notes of one batch) by sequence, which
// counts down in key order.
func keysAt(t testing.TB, cli *clientv3.Client, store *etcdnotes.Store, lat, lon int32) []*mvccpb.KeyValue {
	t.Helper()
	resp, err := cli.Get(t.Context(), store.LocationPrefix(lat, lon), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	slices.SortStableFunc(resp.Kvs, func(a, b *mvccpb.KeyValue) int {
		if a.CreateRevision != b.CreateRevision {
			return cmp.Compare(a.CreateRevision, b.CreateRevision)
		}
		return bytes.Compare(b.Key, a.Key)
	})
	return resp.Kvs
}

func countAt(t testing.TB, cli *clientv3.Client, store *etcdnotes.Store, lat, lon int32) int {
	t.Helper()
	return len(keysAt(t, cli, store, lat, lon))
}

func TestConfigValidateNamesTheField(t *testing.T) {
	tests := []struct {
		field  string
		change func(*etcdnotes.Config)
	}{
		{"Prefix", func(c *etcdnotes.Config) { c.Prefix = "" }},
		{"Prefix", func(c *etcdnotes.Config) { c.Prefix = "notes" }},
		{"PerLocation", func(c *etcdnotes.Config) { c.Limits.PerLocation = 0 }},
		{"MaxAge", func(c *etcdnotes.Config) { c.MaxAge = 999 * time.Millisecond }},
		{"MessageBytes", func(c *etcdnotes.Config) { c.Limits.MessageBytes = 0 }},
		{"MessageBytes", func(c *etcdnotes.Config) { c.Limits.MessageBytes = 1 << 20 }},
		{"AnswerBytes", func(c *etcdnotes.Config) { c.Limits.AnswerBytes = c.Limits.MessageBytes }},
		{"PerLocation", func(c *etcdnotes.Config) { c.Limits.PerLocation = etcdnotes.MaxPerLocation + 1 }},
		{"AnswerBytes", func(c *etcdnotes.Config) { c.Limits.AnswerBytes = etcdnotes.MaxAnswerBytesLimit + 1 }},
		{"Timeout", func(c *etcdnotes.Config) { c.Timeout = 0 }},
		{"Budget", func(c *etcdnotes.Config) { c.Budget = 0 }},
		{"BudgetCheck", func(c *etcdnotes.Config) { c.BudgetCheck = 0 }},
	}
	if err := etcdnotes.DefaultConfig().Validate(); err != nil {
		t.Fatalf("the default config: %v", err)
	}
	for _, tt := range tests {
		cfg := etcdnotes.DefaultConfig()
		tt.change(&cfg)
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tt.field) {
			t.Errorf("config %+v: error %v, want one naming %s", cfg, err, tt.field)
		}
		// New validates before it uses the client.
		if _, err := etcdnotes.New(&clientv3.Client{}, cfg); err == nil {
			t.Errorf("New accepted config %+v", cfg)
		}
	}
}

func TestEtcdPostAnswersTheLocationsNotesInPostingOrder(t *testing.T) {
	cli := newClient(t, etcdtest.Start(t).ClientURL())
	notestest.CheckPostingOrder(t, newEtcd(t, cli, testConfig(t)))
}

func TestEtcdTwoStoresOnOneEtcdAnswerInOnePostingOrder(t *testing.T) {
	srv := etcdtest.Start(t)
	cfg := testConfig(t)
	// Two nodes: each its own client and store.
	stores := []*etcdnotes.Store{newEtcd(t, newClient(t, srv.ClientURL()), cfg), newEtcd(t, newClient(t, srv.ClientURL()), cfg)}
	var want []string
	for i := range 10 {
		msg := fmt.Sprintf("note %d via store %d", i, i%2)
		want = append(want, msg)
		got, err := stores[i%2].Post(t.Context(), notestest.Note(7, 7, msg))
		if err != nil {
			t.Fatalf("post %q: %v", msg, err)
		}
		if !slices.Equal(notestest.Messages(got), want) {
			t.Fatalf("post %q = %q, want %q", msg, notestest.Messages(got), want)
		}
	}
}

// postAtOnce has posters post each notes at (at, at) all at once, through
// the stores in turn, and hands check each poster's answers, in order.
func postAtOnce(t *testing.T, stores []*etcdnotes.Store, posters, each int, at int32, check func(poster int, sent string, got []*pb.RouteNote)) {
	t.Helper()
	var wg sync.WaitGroup
	for p := range posters {
		wg.Go(func() {
			for i := range each {
				sent := fmt.Sprintf("poster %d no %d", p, i)
				got, err := stores[p%len(stores)].Post(t.Context(), notestest.Note(at, at, sent))
				if err != nil {
					t.Errorf("post %q: %v", sent, err)
					return
				}
				check(p, sent, got)
			}
		})
	}
	wg.Wait()
}

func TestEtcdConcurrentPostsOnTwoStoresAreConsistentViewsOfOneOrder(t *testing.T) {
	const posters, each = 8, 20
	srv := etcdtest.Start(t)
	cfg := testConfig(t)
	stores := []*etcdnotes.Store{newEtcd(t, newClient(t, srv.ClientURL()), cfg), newEtcd(t, newClient(t, srv.ClientURL()), cfg)}
	answers := make([][][]string, posters)
	postAtOnce(t, stores, posters, each, 5, func(p int, sent string, got []*pb.RouteNote) {
		if len(got) == 0 || got[len(got)-1].Message != sent {
			t.Errorf("post %q: the answer does not end with it: %q", sent, notestest.Messages(got))
		}
		answers[p] = append(answers[p], notestest.Messages(got))
	})
	last, err := stores[0].Post(t.Context(), notestest.Note(5, 5, "last"))
	if err != nil {
		t.Fatal(err)
	}
	// Each answer is the whole location at its put's revision: a prefix of
	// the final order, whichever node answered it.
	notestest.CheckOnePostingOrder(t, notestest.Messages(last), posters*each+1, answers)
}

func TestEtcdKeepsTheNewestPerLocationNotes(t *testing.T) {
	cli := newClient(t, etcdtest.Start(t).ClientURL())
	cfg := testConfig(t)
	cfg.Limits.PerLocation = 3
	store := newEtcd(t, cli, cfg)
	if _, err := store.Post(t.Context(), notestest.Note(9, 9, "elsewhere")); err != nil {
		t.Fatal(err)
	}
	var posted []string
	for i := range 7 {
		msg := fmt.Sprintf("a%d", i)
		posted = append(posted, msg)
		got, err := store.Post(t.Context(), notestest.Note(1, 1, msg))
		if err != nil {
			t.Fatal(err)
		}
		want := posted[max(0, len(posted)-3):]
		if !slices.Equal(notestest.Messages(got), want) {
			t.Errorf("post %q = %q, want the newest 3: %q", msg, notestest.Messages(got), want)
		}
		// The next post prunes what this one's answer left out.
		if n, keep := countAt(t, cli, store, 1, 1), min(len(posted), len(want)+1); n != keep {
			t.Errorf("after post %q etcd holds %d notes at the location, want %d", msg, n, keep)
		}
	}
	if n := countAt(t, cli, store, 9, 9); n != 1 {
		t.Errorf("another location holds %d notes, want its 1", n)
	}
	if s := store.Stats(); s != (etcdnotes.Stats{}) {
		t.Errorf("stats %+v, want none skipped or failed", s)
	}
}

func TestEtcdConcurrentPruningKeepsTheNewestPerLocation(t *testing.T) {
	const posters, each, keep = 6, 15, 4
	srv := etcdtest.Start(t)
	cfg := testConfig(t)
	cfg.Limits.PerLocation = keep
	cli := newClient(t, srv.ClientURL())
	stores := []*etcdnotes.Store{newEtcd(t, cli, cfg), newEtcd(t, newClient(t, srv.ClientURL()), cfg)}
	postAtOnce(t, stores, posters, each, 3, func(_ int, sent string, got []*pb.RouteNote) {
		if len(got) > keep || len(got) == 0 || got[len(got)-1].Message != sent {
			t.Errorf("post %q = %q, want at most %d notes ending with it", sent, notestest.Messages(got), keep)
		}
	})
	// Two more posts: the second prunes what the first's answer left out,
	// whatever posts pruning concurrently left.
	var last []*pb.RouteNote
	for _, message := range []string{"last but one", "last"} {
		var err error
		if last, err = stores[0].Post(t.Context(), notestest.Note(3, 3, message)); err != nil {
			t.Fatal(err)
		}
	}
	kvs := keysAt(t, cli, stores[0], 3, 3)
	if len(kvs) != keep+1 || len(last) != keep {
		t.Fatalf("etcd holds %d notes and the last answer has %d, want %d and %d", len(kvs), len(last), keep+1, keep)
	}
	for i, kv := range kvs[1:] {
		if !strings.Contains(string(kv.Value), last[i].Message) {
			t.Errorf("etcd keeps %s, the answer says %q", kv.Value, last[i].Message)
		}
	}
	for _, s := range stores {
		if st := s.Stats(); st.PruneFailures != 0 {
			t.Errorf("stats %+v, want no prune failure", st)
		}
	}
}

func TestEtcdNotesExpireBetweenMaxAgeAndOneBucketLater(t *testing.T) {
	cli := newClient(t, etcdtest.Start(t).ClientURL())
	cfg := testConfig(t)
	cfg.MaxAge = 2 * time.Second
	bucket := cfg.MaxAge / etcdnotes.LeaseBuckets
	store := newEtcd(t, cli, cfg)

	// Buckets follow the clock, so two posts may straddle a bucket's end:
	// post pairs at new locations until one pair falls within one bucket.
	var (
		before time.Time
		lat    int32
	)
	poll.Until(t, 10*time.Second, "two posts within one bucket", func() bool {
		lat++
		before = time.Now()
		for _, message := range []string{"first", "second"} {
			if _, err := store.Post(t.Context(), notestest.Note(lat, 1, message)); err != nil {
				t.Fatal(err)
			}
		}
		return before.Truncate(bucket).Equal(time.Now().Truncate(bucket))
	})
	kvs := keysAt(t, cli, store, lat, 1)
	if len(kvs) != 2 || kvs[0].Lease == 0 || kvs[0].Lease != kvs[1].Lease {
		t.Fatalf("notes posted in one bucket have leases %v, want one shared lease", kvs)
	}
	firstLease := clientv3.LeaseID(kvs[0].Lease)
	ttl, err := cli.TimeToLive(t.Context(), firstLease)
	if err != nil {
		t.Fatal(err)
	}
	// MaxAge plus one bucket, rounded up to whole seconds.
	if ttl.GrantedTTL != 3 {
		t.Errorf("lease TTL %ds, want 3", ttl.GrantedTTL)
	}

	// Once the bucket is over, a post takes a new lease.
	poll.Until(t, 5*time.Second, "a post with a new lease", func() bool {
		if _, err := store.Post(t.Context(), notestest.Note(2, 2, "later")); err != nil {
			t.Fatal(err)
		}
		kvs := keysAt(t, cli, store, 2, 2)
		return kvs[len(kvs)-1].Lease != int64(firstLease)
	})
	// Buckets are the clock's, the same for every store.
	if end := before.Truncate(bucket).Add(bucket); time.Now().Before(end) {
		t.Errorf("a new lease at %v, before the bucket ending at %v was over", time.Now(), end)
	}

	poll.Until(t, 10*time.Second, "the first notes to expire", func() bool {
		return countAt(t, cli, store, lat, 1) == 0
	})
	if lived := time.Since(before); lived < cfg.MaxAge {
		t.Errorf("notes expired after %v, before MaxAge %v", lived, cfg.MaxAge)
	}
	got, err := store.Post(t.Context(), notestest.Note(lat, 1, "after"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"after"}; !slices.Equal(notestest.Messages(got), want) {
		t.Errorf("after expiry the answer is %q, want %q", notestest.Messages(got), want)
	}
}

func TestEtcdPostGrantsANewLeaseWhenItsLeaseIsGone(t *testing.T) {
	cli := newClient(t, etcdtest.Start(t).ClientURL())
	store := newEtcd(t, cli, testConfig(t)) // MaxAge 24h: the lease would serve 3h
	if _, err := store.Post(t.Context(), notestest.Note(1, 1, "first")); err != nil {
		t.Fatal(err)
	}
	lease := clientv3.LeaseID(keysAt(t, cli, store, 1, 1)[0].Lease)
	// Revoking deletes the notes on the lease, as expiry would.
	if _, err := cli.Revoke(t.Context(), lease); err != nil {
		t.Fatal(err)
	}
	got, err := store.Post(t.Context(), notestest.Note(1, 1, "second"))
	if err != nil {
		t.Fatalf("post after the lease was revoked: %v", err)
	}
	if want := []string{"second"}; !slices.Equal(notestest.Messages(got), want) {
		t.Errorf("answer %q, want %q", notestest.Messages(got), want)
	}
	kvs := keysAt(t, cli, store, 1, 1)
	if len(kvs) != 1 || kvs[0].Lease == 0 || kvs[0].Lease == int64(lease) {
		t.Errorf("the note after the revoke has lease %x, want a new one (old %x)", kvs[0].Lease, lease)
	}
}

func TestEtcdSkipsAndCountsValuesThatAreNotNotesOfTheLocation(t *testing.T) {
	cli := newClient(t, etcdtest.Start(t).ClientURL())
	store := newEtcd(t, cli, testConfig(t))
	if _, err := store.Post(t.Context(), notestest.Note(1, 1, "before")); err != nil {
		t.Fatal(err)
	}
	location := store.LocationPrefix(1, 1)
	garbage := map[string]string{
		"not json":           "garbage",
		"not a note":         `[1,2,3]`,
		"wrong field type":   `{"message": 5}`,
		"no location":        `{"message": "nowhere"}`,
		"another location":   `{"location": {"latitude": 1, "longitude": 10}, "message": "moved"}`,
		"invalid utf-8":      "{\"location\": {\"latitude\": 1, \"longitude\": 1}, \"message\": \"\xff\"}",
		"empty":              "",
		"truncated protobuf": "\x0a\x04\x08",
	}
	for name, value := range garbage {
		if _, err := cli.Put(t.Context(), location+name, value); err != nil {
			t.Fatal(err)
		}
	}
	// A value with a field this version does not know is still a note.
	if _, err := cli.Put(t.Context(), location+"newer", `{"location": {"latitude": 1, "longitude": 1}, "message": "newer", "mood": "happy"}`); err != nil {
		t.Fatal(err)
	}
	for round := 1; round <= 2; round++ {
		got, err := store.Post(t.Context(), notestest.Note(1, 1, "after"))
		if err != nil {
			t.Fatalf("post with garbage at the location: %v", err)
		}
		want := []string{"before", "newer", "after"}
		if round == 2 {
			want = []string{"before", "newer", "after", "after"}
		}
		if !slices.Equal(notestest.Messages(got), want) {
			t.Errorf("round %d: answer %q, want %q", round, notestest.Messages(got), want)
		}
		// Every read counts what it skipped.
		if s := store.Stats(); s.Skipped != uint64(round*len(garbage)) {
			t.Errorf("round %d: %d values skipped, want %d", round, s.Skipped, round*len(garbage))
		}
	}
}

func TestEtcdRefusesAMessageOverMaxMessageBytes(t *testing.T) {
	cli := newClient(t, etcdtest.Start(t).ClientURL())
	cfg := testConfig(t)
	cfg.Limits.MessageBytes = 8
	store := newEtcd(t, cli, cfg)
	if _, err := store.Post(t.Context(), notestest.Note(1, 1, "12345678")); err != nil {
		t.Fatalf("a message of exactly the limit: %v", err)
	}
	_, err := store.Post(t.Context(), notestest.Note(1, 1, "123456789"))
	if !errors.Is(err, notes.ErrLimit) || !strings.Contains(err.Error(), "at most 8 bytes") {
		t.Fatalf("a message one byte over: %v, want ErrLimit naming 8 bytes", err)
	}
	if n := countAt(t, cli, store, 1, 1); n != 1 {
		t.Errorf("etcd holds %d notes, want 1", n)
	}
}

func TestEtcdStoresNoUnknownFields(t *testing.T) {
	cli := newClient(t, etcdtest.Start(t).ClientURL())
	store := newEtcd(t, cli, testConfig(t))
	sent := notestest.Note(1, 1, "hello")
	sent.ProtoReflect().SetUnknown([]byte{0xca, 0x06, 0x03, 'a', 'b', 'c'}) // field 99, "abc"
	got, err := store.Post(t.Context(), sent)
	if err != nil {
		t.Fatal(err)
	}
	if len(got[0].ProtoReflect().GetUnknown()) != 0 {
		t.Errorf("the answer carries unknown fields %x", got[0].ProtoReflect().GetUnknown())
	}
}

func TestEtcdPostWhileEtcdIsDownFailsUnavailableAndRecovers(t *testing.T) {
	dir := t.TempDir()
	srv, err := localetcd.Start(localetcd.Config{Dir: dir, ClientAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	addr := srv.ClientAddr()
	cli := newClient(t, srv.ClientURL())
	cfg := testConfig(t)
	cfg.Timeout = time.Second
	store := newEtcd(t, cli, cfg)
	if _, err := store.Post(t.Context(), notestest.Note(1, 1, "before")); err != nil {
		t.Fatal(err)
	}

	srv.Close()
	// The caller would wait 10s; the store gives up after its Timeout.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err = store.Post(ctx, notestest.Note(1, 1, "while down"))
	if !errors.Is(err, notes.ErrUnavailable) || errors.Is(err, notes.ErrLimit) {
		t.Errorf("post while etcd is down: %v, want ErrUnavailable", err)
	}
	if took := time.Since(start); took > cfg.Timeout+2*time.Second {
		t.Errorf("post while etcd is down took %v, want about the Timeout %v", took, cfg.Timeout)
	}
	// A caller's deadline shorter than Timeout is the caller's own.
	short, cancelShort := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancelShort()
	start = time.Now()
	_, err = store.Post(short, notestest.Note(1, 1, "while down"))
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, notes.ErrUnavailable) {
		t.Errorf("post with a 200ms deadline while etcd is down: %v, want the caller's DeadlineExceeded", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("post with a 200ms deadline took %v", took)
	}
	cancelled, cancelNow := context.WithCancel(t.Context())
	cancelNow()
	if _, err := store.Post(cancelled, notestest.Note(1, 1, "cancelled")); !errors.Is(err, context.Canceled) {
		t.Errorf("post with a cancelled context: %v, want Canceled", err)
	}

	srv, err = localetcd.Start(localetcd.Config{Dir: dir, ClientAddr: addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	var got []*pb.RouteNote
	poll.Until(t, 20*time.Second, "a post once etcd is back", func() bool {
		got, err = store.Post(t.Context(), notestest.Note(1, 1, "after"))
		return err == nil
	})
	// Nothing posted while etcd was down was stored, nothing before was lost.
	if want := []string{"before", "after"}; !slices.Equal(notestest.Messages(got), want) {
		t.Errorf("after etcd returned: %q, want %q", notestest.Messages(got), want)
	}
}

func BenchmarkEtcdPost(b *testing.B) {
	cli := newClient(b, etcdtest.Start(b).ClientURL())
	cfg := testConfig(b)
	cfg.Limits.PerLocation = 100
	store := newEtcd(b, cli, cfg)
	i := 0
	for b.Loop() {
		if _, err := store.Post(b.Context(), notestest.Note(int32(i%16), 1, "a note of a usual length, some words")); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func TestEtcdANoteRetriedWithItsIDIsStoredOnce(t *testing.T) {
	srv := etcdtest.Start(t)
	cfg := testConfig(t)
	// Two nodes: the retry may reach another one.
	stores := []*etcdnotes.Store{newEtcd(t, newClient(t, srv.ClientURL()), cfg), newEtcd(t, newClient(t, srv.ClientURL()), cfg)}
	ctx := notes.WithNoteID(t.Context(), "client-7.0")
	first, err := stores[0].Post(ctx, notestest.Note(4, 4, "once"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stores[1].Post(t.Context(), notestest.Note(4, 4, "another")); err != nil {
		t.Fatal(err)
	}
	// Retried at once on both nodes, as a client whose answer was lost.
	var wg sync.WaitGroup
	for _, s := range stores {
		wg.Go(func() {
			got, err := s.Post(ctx, notestest.Note(4, 4, "once"))
			if err != nil || !slices.Equal(notestest.Messages(got), notestest.Messages(first)) {
				t.Errorf("the retry answered %q (%v), want the first answer %q", notestest.Messages(got), err, notestest.Messages(first))
			}
		})
	}
	wg.Wait()
	got, err := stores[0].Post(notes.WithNoteID(t.Context(), "client-7.1"), notestest.Note(4, 4, "next"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"once", "another", "next"}; !slices.Equal(notestest.Messages(got), want) {
		t.Errorf("after the retries the location holds %q, want %q", notestest.Messages(got), want)
	}
}
