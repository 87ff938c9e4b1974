package discovery

import (
	"context"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"

	"github.com/routeguide-cluster/routeguide/internal/testutils"
)

func newClient(t *testing.T, endpoints ...string) *clientv3.Client {
	t.Helper()
	cli, err := NewEtcdClient(EtcdConfig{Endpoints: endpoints})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// withLease grants a lease that outlives the test and returns the option that
// puts a key under it, as a node's key is: the follower skips keys without.
func withLease(t *testing.T, ctx context.Context, cli *clientv3.Client) clientv3.OpOption {
	t.Helper()
	lease, err := cli.Grant(ctx, 600)
	if err != nil {
		t.Fatal(err)
	}
	return clientv3.WithLease(lease.ID)
}

// stateRecorder is the gRPC side of a resolver under test: it keeps every
// state the resolver hands over.
type stateRecorder struct {
	mu     sync.Mutex
	states []resolver.State
	errs   []error
}

func (r *stateRecorder) UpdateState(s resolver.State) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.states = append(r.states, s)
	return nil
}

func (r *stateRecorder) ReportError(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, err)
}

func (r *stateRecorder) NewAddress([]resolver.Address) {}

func (r *stateRecorder) ParseServiceConfig(string) *serviceconfig.ParseResult { return nil }

// last returns the latest state's addresses and whether there was any state.
func (r *stateRecorder) last() ([]string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.states) == 0 {
		return nil, false
	}
	var addrs []string
	for _, ep := range r.states[len(r.states)-1].Endpoints {
		for _, a := range ep.Addresses {
			addrs = append(addrs, a.Addr)
		}
	}
	return addrs, true
}

func (r *stateRecorder) updates() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.states)
}

// counters counts what resolvers and registrars report.
type counters struct {
	mu                                             sync.Mutex
	updated, restarts, malformed, unleased         int
	registered, unregistered, keptAlive, leaseLost int
}

func (c *counters) add(f *int) { c.mu.Lock(); *f++; c.mu.Unlock() }
func (c *counters) get(f *int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return *f
}

func (c *counters) Updated(string, int)   { c.add(&c.updated) }
func (c *counters) WatchRestarted(string) { c.add(&c.restarts) }
func (c *counters) Malformed(string)      { c.add(&c.malformed) }
func (c *counters) Unleased(string)       { c.add(&c.unleased) }
func (c *counters) Registered()           { c.add(&c.registered) }
func (c *counters) Unregistered()         { c.add(&c.unregistered) }
func (c *counters) KeptAlive()            { c.add(&c.keptAlive) }
func (c *counters) LeaseLost()            { c.add(&c.leaseLost) }

func parseTarget(t *testing.T, s string) resolver.Target {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return resolver.Target{URL: *u}
}

// goroutinesIn counts the goroutines whose stack holds function fn. The
// etcd server and gRPC run goroutines of their own in the test process, so
// a test of our goroutines counts ours by name.
func goroutinesIn(fn string) int {
	count := 0
	for _, stack := range testutils.GoroutineStacks() {
		if strings.Contains(stack, fn) {
			count++
		}
	}
	return count
}
