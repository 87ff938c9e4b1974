package etcdnotes

import (
	"context"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/routeguide-cluster/routeguide/routeguide/notes"
)

// Nodes may run with different limits. Each store declares its own under
// <Prefix>bounds/<PerLocation>,<MessageBytes>,<AnswerBytes>,<lease TTL>,
// put again on each lease it grants, so that the declaration outlives every
// note a store with those bounds posted (stores that share it share the
// TTL, and the last put is on the newest lease). An answer is read within
// the widest bounds declared at its revision and then cut to the store's
// own: a store prunes only what no declared bounds could answer with
// (docs/DESIGN.md, "RouteChat in etcd"). The bounds are in the key, so that
// a post reads them from etcd's index, a few keys.
const boundsDir = "bounds/"

func (e *Store) boundsPrefix() string { return e.cfg.Prefix + boundsDir }

// declare puts the store's bounds on lease, which it just granted with ttl.
func (e *Store) declare(ctx context.Context, lease clientv3.LeaseID, ttl int64) error {
	l := e.cfg.Limits
	key := fmt.Sprintf("%s%d,%d,%d,%d", e.boundsPrefix(), l.PerLocation, l.MessageBytes, l.AnswerBytes, ttl)
	if _, err := e.cli.Put(ctx, key, "", clientv3.WithLease(lease)); err != nil {
		return fmt.Errorf("declare the store's bounds under %s: %w", key, err)
	}
	e.budget.wrote(len(key))
	return nil
}

// widest is own widened to every bound that the keys kvs declare. A key
// that does not parse, or declares a bound below 1, widens nothing.
func (e *Store) widest(own notes.Limits, kvs []*mvccpb.KeyValue) notes.Limits {
	for _, kv := range kvs {
		var d notes.Limits
		var ttl int64
		name := strings.TrimPrefix(string(kv.Key), e.boundsPrefix())
		if n, err := fmt.Sscanf(name, "%d,%d,%d,%d", &d.PerLocation, &d.MessageBytes, &d.AnswerBytes, &ttl); err != nil || n != 4 ||
			d.PerLocation < 1 || d.MessageBytes < 1 || d.AnswerBytes < 1 {
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
	return clientv3.Compare(clientv3.ModRevision(e.boundsPrefix()).WithPrefix(), "<", rev+1)
}
