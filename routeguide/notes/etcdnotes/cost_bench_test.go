package etcdnotes_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/routeguide-cluster/routeguide/internal/testutils/etcdtest"
	"github.com/routeguide-cluster/routeguide/routeguide/notes/notestest"
)

// BenchmarkRegistryWritesUnderChatAtAFullLocation measures what a node's
// registry writes (a lease grant, a put on it, a keepalive) wait for on the
// etcd member that also takes notes, when 64 clients post at once at a
// location full of 4 KiB notes, against the same writes on the quiet member,
// in alternating rounds of one run. It also reports what one post costs
// inside etcd: the bytes etcd answered it, and the time in etcd's apply loop
// (etcd_server_apply_duration_seconds of the embedded member).
//
//	go test -run '^$' -bench RegistryWritesUnderChat -benchtime 4x ./routeguide/notes/etcdnotes/
func BenchmarkRegistryWritesUnderChatAtAFullLocation(b *testing.B) {
	const posters, writesPerRound = 64, 60
	srv := etcdtest.Start(b)
	var read atomic.Int64
	cfg := testConfig(b)
	store := newEtcd(b, countingClient(b, srv.ClientURL(), &read), cfg)
	registry := newClient(b, srv.ClientURL())
	full := strings.Repeat("x", cfg.Limits.MessageBytes)
	for range cfg.Limits.AnswerBytes/cfg.Limits.MessageBytes + 10 {
		if _, err := store.Post(b.Context(), notestest.Note(5, 5, full)); err != nil {
			b.Fatal(err)
		}
	}
	var quiet, loaded []time.Duration
	var posts atomic.Int64
	var loadedFor time.Duration
	read.Store(0)
	applyBefore := applySeconds(b)
	for b.Loop() {
		quiet = append(quiet, registryWrites(b, registry, writesPerRound)...)

		ctx, cancel := context.WithCancel(b.Context())
		var wg sync.WaitGroup
		for range posters {
			wg.Go(func() {
				for ctx.Err() == nil {
					if _, err := store.Post(ctx, notestest.Note(5, 5, full)); err == nil {
						posts.Add(1)
					} else if ctx.Err() == nil {
						b.Errorf("post: %v", err)
					}
				}
			})
		}
		start := time.Now()
		loaded = append(loaded, registryWrites(b, registry, writesPerRound)...)
		loadedFor += time.Since(start)
		cancel()
		wg.Wait()
	}
	apply := applySeconds(b) - applyBefore
	q, l := p99(quiet), p99(loaded)
	b.ReportMetric(float64(q.Microseconds())/1e3, "quiet-p99-ms")
	b.ReportMetric(float64(l.Microseconds())/1e3, "chat-p99-ms")
	b.ReportMetric(float64(l)/float64(q), "p99-ratio")
	n := max(1, posts.Load())
	b.ReportMetric(float64(n)/loadedFor.Seconds(), "posts/s")
	b.ReportMetric(float64(read.Load())/float64(n)/1024, "KiB-read/post")
	b.ReportMetric(apply*1e3/float64(n), "apply-ms/post")
}

// registryWrites does n rounds of what a node's registration does, and
// returns how long each write took.
func registryWrites(b *testing.B, cli *clientv3.Client, n int) []time.Duration {
	took := make([]time.Duration, 0, 3*n)
	timed := func(write func() error) {
		start := time.Now()
		if err := write(); err != nil {
			b.Fatal(err)
		}
		took = append(took, time.Since(start))
	}
	for i := range n {
		var lease *clientv3.LeaseGrantResponse
		timed(func() (err error) { lease, err = cli.Grant(b.Context(), 30); return err })
		timed(func() error {
			_, err := cli.Put(b.Context(), fmt.Sprintf("registry-bench/node-%d", i), "addr", clientv3.WithLease(lease.ID))
			return err
		})
		timed(func() error { _, err := cli.KeepAliveOnce(b.Context(), lease.ID); return err })
		if _, err := cli.Revoke(b.Context(), lease.ID); err != nil {
			b.Fatal(err)
		}
	}
	return took
}

func p99(d []time.Duration) time.Duration {
	slices.Sort(d)
	return d[len(d)*99/100]
}

// applySeconds is the time the embedded etcd spent applying transactions
// so far, from its own histogram in the process's default registry.
func applySeconds(b *testing.B) float64 {
	return etcdtest.MetricSum(b, "etcd_server_apply_duration_seconds", "op", "Txn")
}
