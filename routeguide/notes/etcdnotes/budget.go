package etcdnotes

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/routeguide-cluster/routeguide/routeguide/notes"
)

// budget refuses notes before etcd fills up. etcd refuses every write once
// its database file reaches --quota-backend-bytes (NOSPACE), the registry's
// leases and keys too, and stays so until an operator acts; notes from any
// number of clients must never take it there.
//
// Its measure is etcd's own: the maintenance Status of the members, asked
// at most every BudgetCheck and only while notes are posted, over the
// store's own connection (one member per ask, in turn, as the client
// balances; each member's last figures are kept). A member counts the
// larger of its file's size, which etcd's quota checks and which a
// compaction does not shrink (a defragmentation does), and the data in use
// plus an over-estimate of what this store wrote since. Near the limit it
// measures again before it refuses, so that a burst is caught early and a
// freed etcd is seen soon. While no member answers, what the store writes
// is counted up to unmeasuredAllowance and then refused: the budget never
// lets etcd grow unseen by more than that, and never refuses for longer
// than etcd stays unable to answer.
type budget struct {
	status statusFunc
	limit  int64
	every  time.Duration

	mu         sync.Mutex
	measuring  bool      // one post measures; the others use the last figures
	askedAt    time.Time // when the last measurement started
	measuredAt time.Time // when a member last answered; zero until one does
	members    map[uint64]memberSize
	wroteSince int64 // what this store wrote since the last answer, over-estimated
}

// memberSize is what a member last reported.
type memberSize struct {
	file, inUse, quota int64
	at                 time.Time
}

// statusFunc asks one member, of the client's choosing, its status.
type statusFunc func(ctx context.Context) (*etcdserverpb.StatusResponse, error)

// memberStale is how many checks a member's figures count for after it
// last answered: a member that left the cluster stops counting.
const memberStale = 20

func newBudget(cli *clientv3.Client, limit int64, every time.Duration) *budget {
	maintenance := etcdserverpb.NewMaintenanceClient(cli.ActiveConnection())
	status := func(ctx context.Context) (*etcdserverpb.StatusResponse, error) {
		return maintenance.Status(ctx, &etcdserverpb.StatusRequest{})
	}
	return &budget{status: status, limit: limit, every: every, members: make(map[uint64]memberSize)}
}

// statusTimeout bounds one Status call.
const statusTimeout = time.Second

// Usage is what a store's budget last measured.
type Usage struct {
	// InUse is the largest size an etcd member reported (its file, or its
	// data in use plus what the store wrote since, whichever is more).
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
	return Usage{InUse: b.usedLocked(), Limit: b.limitLocked(), MeasuredAt: b.measuredAt}
}

func (b *budget) usedLocked() int64 {
	used := b.wroteSince
	for _, m := range b.members {
		used = max(used, m.file, m.inUse+b.wroteSince)
	}
	return used
}

func (b *budget) limitLocked() int64 {
	limit := b.limit
	for _, m := range b.members {
		if m.quota > 0 {
			limit = min(limit, m.quota/4*3)
		}
	}
	return limit
}

// unmeasuredAllowance is what a store may write while no member answers.
func (b *budget) unmeasuredAllowance() int64 { return b.limit / 16 }

// check returns an error wrapping notes.ErrLimit when a note would take
// etcd past the budget.
func (b *budget) check(ctx context.Context) error {
	b.mu.Lock()
	age := time.Since(b.askedAt)
	over := b.usedLocked() >= b.limitLocked()
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
	if used, limit := b.usedLocked(), b.limitLocked(); used >= limit {
		return fmt.Errorf("the notes budget is full: etcd holds %d bytes of data, and notes are taken only below %d: %w", used, limit, notes.ErrLimit)
	}
	if b.measuredAt.IsZero() || time.Since(b.measuredAt) > memberStale*b.every {
		if b.wroteSince >= b.unmeasuredAllowance() {
			return fmt.Errorf("the notes budget cannot be measured (etcd's Status has not answered since %v) and %d bytes were written unmeasured: %w",
				b.measuredAt.Format(time.RFC3339), b.wroteSince, notes.ErrLimit)
		}
	}
	return nil
}

// measure asks one member its size and keeps its figures. When it does not
// answer, the others' stay, and the writes since count on.
func (b *budget) measure(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	answer, err := b.status(ctx)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.measuring = false
	if err != nil {
		return
	}
	now := time.Now()
	b.members[answer.GetHeader().GetMemberId()] = memberSize{file: answer.DbSize, inUse: answer.DbSizeInUse, quota: answer.DbSizeQuota, at: now}
	for id, m := range b.members {
		if now.Sub(m.at) > memberStale*b.every {
			delete(b.members, id)
		}
	}
	b.wroteSince, b.measuredAt = 0, now
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
