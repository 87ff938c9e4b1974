package etcdnotes

import (
	"context"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/routeguide-cluster/routeguide/routeguide/notes"
)

// budget refuses notes before etcd fills up. etcd refuses every write once
// its database reaches --quota-backend-bytes (NOSPACE), the registry's
// leases and keys too, and stays so until an operator acts; notes from any
// number of clients must never take it there.
//
// Its measure is etcd's own: the largest DbSizeInUse that a member reports
// in its maintenance Status, asked at most every BudgetCheck, and only while
// notes are posted. Between two measurements it adds an over-estimate of
// what this store wrote, and near the limit it measures again before it
// refuses, so that a burst is caught early and a compaction is seen soon.
type budget struct {
	cli   *clientv3.Client
	limit int64
	every time.Duration

	mu         sync.Mutex
	measuring  bool      // one post measures; the others use the last figures
	askedAt    time.Time // when the last measurement started
	measuredAt time.Time // when etcd last answered; zero until it does
	inUse      int64     // the largest DbSizeInUse of the members that answered
	quota      int64     // the smallest DbSizeQuota they reported; 0 when none did
	wroteSince int64     // what this store wrote since, over-estimated
}

func newBudget(cli *clientv3.Client, limit int64, every time.Duration) *budget {
	return &budget{cli: cli, limit: limit, every: every}
}

// statusTimeout bounds one round of Status calls.
const statusTimeout = time.Second

// Usage is what a store's budget last measured.
type Usage struct {
	// InUse is the largest DbSizeInUse that an etcd member reported, plus
	// what the store wrote since, over-estimated.
	InUse int64
	// Limit is the budget in force: Config.Budget, or 3/4 of the smallest
	// quota a member reported, whichever is less.
	Limit int64
	// MeasuredAt is when etcd last answered; zero before it ever did.
	MeasuredAt time.Time
}

// Usage returns the budget's last figures.
func (e *Store) Usage() Usage {
	b := e.budget
	b.mu.Lock()
	defer b.mu.Unlock()
	return Usage{InUse: b.inUse + b.wroteSince, Limit: b.limitLocked(), MeasuredAt: b.measuredAt}
}

func (b *budget) limitLocked() int64 {
	if b.quota > 0 {
		return min(b.limit, b.quota/4*3)
	}
	return b.limit
}

// check returns an error wrapping notes.ErrLimit when a note would take
// etcd past the budget.
func (b *budget) check(ctx context.Context) error {
	b.mu.Lock()
	age := time.Since(b.askedAt)
	over := b.inUse+b.wroteSince >= b.limitLocked()
	measure := !b.measuring && (age >= b.every || over && age >= b.every/10)
	if measure {
		b.measuring, b.askedAt = true, time.Now()
	}
	b.mu.Unlock()
	if measure {
		b.measure(ctx)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if used, limit := b.inUse+b.wroteSince, b.limitLocked(); used >= limit {
		return fmt.Errorf("the notes budget is full: etcd holds %d bytes of data, and notes are taken only below %d: %w", used, limit, notes.ErrLimit)
	}
	return nil
}

// measure asks every member its size, at once, and keeps the figures of
// those that answer. When none does, the last figures stay: the post then
// meets etcd's unavailability itself.
func (b *budget) measure(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	endpoints := b.cli.Endpoints()
	answers := make([]*clientv3.StatusResponse, len(endpoints))
	var wg sync.WaitGroup
	for i, ep := range endpoints {
		wg.Go(func() { answers[i], _ = b.cli.Status(ctx, ep) })
	}
	wg.Wait()

	var inUse, quota int64
	answered := false
	for _, a := range answers {
		if a == nil {
			continue
		}
		answered = true
		inUse = max(inUse, a.DbSizeInUse)
		if a.DbSizeQuota > 0 && (quota == 0 || a.DbSizeQuota < quota) {
			quota = a.DbSizeQuota
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.measuring = false
	if answered {
		b.inUse, b.quota, b.wroteSince, b.measuredAt = inUse, quota, 0, time.Now()
	}
}

// wrote counts a put of a key and value of n bytes in all. etcd keeps the
// key twice (in its index and its revision) beside the value, in pages
// that are never full: twice the bytes and a little more is an
// over-estimate of what a put adds.
func (b *budget) wrote(n int) {
	b.mu.Lock()
	b.wroteSince += int64(2*n + 128)
	b.mu.Unlock()
}
