package discovery

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/client/v3/naming/endpoints"

	"github.com/routeguide-cluster/routeguide/internal/testutils/etcdtest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/poll"
)

// keyWarnings is a slog handler that keeps the keys named by warnings.
type keyWarnings struct {
	mu   sync.Mutex
	keys []string
}

func (w *keyWarnings) Enabled(context.Context, slog.Level) bool { return true }
func (w *keyWarnings) WithAttrs([]slog.Attr) slog.Handler       { return w }
func (w *keyWarnings) WithGroup(string) slog.Handler            { return w }

func (w *keyWarnings) Handle(_ context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if keys, ok := a.Value.Any().([]string); ok && a.Key == "keys" {
			w.mu.Lock()
			w.keys = append(w.keys, keys...)
			w.mu.Unlock()
		}
		return true
	})
	return nil
}

func (w *keyWarnings) named() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Sorted(slices.Values(w.keys))
}

// TestResolverSkipsAndCountsUnleasedEntries: nodes always register under a
// lease, so an entry without one is not resolved, whether listed or watched,
// and a node whose key is written again without its lease is dropped. Each
// skip is counted; each key is named in one warning, however often it is
// written.
func TestResolverSkipsAndCountsUnleasedEntries(t *testing.T) {
	ctx := testContext(t)
	cli := newClient(t, etcdtest.Start(t).ClientURL())
	lease := withLease(t, ctx, cli)
	em, err := endpoints.NewManager(cli, "routeguide")
	if err != nil {
		t.Fatal(err)
	}
	if err := em.AddEndpoint(ctx, "routeguide/n1", endpoints.Endpoint{Addr: "10.0.0.1:50051"}, lease); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "routeguide/by-hand-1", `{"Op":0,"Addr":"10.0.0.8:50051"}`); err != nil {
		t.Fatal(err)
	}
	events, warnings := &counters{}, &keyWarnings{}
	rec := buildResolver(t, NewBuilder(cli, WithEvents(events), WithLogger(slog.New(warnings))), "etcd:///routeguide")
	poll.Until(t, 5*time.Second, "n1 alone resolved", addrsAre(rec, "10.0.0.1:50051"))

	for range 3 {
		if _, err := cli.Put(ctx, "routeguide/by-hand-2", `{"Op":0,"Addr":"10.0.0.9:50051"}`); err != nil {
			t.Fatal(err)
		}
	}
	if err := em.AddEndpoint(ctx, "routeguide/n2", endpoints.Endpoint{Addr: "10.0.0.2:50051"}, lease); err != nil {
		t.Fatal(err)
	}
	// n1's key, written again without its lease, would outlive n1.
	if _, err := cli.Put(ctx, "routeguide/n1", `{"Op":0,"Addr":"10.0.0.1:50051"}`); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, "n2 alone resolved", addrsAre(rec, "10.0.0.2:50051"))

	if got, want := events.get(&events.unleased), 1+3+1; got != want {
		t.Errorf("unleased entries counted: %d, want %d", got, want)
	}
	if got := events.get(&events.malformed); got != 0 {
		t.Errorf("malformed values counted: %d, want 0", got)
	}
	if got, want := warnings.named(), []string{"routeguide/by-hand-1", "routeguide/by-hand-2", "routeguide/n1"}; !slices.Equal(got, want) {
		t.Errorf("warnings named %v, want each unleased key once: %v", got, want)
	}
}

// TestUnleasedEntriesAreTakenWhenTold: with WithUnleasedEntries, entries an
// operator writes by hand are resolved and /sd lists them; without it
// neither does. The View follows the same rule as the resolver.
func TestUnleasedEntriesAreTakenWhenTold(t *testing.T) {
	ctx := testContext(t)
	cli := newClient(t, etcdtest.Start(t).ClientURL())
	if _, err := cli.Put(ctx, "routeguide/static-1", `{"Op":0,"Addr":"10.0.0.1:50051"}`); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "routeguide/node", `{"Op":0,"Addr":"10.0.0.3:50051"}`, withLease(t, ctx, cli)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		opts []Option
		want []string
	}{
		{"default", nil, []string{"10.0.0.3:50051"}},
		{"WithUnleasedEntries", []Option{WithUnleasedEntries()}, []string{"10.0.0.3:50051", "10.0.0.1:50051", "10.0.0.2:50051"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			events := &counters{}
			opts := append(tc.opts, WithEvents(events))
			rec := buildResolver(t, NewBuilder(cli, opts...), "etcd:///routeguide")
			view := WatchService(cli, "routeguide", opts...)
			t.Cleanup(view.Close)
			// Written after the listing, it comes through the watch.
			poll.Until(t, 5*time.Second, "the resolver's first state", func() bool { return rec.updates() > 0 })
			poll.Until(t, 5*time.Second, "the view's first listing", func() bool { return len(view.Endpoints()) > 0 })
			if _, err := cli.Put(ctx, "routeguide/static-2", `{"Op":0,"Addr":"10.0.0.2:50051"}`); err != nil {
				t.Fatal(err)
			}
			if _, err := cli.Put(ctx, "routeguide/zz-last", `{"Op":0,"Addr":"10.0.0.4:50051"}`, withLease(t, ctx, cli)); err != nil {
				t.Fatal(err)
			}
			want := append(tc.want, "10.0.0.4:50051")
			poll.Until(t, 5*time.Second, "resolver state", func() bool {
				got, _ := rec.last()
				slices.Sort(got)
				return slices.Equal(got, slices.Sorted(slices.Values(want)))
			})
			poll.Until(t, 5*time.Second, "view", func() bool {
				var got []string
				for _, ep := range view.Endpoints() {
					got = append(got, ep.Addr)
				}
				slices.Sort(got)
				return slices.Equal(got, slices.Sorted(slices.Values(want)))
			})
			skipped := 0
			if len(tc.opts) == 0 {
				skipped = 2 * 2 // two entries, seen by the resolver and the view
			}
			if got := events.get(&events.unleased); got != skipped {
				t.Errorf("unleased entries counted: %d, want %d", got, skipped)
			}
		})
	}
}
