package etcdnotes

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/routeguide-cluster/routeguide/routeguide/notes"
)

// Each store declares its Limits on each lease it grants, under
// <Prefix>bounds/<PerLocation>,<MessageBytes>,<AnswerBytes>,<TTL>/<lease>: answers
// are read within the widest declared, prunes refused once one is declared after
// their answer (docs/DESIGN.md, "Nodes with different limits").
const boundsDir = "bounds/"

// boundsEpoch is put with every declaration, so that a prune's condition
// compares one key, not every declaration.
const boundsEpoch = "bounds-epoch"

// maxDeclarations bounds the declarations a post reads: a store keeps
// about LeaseBuckets+2 leases alive, so this is some 40 stores. Past it, a
// post answers within its own Limits and prunes nothing.
const maxDeclarations = 512

func (e *Store) boundsPrefix() string { return e.cfg.Prefix + boundsDir }

func (e *Store) epochKey() string { return e.cfg.Prefix + boundsEpoch }

// declare puts the store's bounds on lease, which it just granted with ttl.
func (e *Store) declare(ctx context.Context, lease clientv3.LeaseID, ttl int64) error {
	l := e.cfg.Limits
	key := fmt.Sprintf("%s%d,%d,%d,%d/%x", e.boundsPrefix(), l.PerLocation, l.MessageBytes, l.AnswerBytes, ttl, int64(lease))
	if _, err := e.cli.Txn(ctx).Then(clientv3.OpPut(key, "", clientv3.WithLease(lease)), clientv3.OpPut(e.epochKey(), "")).Commit(); err != nil {
		return fmt.Errorf("declare the store's bounds under %s: %w", key, err)
	}
	e.budget.wrote(len(key) + len(e.epochKey()))
	return nil
}

// declared returns the bounds that kv declares: four numbers as declare
// writes them, which CheckLimits takes, on the lease its key names.
func (e *Store) declared(kv *mvccpb.KeyValue) (notes.Limits, error) {
	numbers, lease, _ := strings.Cut(strings.TrimPrefix(string(kv.Key), e.boundsPrefix()), "/")
	fields := strings.Split(numbers, ",")
	if len(fields) != 4 {
		return notes.Limits{}, fmt.Errorf("%d numbers, want 4", len(fields))
	}
	var n [4]int
	for i, f := range fields {
		v, err := strconv.Atoi(f)
		if err != nil || strconv.Itoa(v) != f {
			return notes.Limits{}, fmt.Errorf("%q is not a number as a store writes it", f)
		}
		n[i] = v
	}
	switch {
	case kv.Lease == 0:
		return notes.Limits{}, fmt.Errorf("no lease")
	case lease != fmt.Sprintf("%x", kv.Lease):
		return notes.Limits{}, fmt.Errorf("the key names lease %q, but it is on lease %x", lease, kv.Lease)
	case n[3] < 1:
		return notes.Limits{}, fmt.Errorf("TTL %d is below 1", n[3])
	}
	d := notes.Limits{PerLocation: n[0], MessageBytes: n[1], AnswerBytes: n[2]}
	return d, CheckLimits(d)
}

// widest is own widened to every bound that the keys kvs declare. A key
// that is no declaration of a store widens nothing, and is counted.
func (e *Store) widest(own notes.Limits, kvs []*mvccpb.KeyValue) notes.Limits {
	for _, kv := range kvs {
		d, err := e.declared(kv)
		if err != nil {
			e.badBounds.Add(1)
			e.logSometimes.Do(func() {
				e.cfg.logger().Warn("skipped a key under the notes' bounds that is no store's declaration", "key", string(kv.Key), "err", err)
			})
			continue
		}
		own.PerLocation = max(own.PerLocation, d.PerLocation)
		own.MessageBytes = max(own.MessageBytes, d.MessageBytes)
		own.AnswerBytes = max(own.AnswerBytes, d.AnswerBytes)
	}
	return own
}

// boundsUnchangedSince is the condition of a prune decided by an answer at
// rev: no declaration was put since, so none is wider than the answer saw.
// One that expired only narrows what may be pruned.
func (e *Store) boundsUnchangedSince(rev int64) clientv3.Cmp {
	return clientv3.Compare(clientv3.ModRevision(e.epochKey()), "<", rev+1)
}
