package etcdnotes_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/routeguide-cluster/routeguide/internal/testutils/etcdtest"
	"github.com/routeguide-cluster/routeguide/routeguide/notes/etcdnotes"
	"github.com/routeguide-cluster/routeguide/routeguide/notes/notestest"
)

// grantLease is a lease of a minute, for keys a test plants.
func grantLease(t *testing.T, cli *clientv3.Client) clientv3.LeaseID {
	t.Helper()
	resp, err := cli.Grant(t.Context(), 60)
	if err != nil {
		t.Fatal(err)
	}
	return resp.ID
}

// onTxn is an etcd client interceptor that hands every transaction to see.
func onTxn(see func(*etcdserverpb.TxnRequest)) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if txn, ok := req.(*etcdserverpb.TxnRequest); ok {
			see(txn)
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

// TestEtcdABoundsKeyOfNoStoreWidensNothingAndIsCounted plants keys under
// the bounds that no store writes, each of which would otherwise keep every
// note of the location or stop every post: a store prunes to its own bounds
// and counts them.
func TestEtcdABoundsKeyOfNoStoreWidensNothingAndIsCounted(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := newClient(t, srv.ClientURL())
	for i, tt := range []struct {
		name, key string
		leased    bool
	}{
		// 6*MessageBytes+128 wraps to 0: a page size divided by it.
		{"message bytes that overflow a page", "1000,6148914691236517184,1000000,60/%x", true},
		{"junk after the lease", "1000,300,100000,5/%xevil", true},
		{"a sign", "+1000,300,100000,5/%x", true},
		{"spaces", "1000, 300,100000,5/%x", true},
		{"five numbers", "1000,300,100000,5,1/%x", true},
		{"past the caps", "1000000000,1,1000000000000,1/%x", true},
		{"on no lease", "1000,300,100000,5/%x", false},
		{"on another lease than it names", "1000,300,100000,5/1%x", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Limits.PerLocation = 2
			store := newEtcd(t, cli, cfg)
			lease := grantLease(t, cli)
			var opts []clientv3.OpOption
			if tt.leased {
				opts = append(opts, clientv3.WithLease(lease))
			}
			if _, err := cli.Put(t.Context(), cfg.Prefix+"bounds/"+fmt.Sprintf(tt.key, int64(lease)), "", opts...); err != nil {
				t.Fatal(err)
			}
			// Notes of an earlier release make a post size pages by the
			// largest message.
			putLegacy(t, cli, store, 1, int32(i), "legacy 1")
			putLegacy(t, cli, store, 1, int32(i), "legacy 2")
			for j := range 3 {
				got, err := store.Post(t.Context(), notestest.Note(1, int32(i), fmt.Sprint("n", j)))
				if err != nil {
					t.Fatalf("post %d: %v", j, err)
				}
				if len(got) > 2 {
					t.Errorf("post %d answered %q, more than the store's 2", j, notestest.Messages(got))
				}
			}
			// The store's 2, and the one the last answer left out, which
			// the next put there prunes.
			if n := countAt(t, cli, store, 1, int32(i)); n != 3 {
				t.Errorf("etcd holds %d notes at the location, want the store's 2 and one to prune: the key widened its bounds", n)
			}
			if s := store.Stats(); s.BadBounds < 3 {
				t.Errorf("stats %+v, want the key counted by each of 3 posts", s)
			}
		})
	}
}

// TestEtcdAPostUnderAHostileBoundsKeyReadsNoMoreThanItsOwnAnswer fills a
// location with 200 notes of 1000 bytes, then plants a declaration past the
// caps: a post of a store of 5 notes reads about one answer of its own.
func TestEtcdAPostUnderAHostileBoundsKeyReadsNoMoreThanItsOwnAnswer(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := newClient(t, srv.ClientURL())
	wideCfg := testConfig(t)
	wideCfg.Limits.PerLocation, wideCfg.Limits.MessageBytes, wideCfg.Limits.AnswerBytes = 200, 1000, 300_000
	wide := newEtcd(t, cli, wideCfg)
	for i := range 200 {
		if _, err := wide.Post(t.Context(), notestest.Note(1, 1, fmt.Sprintf("%03d%s", i, strings.Repeat("m", 997)))); err != nil {
			t.Fatal(err)
		}
	}
	// The wide store is gone; a key past the caps is left, on a lease.
	if _, err := cli.Delete(t.Context(), wideCfg.Prefix+"bounds/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	lease := grantLease(t, cli)
	if _, err := cli.Put(t.Context(), fmt.Sprintf("%sbounds/1000000000,1,1000000000000,1/%x", wideCfg.Prefix, int64(lease)), "", clientv3.WithLease(lease)); err != nil {
		t.Fatal(err)
	}
	var read atomic.Int64
	cfg := wideCfg
	cfg.Limits.PerLocation, cfg.Limits.AnswerBytes = 5, 6000
	narrow := newEtcd(t, etcdtest.Client(t, srv.ClientURL(), grpc.WithChainUnaryInterceptor(countReplies(&read))), cfg)
	got, err := narrow.Post(t.Context(), notestest.Note(1, 1, "narrow"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 {
		t.Errorf("the post answered %d notes, want its 5", len(got))
	}
	t.Logf("the post read %d bytes from etcd", read.Load())
	if bound := int64(cfg.Limits.AnswerBytes + cfg.Limits.MessageBytes + 2000); read.Load() > bound {
		t.Errorf("the post read %d bytes from etcd, want at most %d", read.Load(), bound)
	}
}

// TestEtcdAPrunesConditionComparesOneKey guards the apply loop: a prune's
// condition is checked inside it, so it must compare one key however many
// stores declare bounds, for a prune of its own and for one that rides
// with a put.
func TestEtcdAPrunesConditionComparesOneKey(t *testing.T) {
	srv := etcdtest.Start(t)
	cfg := testConfig(t)
	var prunes, ranged atomic.Int64
	var compares func(cmps []*etcdserverpb.Compare, ops []*etcdserverpb.RequestOp)
	compares = func(cmps []*etcdserverpb.Compare, ops []*etcdserverpb.RequestOp) {
		for _, c := range cmps {
			if strings.HasPrefix(string(c.Key), cfg.Prefix+"bounds") {
				prunes.Add(1)
				if len(c.RangeEnd) > 0 {
					ranged.Add(1)
				}
			}
		}
		for _, op := range ops {
			if txn := op.GetRequestTxn(); txn != nil {
				compares(txn.Compare, txn.Success)
			}
		}
	}
	cli := etcdtest.Client(t, srv.ClientURL(), grpc.WithChainUnaryInterceptor(onTxn(func(txn *etcdserverpb.TxnRequest) { compares(txn.Compare, txn.Success) })))
	cfg.Limits.PerLocation = 2
	store := newEtcd(t, cli, cfg)
	lease := grantLease(t, cli)
	for i := range 50 {
		if _, err := cli.Put(t.Context(), fmt.Sprintf("%sbounds/2,300,100000,%d/%x", cfg.Prefix, 1+i, int64(lease)), "", clientv3.WithLease(lease)); err != nil {
			t.Fatal(err)
		}
	}
	// Posts in parallel leave their prunes to the next put; one alone
	// prunes on its own.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 5 {
				if _, err := store.Post(t.Context(), notestest.Note(1, 1, fmt.Sprint(i, ".", j))); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if _, err := store.Post(t.Context(), notestest.Note(1, 1, "alone")); err != nil {
		t.Fatal(err)
	}
	if prunes.Load() == 0 || ranged.Load() != 0 {
		t.Errorf("%d prunes compared the bounds, %d of them over a range; want some, none over a range", prunes.Load(), ranged.Load())
	}
}

// TestEtcdPastTheDeclarationsAPostReadsItAnswersWithinItsOwnAndPrunesNothing
// plants more keys under the bounds than a post reads: the widest bounds
// are unknown, so a post answers within its own and deletes nothing.
func TestEtcdPastTheDeclarationsAPostReadsItAnswersWithinItsOwnAndPrunesNothing(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := newClient(t, srv.ClientURL())
	cfg := testConfig(t)
	cfg.Limits.PerLocation = 2
	store := newEtcd(t, cli, cfg)
	const planted = 513
	for first := 0; first < planted; first += 100 {
		var puts []clientv3.Op
		for i := first; i < min(first+100, planted); i++ {
			puts = append(puts, clientv3.OpPut(fmt.Sprintf("%sbounds/x%04d", cfg.Prefix, i), ""))
		}
		if _, err := cli.Txn(t.Context()).Then(puts...).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 4 {
		got, err := store.Post(t.Context(), notestest.Note(1, 1, fmt.Sprint("n", i)))
		if err != nil {
			t.Fatal(err)
		}
		if len(got) > 2 {
			t.Errorf("post %d answered %q, more than the store's 2", i, notestest.Messages(got))
		}
	}
	if n := countAt(t, cli, store, 1, 1); n != 4 {
		t.Errorf("etcd holds %d notes at the location, want all 4: nothing may be pruned", n)
	}
	if s := store.Stats(); s.TooManyBounds != 4 || s.BadBounds != 0 {
		t.Errorf("stats %+v, want 4 posts past the declarations they read, and no key parsed", s)
	}
}

// TestEtcdEachLeaseDeclaresItsOwnBounds: two stores of the same limits
// each declare on their own lease, so one's lease ending leaves the other's
// declaration, which its notes need.
func TestEtcdEachLeaseDeclaresItsOwnBounds(t *testing.T) {
	cli := newClient(t, etcdtest.Start(t).ClientURL())
	cfg := testConfig(t)
	first, second := newEtcd(t, cli, cfg), newEtcd(t, cli, cfg)
	for _, s := range []*etcdnotes.Store{first, second} {
		if _, err := s.Post(t.Context(), notestest.Note(1, 1, "declare")); err != nil {
			t.Fatal(err)
		}
	}
	declared := func() []string {
		resp, err := cli.Get(t.Context(), cfg.Prefix+"bounds/", clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		var leases []string
		for _, kv := range resp.Kvs {
			leases = append(leases, fmt.Sprintf("%x", kv.Lease))
			if !strings.HasSuffix(string(kv.Key), "/"+leases[len(leases)-1]) {
				t.Errorf("declaration %s is on lease %x, which it does not name", kv.Key, kv.Lease)
			}
		}
		return leases
	}
	leases := declared()
	if len(leases) != 2 {
		t.Fatalf("declarations on leases %q, want one on each store's lease", leases)
	}
	var last clientv3.LeaseID
	if _, err := fmt.Sscanf(leases[1], "%x", &last); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Revoke(t.Context(), last); err != nil {
		t.Fatal(err)
	}
	if got := declared(); len(got) != 1 || got[0] != leases[0] {
		t.Errorf("once lease %s ended, declarations on %q, want the other's, %s", leases[1], got, leases[0])
	}
}

// countKeys is an etcd client interceptor that adds the keys of every
// answer from etcd to read.
func countKeys(read *atomic.Int64) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		switch r := reply.(type) {
		case *etcdserverpb.RangeResponse:
			read.Add(int64(len(r.Kvs)))
		case *etcdserverpb.TxnResponse:
			for _, op := range r.Responses {
				read.Add(int64(len(op.GetResponseRange().GetKvs())))
			}
		}
		return err
	}
}

// TestEtcdAPostReadsABoundedNumberOfKeysOfEarlierReleases plants 3000 notes
// of an earlier release at a location, three times what that release kept
// by default: a post reads at most 1000 keys from each range beside the
// sequenced one, and answers.
func TestEtcdAPostReadsABoundedNumberOfKeysOfEarlierReleases(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := newClient(t, srv.ClientURL())
	cfg := testConfig(t)
	cfg.Limits.PerLocation = 5
	location := newEtcd(t, cli, cfg).LocationPrefix(1, 1)
	value, err := proto.Marshal(notestest.Note(1, 1, "legacy"))
	if err != nil {
		t.Fatal(err)
	}
	const planted = 3000
	for first := 0; first < planted; first += 100 {
		var puts []clientv3.Op
		for i := first; i < first+100; i++ {
			puts = append(puts, clientv3.OpPut(fmt.Sprintf("%s%032x", location, i), string(value)))
		}
		if _, err := cli.Txn(t.Context()).Then(puts...).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	var keys atomic.Int64
	store := newEtcd(t, etcdtest.Client(t, srv.ClientURL(), grpc.WithChainUnaryInterceptor(countKeys(&keys))), cfg)
	got, err := store.Post(t.Context(), notestest.Note(1, 1, "new"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 {
		t.Errorf("the post answered %d notes, want 5", len(got))
	}
	// Both ranges, its own note and the values of the answer.
	t.Logf("the post read %d keys from etcd", keys.Load())
	if bound := int64(2000 + 2*cfg.Limits.PerLocation); keys.Load() > bound {
		t.Errorf("the post read %d keys from etcd, want at most %d", keys.Load(), bound)
	}
}
