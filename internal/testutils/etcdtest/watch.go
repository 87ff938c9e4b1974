// Package registrywatch records, for tests, when each key of a service's
// registry in etcd was written and deleted, as a watch of its own sees it.
package registrywatch

import (
	"context"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/routeguide-cluster/routeguide/discovery"
)

// Watch is a running watch of one service's registry.
type Watch struct {
	mu      sync.Mutex
	puts    map[string]time.Time
	deletes map[string]time.Time
}

// Start watches the registry of service in the etcd at etcdURL until tb
// ends. It returns once the watch is up, so that it sees everything that
// happens after.
func Start(tb testing.TB, etcdURL, service string) *Watch {
	tb.Helper()
	cli, err := discovery.NewEtcdClient(discovery.EtcdConfig{Endpoints: []string{etcdURL}})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	watch := cli.Watch(ctx, discovery.Prefix(service), clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	done := make(chan struct{})
	tb.Cleanup(func() { cancel(); <-done; cli.Close() })
	select {
	case resp := <-watch:
		if !resp.Created {
			tb.Fatalf("watch of the registry: %v", resp.Err())
		}
	case <-time.After(10 * time.Second):
		tb.Fatal("watch of the registry not created within 10s")
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
