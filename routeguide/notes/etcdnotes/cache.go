package etcdnotes

import (
	"container/list"
	"sync"

	"go.etcd.io/etcd/api/v3/mvccpb"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/routeguide/notes"
)

// cache keeps the notes a store read, by key and the revision that last
// wrote it, which together name one value for good: a post then reads
// from etcd the keys of its answer (etcd's index alone) and only the values
// it has not seen, usually its own. The least recently used go first once
// the cache holds more than its bytes; with none, nothing is kept.
type cache struct {
	limit int64

	mu      sync.Mutex
	bytes   int64
	entries map[cacheKey]*list.Element
	order   list.List // of *cachedNote, most recently used first
}

type cacheKey struct {
	key string
	mod int64
}

// cachedNote is a value as an answer takes it: the note, or nil when the
// value is not a note of its location; and what it costs in an answer.
type cachedNote struct {
	id   cacheKey
	note *pb.RouteNote
	cost int
}

func newCache(limit int64) *cache {
	return &cache{limit: limit, entries: make(map[cacheKey]*list.Element)}
}

func (c *cache) get(kv *mvccpb.KeyValue) *cachedNote {
	c.mu.Lock()
	defer c.mu.Unlock()
	el := c.entries[cacheKey{string(kv.Key), kv.ModRevision}]
	if el == nil {
		return nil
	}
	c.order.MoveToFront(el)
	return el.Value.(*cachedNote)
}

// put decodes kv's value as a note at (lat, lon), keeps it, and returns it.
func (c *cache) put(kv *mvccpb.KeyValue, lat, lon int32) *cachedNote {
	v := &cachedNote{id: cacheKey{string(kv.Key), kv.ModRevision}, cost: len(kv.Value)}
	if n, ok := decodeNote(kv.Value, lat, lon); ok {
		v.note, v.cost = n, max(notes.Cost(n.Message), len(kv.Value))
	}
	size := int64(v.cost + len(v.id.key))
	if size > c.limit {
		return v
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el := c.entries[v.id]; el != nil {
		return el.Value.(*cachedNote)
	}
	c.entries[v.id] = c.order.PushFront(v)
	c.bytes += size
	for c.bytes > c.limit {
		oldest := c.order.Back()
		o := c.order.Remove(oldest).(*cachedNote)
		delete(c.entries, o.id)
		c.bytes -= int64(o.cost + len(o.id.key))
	}
	return v
}
