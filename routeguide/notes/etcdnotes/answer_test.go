package etcdnotes_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"

	"github.com/routeguide-cluster/routeguide/internal/testutils/etcdtest"
	"github.com/routeguide-cluster/routeguide/routeguide/notes/notestest"
)

// TestEtcdAnAnswerIsReadSerializableAtItsRevision guards what an answer's
// reads ask of etcd: a revision names one state whichever member answers,
// so they need no round of raft to confirm the member is current. A member
// that has not applied the revision yet (a follower behind) refuses them,
// as the interceptor does here, and they go again linearizable.
func TestEtcdAnAnswerIsReadSerializableAtItsRevision(t *testing.T) {
	srv := etcdtest.Start(t)
	var behind atomic.Bool
	var serializable, linearizable, refused atomic.Int64
	member := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if txn, ok := req.(*etcdserverpb.TxnRequest); ok && len(txn.Compare) == 0 && len(txn.Success) > 0 {
			if r := txn.Success[0].GetRequestRange(); r != nil && r.Revision > 0 {
				switch {
				case !r.Serializable:
					linearizable.Add(1)
				case behind.Load():
					refused.Add(1)
					return rpctypes.ErrGRPCFutureRev
				default:
					serializable.Add(1)
				}
			}
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	cli := etcdtest.Client(t, srv.ClientURL(), grpc.WithChainUnaryInterceptor(member))
	cfg := testConfig(t)
	cfg.Limits.PerLocation = 4
	store := newEtcd(t, cli, cfg)
	post := func(i int) []string {
		got, err := store.Post(t.Context(), notestest.Note(3, 3, fmt.Sprint(i)))
		if err != nil {
			t.Fatal(err)
		}
		return notestest.Messages(got)
	}
	for i := range 6 {
		post(i)
	}
	if s, l := serializable.Load(), linearizable.Load(); s < 6 || l != 0 {
		t.Errorf("answers read %d times serializable and %d linearizable at their revision, want every time serializable", s, l)
	}
	behind.Store(true)
	if got, want := fmt.Sprint(post(6)), fmt.Sprint([]string{"3", "4", "5", "6"}); got != want {
		t.Errorf("answer from a member behind: %s, want %s", got, want)
	}
	if r, l, f := refused.Load(), linearizable.Load(), store.Stats().FutureReads; r == 0 || l != r || f != uint64(r) {
		t.Errorf("a member behind refused %d reads; %d went again linearizable, %d counted; want all of them", r, l, f)
	}
}
