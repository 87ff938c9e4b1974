package etcdnotes_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"runtime/metrics"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/time/rate"

	"github.com/routeguide-cluster/routeguide/internal/testutils"
	"github.com/routeguide-cluster/routeguide/internal/testutils/etcdtest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/poll"
	"github.com/routeguide-cluster/routeguide/routeguide/notes"
	"github.com/routeguide-cluster/routeguide/routeguide/notes/etcdnotes"
	"github.com/routeguide-cluster/routeguide/routeguide/notes/notestest"
)

// writeRate is the chat's --notes-write-rate in the benchmark: to try a rate
// on a member's hardware, -notes.write-rate.
var writeRate = flag.Int("notes.write-rate", etcdnotes.DefaultWriteRate, "notes a second the benchmark's store writes to etcd")

// BenchmarkRegistryWritesUnderChatAtAFullLocation measures what a node's
// registry writes (a lease grant, a put on it, a keepalive) wait for on the
// etcd member that also takes notes, in rounds of one run that alternate
// three phases:
//
//   - quiet: the registry's writes alone;
//   - chat: the same writes while 64 clients post 4 KiB notes at a full
//     location through one store with the node's defaults (the write rate
//     too, unless -notes.write-rate says otherwise), each posting again as
//     soon as it is answered;
//   - puts: the same writes while a plain etcd client puts values of the
//     same size at the rate the chat phases stored notes: what etcd itself
//     makes of that write rate on this machine.
//
// Beside the p99s and their ratios to the quiet phase, it reports what the
// registry waited for in each phase: the Go scheduler's p99 latency
// (runnable goroutines waiting for a core; the member, the store and the
// posters share the process), etcd's WAL fsync and backend commit p99s, and
// the cores the process used. And what one post costs inside etcd: the
// bytes etcd answered it, and the time in etcd's apply loop
// (etcd_server_apply_duration_seconds of the embedded member).
//
//	go test -run '^$' -bench RegistryWritesUnderChat -benchtime 60x -timeout 15m ./routeguide/notes/etcdnotes/
func BenchmarkRegistryWritesUnderChatAtAFullLocation(b *testing.B) {
	const posters, writesPerRound = 64, 20
	srv := etcdtest.Start(b)
	var read atomic.Int64
	cfg := testConfig(b)
	cfg.WriteRate = *writeRate
	store := newEtcd(b, countingClient(b, srv.ClientURL(), &read), cfg)
	registry := newClient(b, srv.ClientURL())
	plain := newClient(b, srv.ClientURL())
	full := strings.Repeat("x", cfg.Limits.MessageBytes)
	// The location is filled before the clock starts, without a rate.
	filler := newEtcd(b, newClient(b, srv.ClientURL()), testConfig(b))
	for range cfg.Limits.AnswerBytes/cfg.Limits.MessageBytes + 10 {
		if _, err := filler.Post(b.Context(), notestest.Note(5, 5, full)); err != nil {
			b.Fatal(err)
		}
	}
	var posts, refused, written atomic.Int64
	quiet, chat, puts := phase{}, phase{counter: &posts}, phase{counter: &written}
	read.Store(0)
	applyBefore := etcdtest.MetricSum(b, "etcd_server_apply_duration_seconds", "op", "Txn")
	for b.Loop() {
		quiet.measure(b, registry, writesPerRound, nil, 0, nil)
		// The registry's writes start once the posts queue at the store.
		warm := posts.Load() + posters/4
		chat.measure(b, registry, writesPerRound, func(ctx context.Context) {
			for ctx.Err() == nil {
				_, err := store.Post(ctx, notestest.Note(5, 5, full))
				switch {
				case err == nil:
					posts.Add(1)
				case errors.Is(err, notes.ErrWriteRate):
					// A client told RESOURCE_EXHAUSTED backs off.
					refused.Add(1)
					select {
					case <-ctx.Done():
					case <-time.After(100 * time.Millisecond):
					}
				case ctx.Err() == nil:
					b.Errorf("post: %v", err)
				}
			}
		}, posters, func() bool { return posts.Load() >= warm })
		limiter := rate.NewLimiter(rate.Limit(chat.rate()), 1)
		var key atomic.Int64
		puts.measure(b, registry, writesPerRound, func(ctx context.Context) {
			for limiter.Wait(ctx) == nil {
				if _, err := plain.Put(ctx, fmt.Sprintf("puts-bench/%d", key.Add(1)%1000), full); err == nil {
					written.Add(1)
				} else if ctx.Err() == nil {
					b.Errorf("put: %v", err)
				}
			}
		}, posters, nil)
	}
	apply := etcdtest.MetricSum(b, "etcd_server_apply_duration_seconds", "op", "Txn") - applyBefore
	q := quiet.p99()
	b.ReportMetric(ms(q), "quiet-p99-ms")
	b.ReportMetric(ms(chat.p99()), "chat-p99-ms")
	b.ReportMetric(float64(chat.p99())/float64(q), "p99-ratio")
	b.ReportMetric(float64(puts.p99())/float64(q), "puts-p99-ratio")
	n := max(1, posts.Load())
	b.ReportMetric(chat.rate(), "posts/s")
	b.ReportMetric(puts.rate(), "puts/s")
	b.ReportMetric(float64(refused.Load())/chat.wall.Seconds(), "refused/s")
	b.ReportMetric(float64(read.Load())/float64(n)/1024, "KiB-read/post")
	b.ReportMetric(apply*1e3/float64(n), "apply-ms/post")
	for _, p := range []struct {
		name string
		*phase
	}{{"quiet", &quiet}, {"chat", &chat}, {"puts", &puts}} {
		b.ReportMetric(p.cpu.Seconds()/p.wall.Seconds(), p.name+"-cores")
		b.ReportMetric(p.sched.quantile(0.99)*1e3, p.name+"-sched-p99-ms")
		b.ReportMetric(p.fsync.quantile(0.99)*1e3, p.name+"-fsync-p99-ms")
		b.ReportMetric(p.commit.quantile(0.99)*1e3, p.name+"-commit-p99-ms")
	}
}

// phase is what the registry's writes met in one phase of every round.
type phase struct {
	counter              *atomic.Int64 // of the load's operations; nil for none
	took                 []time.Duration
	wall, cpu            time.Duration
	ops                  int64 // of the load, while the registry's writes were timed
	sched, fsync, commit histogram
}

// rate is the load's operations per second while the writes were timed.
func (p *phase) rate() float64 { return float64(p.ops) / p.wall.Seconds() }

// measure runs load on workers goroutines, and once warm holds (nil: at
// once) times n rounds of registry writes and adds what they met to p.
func (p *phase) measure(b *testing.B, registry *clientv3.Client, n int, load func(context.Context), workers int, warm func() bool) {
	ctx, cancel := context.WithCancel(b.Context())
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() { load(ctx) })
	}
	if warm != nil {
		poll.Until(b, time.Minute, "posts under way", warm)
	}
	before := p.snapshot(b)
	p.took = append(p.took, registryWrites(b, registry, n)...)
	p.add(before, p.snapshot(b))
	cancel()
	wg.Wait()
}

type snapshot struct {
	at                   time.Time
	cpu                  time.Duration
	ops                  int64
	sched, fsync, commit histogram
}

func (p *phase) snapshot(b *testing.B) snapshot {
	s := []metrics.Sample{{Name: "/sched/latencies:seconds"}}
	metrics.Read(s)
	h := s[0].Value.Float64Histogram()
	var ops int64
	if p.counter != nil {
		ops = p.counter.Load()
	}
	return snapshot{at: time.Now(), cpu: testutils.ProcessCPUTime(b), ops: ops,
		sched:  histogram{bounds: h.Buckets[1:], counts: slices.Clone(h.Counts)},
		fsync:  etcdHistogram(b, "etcd_disk_wal_fsync_duration_seconds"),
		commit: etcdHistogram(b, "etcd_disk_backend_commit_duration_seconds")}
}

func (p *phase) add(before, after snapshot) {
	p.wall += after.at.Sub(before.at)
	p.cpu += after.cpu - before.cpu
	p.ops += after.ops - before.ops
	p.sched.add(before.sched, after.sched)
	p.fsync.add(before.fsync, after.fsync)
	p.commit.add(before.commit, after.commit)
}

func (p *phase) p99() time.Duration {
	slices.Sort(p.took)
	return p.took[len(p.took)*99/100]
}

// histogram counts observations per bucket (not cumulated): counts[i] is
// of those at most bounds[i].
type histogram struct {
	bounds []float64
	counts []uint64
}

// add adds what was observed between two readings.
func (h *histogram) add(before, after histogram) {
	if h.counts == nil {
		h.bounds, h.counts = after.bounds, make([]uint64, len(after.counts))
	}
	for i := range after.counts {
		h.counts[i] += after.counts[i] - before.counts[i]
	}
}

// quantile is the upper bound of the bucket that holds quantile q.
func (h *histogram) quantile(q float64) float64 {
	var total, seen uint64
	for _, c := range h.counts {
		total += c
	}
	for i, c := range h.counts {
		if seen += c; total > 0 && float64(seen) >= q*float64(total) {
			return h.bounds[i]
		}
	}
	return 0
}

// etcdHistogram is one of the embedded member's histograms.
func etcdHistogram(b *testing.B, name string) histogram {
	bounds, counts := etcdtest.MetricBuckets(b, name)
	return histogram{bounds: bounds, counts: counts}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }

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
