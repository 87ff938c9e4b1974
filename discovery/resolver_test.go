package discovery

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/naming/endpoints"
	upstream "go.etcd.io/etcd/client/v3/naming/resolver"
	"google.golang.org/grpc/resolver"

	"github.com/routeguide-cluster/routeguide/internal/testutils/etcdtest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/faultproxy"
	"github.com/routeguide-cluster/routeguide/internal/testutils/poll"
)

func buildResolver(t *testing.T, b resolver.Builder, target string) *stateRecorder {
	t.Helper()
	rec := &stateRecorder{}
	r, err := b.Build(parseTarget(t, target), rec, resolver.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return rec
}

func addrsAre(rec *stateRecorder, want ...string) func() bool {
	return func() bool {
		got, ok := rec.last()
		return ok && slices.Equal(got, want)
	}
}

func TestResolverTellsGRPCWhenNoNodeIsRegistered(t *testing.T) {
	cli := newClient(t, etcdtest.Start(t).ClientURL())
	rec := buildResolver(t, NewBuilder(cli), "etcd:///routeguide")
	// The upstream resolver sends nothing at all here, and calls wait for
	// their deadline; an empty state lets gRPC fail them at once.
	poll.Until(t, 5*time.Second, "no empty state handed to gRPC", addrsAre(rec))
}

func TestResolverAndViewFollowAddsAndDeletesWithMetadata(t *testing.T) {
	ctx := testContext(t)
	cli := newClient(t, etcdtest.Start(t).ClientURL())
	rec := buildResolver(t, NewBuilder(cli), "etcd:///routeguide")
	poll.Until(t, 5*time.Second, "no initial state", addrsAre(rec))

	// Written by etcd's own endpoints package, as any tool would.
	em, err := endpoints.NewManager(cli, "routeguide")
	if err != nil {
		t.Fatal(err)
	}
	md := Metadata{NodeID: "n1", MetricsAddr: "10.0.0.1:9090", Version: "v1"}
	lease := withLease(t, ctx, cli)
	if err := em.AddEndpoint(ctx, "routeguide/n1", endpoints.Endpoint{Addr: "10.0.0.1:50051", Metadata: md}, lease); err != nil {
		t.Fatal(err)
	}
	if err := em.AddEndpoint(ctx, "routeguide/n2", endpoints.Endpoint{Addr: "10.0.0.2:50051"}, lease); err != nil {
		t.Fatal(err)
	}
	// Another service's nodes are not ours, even with a name that shares a prefix.
	if err := em.AddEndpoint(ctx, "routeguide/../x", endpoints.Endpoint{Addr: "10.9.9.9:1"}, lease); err == nil {
		t.Log("upstream accepted a dotted key; it is still under our prefix")
	}
	if _, err := cli.Put(ctx, "routeguidex/n9", `{"Op":0,"Addr":"10.0.0.9:50051"}`, lease); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, "n1 and n2 not resolved", func() bool {
		got, _ := rec.last()
		return slices.Contains(got, "10.0.0.1:50051") && slices.Contains(got, "10.0.0.2:50051") && !slices.Contains(got, "10.0.0.9:50051")
	})
	// The metadata reaches readers of the registry through a View (a node's
	// /sd, say); gRPC gets the addresses only.
	view := WatchService(cli, "routeguide")
	defer view.Close()
	byAddr := map[string]Metadata{}
	poll.Until(t, 5*time.Second, "n1 and n2 in the view", func() bool {
		clear(byAddr)
		for _, ep := range view.Endpoints() {
			byAddr[ep.Addr] = ep.Metadata
		}
		_, n1 := byAddr["10.0.0.1:50051"]
		_, n2 := byAddr["10.0.0.2:50051"]
		return n1 && n2
	})
	if byAddr["10.0.0.1:50051"] != md {
		t.Errorf("n1 metadata = %+v, want %+v", byAddr["10.0.0.1:50051"], md)
	}
	if got := byAddr["10.0.0.2:50051"]; got.NodeID != "n2" {
		t.Errorf("n2 registered without metadata: node id %q, want it from the key", got.NodeID)
	}

	if err := em.DeleteEndpoint(ctx, "routeguide/n1"); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, "n1 not removed", func() bool {
		got, _ := rec.last()
		return !slices.Contains(got, "10.0.0.1:50051") && slices.Contains(got, "10.0.0.2:50051")
	})
}

func TestResolverSkipsAndCountsMalformedValues(t *testing.T) {
	ctx := testContext(t)
	cli := newClient(t, etcdtest.Start(t).ClientURL())
	events := &counters{}
	lease := withLease(t, ctx, cli)
	if _, err := cli.Put(ctx, "routeguide/listed-bad", `not json`, lease); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "routeguide/good", `{"Op":0,"Addr":"10.0.0.1:50051"}`, lease); err != nil {
		t.Fatal(err)
	}
	rec := buildResolver(t, NewBuilder(cli, WithEvents(events)), "etcd:///routeguide")
	poll.Until(t, 5*time.Second, "good endpoint not resolved", addrsAre(rec, "10.0.0.1:50051"))

	bad := []string{
		`{"Op":1,"Addr":"10.0.0.2:50051"}`, // a Delete stored as a value
		`{"Op":0,"Addr":""}`,
		`{"Op":0,"Addr":"10.0.0.2"}`,
		`{"Op":0,"Addr":"10.0.0.2:0"}`,
		`{"Op":0,"Addr":":50051"}`,
		`[]`,
		"\x00\xff",
	}
	for i, v := range bad {
		if _, err := cli.Put(ctx, fmt.Sprintf("routeguide/bad%d", i), v, lease); err != nil {
			t.Fatal(err)
		}
	}
	// A valid node whose value is overwritten with garbage must go: keeping
	// its old address would send calls to whatever now holds it.
	if _, err := cli.Put(ctx, "routeguide/good", `{"Addr":`, lease); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, "overwritten node still resolved", addrsAre(rec))
	if got, want := events.get(&events.malformed), 1+len(bad)+1; got != want {
		t.Errorf("malformed values counted: %d, want %d", got, want)
	}
}

func TestResolverKeepsEndpointsWhileEtcdIsDownAndFollowsWhenItReturns(t *testing.T) {
	ctx := testContext(t)
	etcd := etcdtest.StartRestartable(t)
	cli := newClient(t, etcd.ClientURL())
	lease := withLease(t, ctx, cli)
	if _, err := cli.Put(ctx, "routeguide/n1", `{"Op":0,"Addr":"10.0.0.1:50051"}`, lease); err != nil {
		t.Fatal(err)
	}
	rec := buildResolver(t, NewBuilder(cli, WithBackoff(Backoff{Base: time.Millisecond, Max: 50 * time.Millisecond})), "etcd:///routeguide")
	poll.Until(t, 5*time.Second, "n1 not resolved", addrsAre(rec, "10.0.0.1:50051"))

	etcd.Close()
	// Wait until the client has seen the connection go, then bring etcd back.
	poll.Until(t, 10*time.Second, "client did not notice etcd going away", func() bool {
		c, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		_, err := cli.Get(c, "x")
		return err != nil
	})
	etcd.Restart()
	if _, err := cli.Put(ctx, "routeguide/n2", `{"Op":0,"Addr":"10.0.0.2:50051"}`, lease); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 20*time.Second, "resolver did not follow the registry after etcd returned", addrsAre(rec, "10.0.0.1:50051", "10.0.0.2:50051"))
	// At no point may the outage have emptied gRPC's list of endpoints.
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for i, s := range rec.states[1:] {
		if len(s.Endpoints) == 0 {
			t.Errorf("update %d handed gRPC an empty list during the outage", i+1)
		}
	}
}

// TestResolverFollowsAgainAfterCutOffAndCompaction is the failure that stops
// etcd's own resolver for good: the client is cut off etcd, the registry
// changes, etcd compacts away the revisions the client missed, and the
// client comes back. Its watch resumes with ErrCompacted; the upstream
// resolver's goroutine then returns and never updates gRPC again, while ours
// lists the registry afresh and follows it.
func TestResolverFollowsAgainAfterCutOffAndCompaction(t *testing.T) {
	ctx := testContext(t)
	etcd := etcdtest.Start(t)
	admin := newClient(t, etcd.ClientURL())
	proxy, err := faultproxy.Start(etcd.ClientAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	behindProxy := newClient(t, "http://"+proxy.Addr())
	lease := withLease(t, ctx, admin)

	if _, err := admin.Put(ctx, "routeguide/n1", `{"Op":0,"Addr":"10.0.0.1:50051"}`, lease); err != nil {
		t.Fatal(err)
	}
	ours := buildResolver(t, NewBuilder(behindProxy, WithBackoff(Backoff{Base: time.Millisecond, Max: 50 * time.Millisecond})), "etcd:///routeguide")
	upstreamBuilder, err := upstream.NewBuilder(behindProxy)
	if err != nil {
		t.Fatal(err)
	}
	theirs := buildResolver(t, upstreamBuilder, "etcd:///routeguide")
	poll.Until(t, 5*time.Second, "ours did not resolve n1", addrsAre(ours, "10.0.0.1:50051"))
	poll.Until(t, 5*time.Second, "upstream did not resolve n1", addrsAre(theirs, "10.0.0.1:50051"))

	proxy.Cut()
	if _, err := admin.Delete(ctx, "routeguide/n1"); err != nil {
		t.Fatal(err)
	}
	resp, err := admin.Put(ctx, "routeguide/n2", `{"Op":0,"Addr":"10.0.0.2:50051"}`, lease)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	proxy.Restore()

	poll.Until(t, 20*time.Second, "ours did not follow the registry after the compaction", addrsAre(ours, "10.0.0.2:50051"))
	// Give the upstream resolver the same chance: a fresh write after the
	// reconnection reaches any watch that is still alive.
	if _, err := admin.Put(ctx, "routeguide/n3", `{"Op":0,"Addr":"10.0.0.3:50051"}`, lease); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, "ours did not see n3", addrsAre(ours, "10.0.0.2:50051", "10.0.0.3:50051"))
	// By now the upstream watch has been resumed and has failed: its
	// resolver still holds n1, which is gone, and will never see n2 or n3.
	if got, _ := theirs.last(); !slices.Equal(got, []string{"10.0.0.1:50051"}) {
		t.Errorf("upstream resolver now has %v; this test expects it to be stuck on [10.0.0.1:50051]", got)
	}
}

func TestResolverCloseStopsItsGoroutine(t *testing.T) {
	cli := newClient(t, etcdtest.Start(t).ClientURL())
	rec := &stateRecorder{}
	r, err := NewBuilder(cli).Build(parseTarget(t, "etcd:///routeguide"), rec, resolver.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, "no state", addrsAre(rec))
	if n := goroutinesIn("discovery.(*follower).run"); n != 1 {
		t.Fatalf("%d resolver goroutines running, want 1", n)
	}
	r.Close()
	// Close waits for the goroutine, so it must be gone at once.
	if n := goroutinesIn("discovery.(*follower).run"); n != 0 {
		t.Errorf("%d resolver goroutines still running after Close", n)
	}
}

func TestResolverRejectsATargetWithoutService(t *testing.T) {
	cli := newClient(t, etcdtest.Start(t).ClientURL())
	if _, err := NewBuilder(cli).Build(parseTarget(t, "etcd:///"), &stateRecorder{}, resolver.BuildOptions{}); err == nil {
		t.Error("Build accepted etcd:/// with no service")
	}
}
