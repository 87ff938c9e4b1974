package clustertest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/routeguide-cluster/routeguide/balancer"
	"github.com/routeguide-cluster/routeguide/discovery"
	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/testutils"
)

// BenchmarkFirstCallAmongUnreachable measures how long a fresh client takes
// from grpc.NewClient to its first successful GetFeature when 1,000 or 5,000
// entries of unreachable addresses are registered beside one live node.
// The addresses are on loopback, where nothing listens,
// so each connection is refused at once: the time is the client's, not the
// network's.
//
//   - leased=N: the entries are under a lease, as a node's are, so the
//     client takes them all; policy=round_robin is gRPC's own, which our
//     policy replaced for this (balancer/sharding.go), policy=ours is
//     balancer.Name;
//
//   - unleased=5000/skipped: written by hand without a lease, which the
//     resolver skips by default;
//
//   - unleased=5000/taken: the same with discovery.WithUnleasedEntries, as
//     every client did before it skipped them.
//
//     go test -run '^$' -bench FirstCallAmongUnreachable -benchtime 3x ./internal/clustertest/
func BenchmarkFirstCallAmongUnreachable(b *testing.B) {
	cluster, _ := benchCluster(b, 1)
	cli, err := discovery.NewEtcdClient(discovery.EtcdConfig{Endpoints: []string{cluster.EtcdURL()}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cli.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lease, err := cli.Grant(ctx, 3600)
	if err != nil {
		b.Fatal(err)
	}
	addrs := testutils.UnreachableAddrs(b, 5000)
	registered := 0
	for _, n := range []int{1000, 5000} {
		registerUnreachable(b, cli, addrs[registered:n], clientv3.WithLease(lease.ID))
		registered = n
		for _, policy := range []string{"round_robin", balancer.Name} {
			name := map[string]string{balancer.Name: "ours"}[policy]
			if name == "" {
				name = policy
			}
			b.Run(fmt.Sprintf("leased=%d/policy=%s", n, name), func(b *testing.B) { benchFirstCall(b, cli, policy) })
		}
	}
	if _, err := cli.Revoke(ctx, lease.ID); err != nil {
		b.Fatal(err)
	}
	registerUnreachable(b, cli, addrs)
	b.Run("unleased=5000/skipped", func(b *testing.B) { benchFirstCall(b, cli, balancer.Name) })
	b.Run("unleased=5000/taken", func(b *testing.B) { benchFirstCall(b, cli, balancer.Name, discovery.WithUnleasedEntries()) })
}

// benchFirstCall reports the time to the first successful call, the calls
// that failed before it, and the CPU the process spent per op (the client's
// and the node's, and etcd's).
func benchFirstCall(b *testing.B, cli *clientv3.Client, policy string, opts ...discovery.Option) {
	var took []time.Duration
	failed := 0
	cpuBefore := testutils.ProcessCPUTime(b)
	for b.Loop() {
		d, f := firstCall(b, cli, policy, opts...)
		took = append(took, d)
		failed += f
	}
	b.ReportMetric(float64(testutils.ProcessCPUTime(b)-cpuBefore)/float64(b.N)/1e6, "cpu-ms/op")
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2])/1e6, "p50-ms-to-first-call")
	b.ReportMetric(float64(took[len(took)-1])/1e6, "max-ms-to-first-call")
	b.ReportMetric(float64(failed)/float64(b.N), "failed-calls/op")
}

// firstCall dials etcd:///routeguide afresh, as a client process does but
// with the balancing policy named, and makes GetFeature calls until one
// succeeds. It returns how long that took from the dial, and how many calls
// failed before.
func firstCall(b *testing.B, cli *clientv3.Client, policy string, opts ...discovery.Option) (time.Duration, int) {
	b.Helper()
	opts = append(opts, discovery.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	dialOpts, err := balancer.DialOptions()
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	conn, err := grpc.NewClient(target, append(dialOpts,
		grpc.WithResolvers(discovery.NewBuilder(cli, opts...)),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(strings.Replace(balancer.ServiceConfig, `"`+balancer.Name+`"`, `"`+policy+`"`, 1)))...)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	client := pb.NewRouteGuideClient(conn)
	// gRPC's round_robin took up to a minute at 5,000 on a busy machine.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	failed := 0
	for {
		_, err := client.GetFeature(ctx, somewhere)
		if err == nil {
			return time.Since(start), failed
		}
		if ctx.Err() != nil {
			b.Fatalf("no successful call within 5 minutes, %d failed: %v", failed, err)
		}
		failed++
	}
}

// registerUnreachable writes an entry for each of addrs, with putOpts, in
// transactions of etcd's default maximum of 128 operations; the key is named
// after the address.
func registerUnreachable(b *testing.B, cli *clientv3.Client, addrs []string, putOpts ...clientv3.OpOption) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ops := make([]clientv3.Op, 0, len(addrs))
	for _, addr := range addrs {
		id := "unreachable-" + addr
		value, err := discovery.EncodeEndpoint(addr, discovery.Metadata{NodeID: id})
		if err != nil {
			b.Fatal(err)
		}
		ops = append(ops, clientv3.OpPut(discovery.Prefix("routeguide")+id, value, putOpts...))
	}
	for batch := range slices.Chunk(ops, 128) {
		if _, err := cli.Txn(ctx).Then(batch...).Commit(); err != nil {
			b.Fatal(err)
		}
	}
}
