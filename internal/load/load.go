// Package load drives RouteGuide calls over one client connection from several
// workers at once and measures them: successes, failures by status code,
// throughput, latency percentiles and the node that answered each call.
package load

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/routeguide/contract"
	"github.com/routeguide-cluster/routeguide/routeguide/features"
)

// NodeOf returns the node named by a call's header, or by its trailer when the
// call ended before any header was sent, or "" when neither names one.
func NodeOf(header, trailer metadata.MD) string {
	if v := header[contract.NodeHeader]; len(v) > 0 {
		return v[0]
	}
	if v := trailer[contract.NodeHeader]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// EndGrace is how long the calls in flight when a timed run's Duration is
// up may take to finish: a run never lasts much longer than asked, however
// long its calls' Timeout, even when calls hang.
const EndGrace = time.Second

// LateAfter is how far behind its due time an open-loop call may start and
// still count as sent on time: timers and the scheduler make a call start a
// little late now and then; a call later than this waited for a worker, or
// for a machine too busy to run the client.
const LateAfter = time.Millisecond

// DefaultProgressInterval is how often Run reports progress unless told otherwise.
const DefaultProgressInterval = 250 * time.Millisecond

// Config describes one load run. Validate checks it; its errors name the
// command-line flag that sets the field at fault.
type Config struct {
	// RPC is the call every worker makes, or Mix.
	RPC RPC
	// Concurrency is the number of workers, each with one call in flight. In
	// an open-loop run it bounds the calls in flight.
	Concurrency int
	// Rate, when above 0, makes the run open-loop: calls are due at Rate per
	// second from the start, whatever their latency, and a call's latency is
	// measured from when it was due, not from when a worker was free to make
	// it (no coordinated omission: a stall shows in every call it delayed, as
	// it would for callers who do not wait for each other). A call that
	// starts more than LateAfter after it was due is counted late. 0 is a
	// closed loop: each worker makes its next call when the last one ends.
	Rate float64
	// Duration ends the run: no call starts after it, and calls in flight
	// have EndGrace more to finish; those still running then fail with
	// DeadlineExceeded. Exactly one of Duration and Requests is set.
	Duration time.Duration
	// Requests is the number of calls to make, across all workers.
	Requests int
	// Timeout is the deadline of each call.
	Timeout time.Duration
	// Progress, when set, is called every ProgressInterval while the run goes
	// on, and once more with the final counts before Run returns. Calls never
	// overlap.
	Progress func(Progress)
	// ProgressInterval is how often Progress is called; 0 means
	// DefaultProgressInterval.
	ProgressInterval time.Duration
	// Seed seeds the random points and the mix; 0 means a random seed.
	Seed uint64
}

// Validate reports the first problem with c.
func (c Config) Validate() error {
	switch {
	case !c.RPC.valid():
		return fmt.Errorf("--rpc: %q is not one of %s", string(c.RPC), rpcNames())
	case c.Concurrency < 1:
		return fmt.Errorf("--concurrency: %d must be at least 1", c.Concurrency)
	case c.Duration < 0:
		return fmt.Errorf("--duration: %v is negative", c.Duration)
	case c.Requests < 0:
		return fmt.Errorf("--requests: %d is negative", c.Requests)
	case c.Duration > 0 && c.Requests > 0:
		return errors.New("--duration and --requests: give one, not both")
	case c.Duration == 0 && c.Requests == 0:
		return errors.New("--duration or --requests: give one of them")
	case c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0):
		return fmt.Errorf("--rps: %v must be a rate of calls per second, or 0 for a closed loop", c.Rate)
	case c.Timeout <= 0:
		return fmt.Errorf("--timeout: %v must be positive", c.Timeout)
	case c.ProgressInterval < 0:
		return fmt.Errorf("progress interval %v is negative", c.ProgressInterval)
	}
	return nil
}

// Progress is a snapshot of a run that is still going.
type Progress struct {
	// Done counts the calls that finished, OK and Failed together.
	Done, OK, Failed int
	// Requests is the number of calls to make, or 0 for a timed run.
	Requests int
	// Elapsed is the time since the run started; Duration is the configured
	// length of a timed run, or 0.
	Elapsed, Duration time.Duration
	// QPS is the rate of finished calls since the previous report, or over
	// the whole run in the final report.
	QPS float64
}

// Run makes calls on conn as cfg says until Requests calls have finished or
// Duration has passed, and returns what it measured. When ctx ends first, Run
// stops early: calls cut short by it are counted neither as OK nor as failed,
// and the result covers what finished before. Every goroutine Run starts has
// ended when it returns. The error is for an invalid cfg only.
func Run(ctx context.Context, conn grpc.ClientConnInterface, cfg Config) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	if cfg.ProgressInterval == 0 {
		cfg.ProgressInterval = DefaultProgressInterval
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}

	count := cfg.Concurrency
	if cfg.Requests > 0 {
		count = min(count, cfg.Requests)
	}
	client := pb.NewRouteGuideClient(conn)
	points := featurePoints()
	workers := make([]*worker, count)
	for i := range workers {
		workers[i] = newWorker(client, cfg, points, rand.New(rand.NewPCG(seed, uint64(i))))
	}

	// Workers stop starting calls when stop ends; calls in flight run under
	// calls, so that a timed run lets its last calls finish within
	// EndGrace. The deadlines are taken from start so that Elapsed is never
	// shorter than Duration.
	start := time.Now()
	t := newTickets(cfg, start)
	stop, calls := ctx, ctx
	if cfg.Duration > 0 {
		var cancelStop, cancelCalls context.CancelFunc
		stop, cancelStop = context.WithDeadline(ctx, start.Add(cfg.Duration))
		defer cancelStop()
		calls, cancelCalls = context.WithDeadline(ctx, start.Add(cfg.Duration+EndGrace))
		defer cancelCalls()
	}
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Go(func() { w.run(ctx, calls, stop, t) })
	}
	if cfg.Progress != nil {
		r := &reporter{cfg: cfg, workers: workers, start: start, lastAt: start}
		finished := make(chan struct{})
		var reporting sync.WaitGroup
		reporting.Go(func() { r.loop(finished) })
		wg.Wait()
		close(finished)
		reporting.Wait()
		r.report(time.Now(), true)
	} else {
		wg.Wait()
	}
	res := merge(workers, time.Since(start))
	if t.open() {
		// Calls that were due before the run stopped and that no worker
		// could start: every one was busy until the end.
		stoppedAt := start.Add(res.Elapsed)
		if cfg.Duration > 0 {
			stoppedAt = start.Add(min(res.Elapsed, cfg.Duration))
		}
		var started int64
		for _, w := range workers {
			started += int64(w.started)
		}
		res.Unsent = int(max(t.dueBefore(stoppedAt)-started, 0))
	}
	return res, nil
}

// featurePoints are the points of the built-in features, where calls go.
func featurePoints() []*pb.Point {
	all := features.Default().All()
	points := make([]*pb.Point, len(all))
	for i, f := range all {
		points[i] = f.Location
	}
	if len(points) == 0 {
		points = append(points, &pb.Point{})
	}
	return points
}

// tickets hands out the calls of a run: all of them, or Requests; in an
// open-loop run, each with the time it is due.
type tickets struct {
	issued   atomic.Int64
	limit    int64 // 0: no limit
	start    time.Time
	interval float64 // nanoseconds from one due call to the next; 0: closed loop
}

func newTickets(cfg Config, start time.Time) *tickets {
	t := &tickets{limit: int64(cfg.Requests), start: start}
	if cfg.Rate > 0 {
		t.interval = float64(time.Second) / cfg.Rate
	}
	return t
}

func (t *tickets) open() bool { return t.interval > 0 }

// take hands out the next call, and when it is due in an open-loop run (the
// zero time in a closed loop); ok is false when every call has been handed
// out.
func (t *tickets) take() (due time.Time, ok bool) {
	n := t.issued.Add(1) // the n-th call, from 1
	if t.limit > 0 && n > t.limit {
		return time.Time{}, false
	}
	if t.open() {
		due = t.start.Add(time.Duration(float64(n-1) * t.interval))
	}
	return due, true
}

// dueBefore is how many calls of an open-loop run were due before at.
func (t *tickets) dueBefore(at time.Time) int64 {
	since := at.Sub(t.start)
	if since <= 0 {
		return 0
	}
	n := int64(math.Ceil(float64(since) / t.interval))
	if t.limit > 0 {
		n = min(n, t.limit)
	}
	return n
}

// reporter calls Config.Progress from one goroutine.
type reporter struct {
	cfg      Config
	workers  []*worker
	start    time.Time
	lastDone int
	lastAt   time.Time
}

func (r *reporter) loop(finished <-chan struct{}) {
	ticker := time.NewTicker(r.cfg.ProgressInterval)
	defer ticker.Stop()
	for {
		select {
		case <-finished:
			return
		case now := <-ticker.C:
			r.report(now, false)
		}
	}
}

func (r *reporter) report(now time.Time, final bool) {
	p := Progress{Requests: r.cfg.Requests, Duration: r.cfg.Duration, Elapsed: now.Sub(r.start)}
	for _, w := range r.workers {
		p.OK += int(w.okCount.Load())
		p.Failed += int(w.failedCount.Load())
	}
	p.Done = p.OK + p.Failed
	from, before := r.lastAt, r.lastDone
	if final { // the whole run, not the last moments
		from, before = r.start, 0
	}
	if since := now.Sub(from); since > 0 {
		p.QPS = float64(p.Done-before) / since.Seconds()
	}
	r.lastDone, r.lastAt = p.Done, now
	r.cfg.Progress(p)
}

// merge adds up what the workers measured.
func merge(workers []*worker, elapsed time.Duration) Result {
	res := Result{Errors: map[string]int{}, ByNode: map[string]int{}, Elapsed: elapsed}
	var latencies []time.Duration
	for _, w := range workers {
		res.OK += int(w.okCount.Load())
		res.Failed += int(w.failedCount.Load())
		res.Late += w.late
		for code, n := range w.codes {
			if n > 0 {
				res.Errors[codes.Code(code).String()] += n
			}
		}
		for code, n := range w.otherCodes {
			res.Errors[code.String()] += n
		}
		for node, n := range w.byNode {
			res.ByNode[node] += n
		}
		latencies = append(latencies, w.latencies...)
	}
	if elapsed > 0 {
		res.QPS = float64(res.OK+res.Failed) / elapsed.Seconds()
	}
	slices.Sort(latencies)
	res.P50 = percentile(latencies, 50)
	res.P90 = percentile(latencies, 90)
	res.P99 = percentile(latencies, 99)
	res.P999 = permille(latencies, 999)
	return res
}

// percentile is the nearest-rank percentile p of sorted, or 0 when it is empty.
func percentile(sorted []time.Duration, p int) time.Duration {
	return permille(sorted, 10*p)
}

// permille is the nearest-rank p-th thousandth of sorted, or 0 when it is
// empty: permille(sorted, 999) is p99.9.
func permille(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := (p*len(sorted) + 999) / 1000 // ceil(p/1000 * n), from 1
	return sorted[max(rank, 1)-1]
}
