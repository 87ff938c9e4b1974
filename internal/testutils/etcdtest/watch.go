package etcdtest

import (
	"context"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Watch records when each key under a prefix was written and deleted, as a
// watch of its own sees it: when a node registered or left, say.
type Watch struct {
	mu      sync.Mutex
	puts    map[string]time.Time
	deletes map[string]time.Time
}

// StartWatch watches the keys under prefix (discovery.Prefix(service), for
// a registry) in the etcd at url until tb ends. It returns once the watch is
// up, so that it sees everything that happens after.
func StartWatch(tb testing.TB, url, prefix string) *Watch {
	tb.Helper()
	cli := Client(tb, url)
	ctx, cancel := context.WithCancel(context.Background())
	watch := cli.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	done := make(chan struct{})
	tb.Cleanup(func() { cancel(); <-done })
	select {
	case resp := <-watch:
		if !resp.Created {
			tb.Fatalf("watch of %s: %v", prefix, resp.Err())
		}
	case <-time.After(10 * time.Second):
		tb.Fatalf("watch of %s not created within 10s", prefix)
	}
	w := &Watch{puts: map[string]time.Time{}, deletes: map[string]time.Time{}}
	go func() {
		defer close(done)
		for resp := range watch {
			now := time.Now()
			w.mu.Lock()
			for _, ev := range resp.Events {
				switch ev.Type {
				case clientv3.EventTypePut:
					w.puts[string(ev.Kv.Key)] = now
				case clientv3.EventTypeDelete:
					w.deletes[string(ev.Kv.Key)] = now
				}
			}
			w.mu.Unlock()
		}
	}()
	return w
}

// PutAt is when the watch last saw key written; zero if it has not.
func (w *Watch) PutAt(key string) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.puts[key]
}

// DeletedAt is when the watch last saw key deleted; zero if it has not.
func (w *Watch) DeletedAt(key string) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.deletes[key]
}
