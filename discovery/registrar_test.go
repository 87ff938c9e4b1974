package discovery

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	upstream "go.etcd.io/etcd/client/v3/naming/resolver"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/routeguide-cluster/routeguide/internal/testutils/etcdtest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/poll"
)

func registration(cli *clientv3.Client, id, addr string) Registration {
	return Registration{
		Client:   cli,
		Service:  "routeguide",
		Addr:     addr,
		Metadata: Metadata{NodeID: id, MetricsAddr: "127.0.0.1:9090", Version: "test"},
		TTL:      2 * time.Second,
		Backoff:  Backoff{Base: 10 * time.Millisecond, Max: 100 * time.Millisecond},
	}
}

func startRegistrar(t *testing.T, reg Registration) *Registrar {
	t.Helper()
	r, err := StartRegistrar(reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r.Deregister(ctx)
	})
	return r
}

func waitRegistered(t *testing.T, r *Registrar) {
	t.Helper()
	select {
	case <-r.Registered():
	case err := <-r.Failed():
		t.Fatalf("registration failed: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("not registered within 10s")
	}
}

func keyExists(t *testing.T, cli *clientv3.Client, key string) func() bool {
	return func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		resp, err := cli.Get(ctx, key)
		return err == nil && len(resp.Kvs) == 1
	}
}

func not(f func() bool) func() bool { return func() bool { return !f() } }

// TestRegistrationIsReadableByTheUpstreamResolver dials a real gRPC server
// through etcd's own resolver, which knows nothing of our code: the value we
// write must be the endpoints package's format.
func TestRegistrationIsReadableByTheUpstreamResolver(t *testing.T) {
	cli := newClient(t, etcdtest.Start(t).ClientURL())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := grpc.NewServer()
	healthpb.RegisterHealthServer(server, health.NewServer())
	go server.Serve(lis)
	t.Cleanup(server.Stop)

	waitRegistered(t, startRegistrar(t, registration(cli, "n1", lis.Addr().String())))

	builder, err := upstream.NewBuilder(cli)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("etcd:///routeguide", grpc.WithResolvers(builder), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var p peer.Peer
	if _, err := healthpb.NewHealthClient(conn).Check(testContext(t), &healthpb.HealthCheckRequest{}, grpc.Peer(&p), grpc.WaitForReady(true)); err != nil {
		t.Fatalf("health check through the upstream resolver: %v", err)
	}
	if p.Addr.String() != lis.Addr().String() {
		t.Errorf("call went to %v, want %v", p.Addr, lis.Addr())
	}
}

// TestCrashedNodeLosesItsKeyWithinTheTTL stops the keepalives the way a crash
// does (the node's etcd client goes away without revoking anything) and
// measures how long the key outlives it.
func TestCrashedNodeLosesItsKeyWithinTheTTL(t *testing.T) {
	etcd := etcdtest.Start(t)
	observer := newClient(t, etcd.ClientURL())
	nodeClient := newClient(t, etcd.ClientURL())
	reg := registration(nodeClient, "n1", "10.0.0.1:50051")
	r, err := StartRegistrar(reg)
	if err != nil {
		t.Fatal(err)
	}
	waitRegistered(t, r)

	crashed := time.Now()
	nodeClient.Close()
	poll.Until(t, reg.TTL+2*time.Second, "key outlived the lease TTL", not(keyExists(t, observer, reg.Key())))
	t.Logf("key removed %v after the keepalives stopped (TTL %v)", time.Since(crashed).Round(10*time.Millisecond), reg.TTL)
	r.Deregister(context.Background())
}

func TestNodeRegistersAgainAfterItsKeyIsDeletedByHand(t *testing.T) {
	ctx := testContext(t)
	cli := newClient(t, etcdtest.Start(t).ClientURL())
	events := &counters{}
	reg := registration(cli, "n1", "10.0.0.1:50051")
	reg.Events = events
	r := startRegistrar(t, reg)
	waitRegistered(t, r)
	for i := 1; i <= 3; i++ {
		if _, err := cli.Delete(ctx, reg.Key()); err != nil {
			t.Fatal(err)
		}
		poll.Until(t, 5*time.Second, "key not written again", keyExists(t, cli, reg.Key()))
		poll.Until(t, 5*time.Second, "registration not counted", func() bool { return events.get(&events.registered) == 1+i })
	}
	if !r.Live() {
		t.Error("Live() is false after registering again")
	}
}

// TestNodeRegistersAgainAfterEtcdRestarts keeps etcd down for longer than the
// TTL, so the lease is lost, then brings it back on the same data directory.
func TestNodeRegistersAgainAfterEtcdRestarts(t *testing.T) {
	etcd := etcdtest.StartRestartable(t)
	cli := newClient(t, etcd.ClientURL())
	events := &counters{}
	reg := registration(cli, "n1", "10.0.0.1:50051")
	reg.Events = events
	r := startRegistrar(t, reg)
	waitRegistered(t, r)
	poll.Until(t, 5*time.Second, "no keepalive reported", func() bool { return events.get(&events.keptAlive) > 0 })

	etcd.Close()
	poll.Until(t, 3*reg.TTL+2*time.Second, "registrar did not notice the lost lease", not(r.Live))
	// The key may stop being live before the lease is known lost: when
	// etcd goes, the watch fails first, and the keepalive ends only at the TTL.
	poll.Until(t, 3*reg.TTL+2*time.Second, "lease loss not reported", func() bool { return events.get(&events.leaseLost) > 0 })

	etcd.Restart()
	poll.Until(t, 30*time.Second, "node not registered again after etcd returned", func() bool { return r.Live() && keyExists(t, cli, reg.Key())() })
	if got := events.get(&events.registered); got < 2 {
		t.Errorf("registrations counted: %d, want at least 2", got)
	}
}

func TestSecondNodeWithALiveIDIsRefused(t *testing.T) {
	ctx := testContext(t)
	cli := newClient(t, etcdtest.Start(t).ClientURL())
	first := startRegistrar(t, registration(cli, "n1", "10.0.0.1:50051"))
	waitRegistered(t, first)

	second := startRegistrar(t, registration(cli, "n1", "10.0.0.2:50051"))
	select {
	case err := <-second.Failed():
		if !errors.Is(err, ErrNodeIDTaken) {
			t.Errorf("second registrar failed with %v, want ErrNodeIDTaken", err)
		}
	case <-second.Registered():
		t.Fatal("second node with the same id registered")
	case <-time.After(10 * time.Second):
		t.Fatal("second registrar neither failed nor registered")
	}
	resp, err := cli.Get(ctx, "routeguide/n1")
	if err != nil {
		t.Fatal(err)
	}
	ep, err := DecodeEndpoint("routeguide/n1", resp.Kvs[0].Value)
	if err != nil || ep.Addr != "10.0.0.1:50051" {
		t.Errorf("key now holds %v (%v); the first node's registration was overwritten", ep, err)
	}
}

// TestRestartedNodeTakesOverItsOwnKey: a node that crashed and came back at
// the same address before its old lease expired registers at once.
func TestRestartedNodeTakesOverItsOwnKey(t *testing.T) {
	etcd := etcdtest.Start(t)
	cli := newClient(t, etcd.ClientURL())
	crashedClient := newClient(t, etcd.ClientURL())
	reg := registration(crashedClient, "n1", "10.0.0.1:50051")
	reg.TTL = time.Minute
	crashed, err := StartRegistrar(reg)
	if err != nil {
		t.Fatal(err)
	}
	waitRegistered(t, crashed)
	crashedClient.Close()
	crashed.Deregister(context.Background())

	restarted := startRegistrar(t, registration(cli, "n1", "10.0.0.1:50051"))
	waitRegistered(t, restarted)
}

func TestDeregisterRemovesTheKeyAtOnce(t *testing.T) {
	cli := newClient(t, etcdtest.Start(t).ClientURL())
	reg := registration(cli, "n1", "10.0.0.1:50051")
	reg.TTL = time.Minute // a key that lingered would outlive the test
	r, err := StartRegistrar(reg)
	if err != nil {
		t.Fatal(err)
	}
	waitRegistered(t, r)
	if err := r.Deregister(testContext(t)); err != nil {
		t.Fatal(err)
	}
	if keyExists(t, cli, reg.Key())() {
		t.Error("key still there after Deregister returned")
	}
	if n := goroutinesIn("discovery.(*Registrar)."); n != 0 {
		t.Errorf("%d registrar goroutines still running after Deregister", n)
	}
}

func TestRegistrationIsValidated(t *testing.T) {
	cli := newClient(t, etcdtest.Start(t).ClientURL())
	good := registration(cli, "n1", "10.0.0.1:50051")
	tests := []struct {
		name   string
		change func(*Registration)
	}{
		{"no client", func(r *Registration) { r.Client = nil }},
		{"no service", func(r *Registration) { r.Service = "" }},
		{"no node id", func(r *Registration) { r.Metadata.NodeID = "" }},
		{"ttl below a second", func(r *Registration) { r.TTL = 500 * time.Millisecond }},
		{"address without port", func(r *Registration) { r.Addr = "10.0.0.1" }},
		{"address without host", func(r *Registration) { r.Addr = ":50051" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := good
			tt.change(&reg)
			if _, err := StartRegistrar(reg); err == nil {
				t.Error("StartRegistrar accepted it")
			}
		})
	}
}

// TestTwoLiveNodesWithOneIDAndAddressDoNotFight: a second process with the
// same id and advertised address looks like a restart of the first, so it
// takes the key over once; the first, which registered before, must not
// take it back, or the two would overwrite each other for ever.
func TestTwoLiveNodesWithOneIDAndAddressDoNotFight(t *testing.T) {
	ctx := testContext(t)
	cli := newClient(t, etcdtest.Start(t).ClientURL())
	firstEvents := &counters{}
	reg := registration(cli, "n1", "10.0.0.1:50051")
	reg.Events = firstEvents
	first := startRegistrar(t, reg)
	waitRegistered(t, first)

	second := startRegistrar(t, registration(cli, "n1", "10.0.0.1:50051"))
	waitRegistered(t, second)
	poll.Until(t, 5*time.Second, "first registrar did not notice the key was taken", not(first.Live))

	before, err := cli.Get(ctx, reg.Key())
	if err != nil {
		t.Fatal(err)
	}
	// Give the first registrar time for several retries (its backoff is at
	// most 100ms here); not one of them may write the key.
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond) // observation window, not synchronisation
		after, err := cli.Get(ctx, reg.Key())
		if err != nil {
			t.Fatal(err)
		}
		if after.Kvs[0].ModRevision != before.Kvs[0].ModRevision {
			t.Fatalf("the key was written again (revision %d, then %d): the registrars fight over it", before.Kvs[0].ModRevision, after.Kvs[0].ModRevision)
		}
	}
	if got := firstEvents.get(&firstEvents.registered); got != 1 {
		t.Errorf("first registrar registered %d times, want 1", got)
	}
}
