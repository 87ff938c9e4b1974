// Package etcdnotes keeps RouteChat's notes in etcd, shared by every node
// of a cluster: a note posted through one node is in the answers of all.
package etcdnotes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/routeguide/notes"
)

// Config configures a Store. Every node of a cluster must use the
// same Prefix to share its notes; the other fields may differ from node to
// node: each store answers within its own Limits, and keeps what the
// widest Limits of any store answer with (bounds.go).
type Config struct {
	// Prefix is the etcd key prefix under which every note is kept, as
	// <Prefix><latitude>,<longitude>/~<sequence>, with each location's
	// floor (layout.go), the notes' ids and the stores' bounds beside them.
	// It must end with "/".
	Prefix string
	// Limits bound a location and one answer: PerLocation, MessageBytes and
	// AnswerBytes are required. A post reads no more than AnswerBytes and
	// one note of values from etcd (see readAnswer), and deletes the notes
	// that no answer could carry; with stores of wider Limits on the same
	// etcd, no more than theirs. Bytes and DropOldest are the Memory store's.
	Limits notes.Limits
	// MaxAge is how long a note is kept. A note expires between MaxAge and
	// MaxAge*(1+1/LeaseBuckets)+1s after it is posted (see docs/DESIGN.md). At least
	// 1s, as etcd leases count whole seconds. etcd raises a TTL below its own
	// minimum (about 1.5 election timeouts, 2s by default) to that minimum,
	// so a MaxAge of a second or two lasts a little longer.
	MaxAge time.Duration
	// Timeout bounds the etcd work of one Post. When it passes while the
	// caller still waits, Post fails with notes.ErrUnavailable: a chat stream has
	// no deadline, and without this bound it would hang for as long as etcd
	// is down.
	Timeout time.Duration
	// Budget is how much data etcd may hold while notes are posted: a post
	// is refused with notes.ErrLimit once the largest DbSizeInUse that any
	// member reports reaches it (see budget.go), so that the notes never
	// take etcd to its quota, where it refuses every write, the registry's
	// too. Never more than 3/4 of the quota a member reports is used.
	Budget int64
	// BudgetCheck is how often, at most, a Store asks etcd its size while
	// notes are posted.
	BudgetCheck time.Duration
	// WriteRate is how many notes per second a Store writes to etcd at
	// most, a tenth of a second's worth at once after a pause: a post past
	// it waits its turn, and fails with notes.ErrWriteRate at once when its
	// turn would come after its deadline or Timeout. It keeps the posts of
	// a node's clients from taking the etcd member that the registry's
	// writes need too (docs/DESIGN.md, "RouteChat in etcd"); etcd takes at
	// most WriteRate times MessageBytes a second from a node.
	WriteRate int
	// CacheBytes bounds the notes a Store keeps in memory once read, so
	// that a post reads from etcd only the keys of its answer and the
	// values it has not seen (see cache.go). Zero keeps none.
	CacheBytes int64
	// Logger receives what the store skips, at most one record a minute;
	// nil means slog.Default().
	Logger *slog.Logger
}

func (c Config) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.Default()
	}
	return c.Logger
}

// DefaultConfig is the configuration of a cluster node's store when no
// flag changes it.
func DefaultConfig() Config {
	return Config{
		Prefix:      "routeguide-notes/",
		Limits:      notes.DefaultLimits(),
		MaxAge:      24 * time.Hour,
		Timeout:     5 * time.Second,
		Budget:      DefaultBudget,
		BudgetCheck: time.Second,
		CacheBytes:  DefaultCacheBytes,
		WriteRate:   DefaultWriteRate,
	}
}

// DefaultWriteRate is the notes per second a node writes to etcd at most:
// what an etcd member on two shared cores took beside the registry's writes
// (docs/BENCHMARKS.md, "RouteChat in etcd"). A member with cores and disks of
// its own takes more.
const DefaultWriteRate = 100

// DefaultBudget is a quarter of etcd's default quota (--quota-backend-bytes,
// 2 GiB): the registry, etcd's history and a burst of notes between two
// measurements keep the rest.
const DefaultBudget = 512 << 20

// DefaultCacheBytes holds a full answer of 1 MiB at 32 locations.
const DefaultCacheBytes = 32 << 20

// MaxMessageBytesLimit is the largest Limits.MessageBytes. It keeps one post
// far below etcd's default request size limit of 1.5 MiB.
const MaxMessageBytesLimit = 200 << 10

// MaxPerLocation and MaxAnswerBytesLimit are the largest Limits.PerLocation
// and Limits.AnswerBytes, declared ones too (bounds.go): what one post may
// read from etcd whatever a store declares. MaxAnswerBytesLimit is gRPC's
// default largest message a client receives.
const (
	MaxPerLocation      = 10_000
	MaxAnswerBytesLimit = 4 << 20
)

// LimitError is a bound of notes.Limits that a store cannot take.
type LimitError struct {
	Field   string // PerLocation, MessageBytes or AnswerBytes
	Problem string
}

func (e *LimitError) Error() string { return "Limits." + e.Field + " " + e.Problem }

// CheckLimits reports the first bound of l that a store cannot take: the
// one check of a store's Config, of a node's flags and of every bounds
// another store declares.
func CheckLimits(l notes.Limits) error {
	switch {
	case l.PerLocation < 1 || l.PerLocation > MaxPerLocation:
		return &LimitError{"PerLocation", fmt.Sprintf("%d is not between 1 and %d", l.PerLocation, MaxPerLocation)}
	case l.MessageBytes < 1 || l.MessageBytes > MaxMessageBytesLimit:
		return &LimitError{"MessageBytes", fmt.Sprintf("%d is not between 1 and %d", l.MessageBytes, MaxMessageBytesLimit)}
	case l.AnswerBytes < l.MessageBytes+notes.NoteOverhead || l.AnswerBytes > MaxAnswerBytesLimit:
		return &LimitError{"AnswerBytes", fmt.Sprintf("%d is not between one note of the largest message (%d with its overhead) and %d",
			l.AnswerBytes, l.MessageBytes+notes.NoteOverhead, MaxAnswerBytesLimit)}
	}
	return nil
}

// Validate reports the first problem with c, naming the field at fault.
func (c Config) Validate() error {
	if err := CheckLimits(c.Limits); err != nil {
		return fmt.Errorf("notes etcd config: %w", err)
	}
	switch {
	case c.Prefix == "" || !strings.HasSuffix(c.Prefix, "/"):
		return fmt.Errorf("notes etcd config: Prefix %q must be non-empty and end with \"/\"", c.Prefix)
	case c.MaxAge < time.Second:
		return fmt.Errorf("notes etcd config: MaxAge %v must be at least 1s, as etcd leases count whole seconds", c.MaxAge)
	case c.Timeout <= 0:
		return fmt.Errorf("notes etcd config: Timeout %v must be positive", c.Timeout)
	case c.Budget <= 0:
		return fmt.Errorf("notes etcd config: Budget %d must be positive", c.Budget)
	case c.BudgetCheck <= 0:
		return fmt.Errorf("notes etcd config: BudgetCheck %v must be positive", c.BudgetCheck)
	case c.CacheBytes < 0:
		return fmt.Errorf("notes etcd config: CacheBytes %d must not be negative", c.CacheBytes)
	case c.WriteRate < 1:
		return fmt.Errorf("notes etcd config: WriteRate %d must be at least 1", c.WriteRate)
	}
	return nil
}

// LeaseBuckets is how many leases a Store grants per MaxAge: notes
// posted within the same MaxAge/LeaseBuckets of the clock share one lease,
// so a busy node grants a lease every MaxAge/8 instead of one per note.
const LeaseBuckets = 8

// pruneBatch is how many deletes go into one transaction, below etcd's
// default limit of 128 operations per transaction.
const pruneBatch = 100

// Stats counts what a Store met that its callers do not see.
type Stats struct {
	// Skipped counts values under the prefix that did not decode as a note
	// of their location, each time a post read one. They are left out of
	// answers, where they take the place of a note until pruned.
	Skipped uint64
	// PruneFailures counts posts after which deleting the notes of earlier
	// releases beyond the bounds failed. The post itself succeeded; a later
	// post at the location deletes them. The newer notes' prune rides with
	// the next put there, and fails only with it.
	PruneFailures uint64
	// UnreadAnswers counts posts whose note was stored but whose answer
	// could not be read whole: the post failed with ErrUnavailable rather
	// than answer with part of it.
	UnreadAnswers uint64
	// BadBounds counts keys under the bounds that declare no bounds a store
	// could have (bounds.go), each time a post read one. They widen nothing.
	BadBounds uint64
	// BadFloors counts floors that were no note key of their location, and
	// were deleted.
	BadFloors uint64
	// TooManyBounds counts posts that found more declarations than they
	// read: each answered within the store's own Limits and pruned nothing.
	TooManyBounds uint64
	// PrunesRefused counts prunes that etcd refused because bounds were
	// declared after their answer; a later post prunes again.
	PrunesRefused uint64
	// FutureReads counts reads of an answer that a member refused, not
	// having applied the post's revision yet, and that went again
	// linearizable (see readAt).
	FutureReads uint64
}

// Store is a notes.Store in etcd, shared by every node that uses the same Prefix:
// a note posted through one node is in the answers of all of them, in one
// posting order: keys whose plain order is the answer's, each answer read at
// the revision of its put (layout.go, answer.go). It starts no goroutine;
// the caller closes the client after the last Post. See docs/DESIGN.md,
// "The notes store: order, retention and encoding" and "RouteChat in etcd".
type Store struct {
	cli    *clientv3.Client
	cfg    Config
	budget *budget

	skipped       atomic.Uint64
	pruneFailures atomic.Uint64
	unreadAnswers atomic.Uint64
	badBounds     atomic.Uint64
	badFloors     atomic.Uint64
	tooManyBounds atomic.Uint64
	prunesRefused atomic.Uint64
	futureReads   atomic.Uint64
	logSometimes  rate.Sometimes // one record a minute of what is skipped

	// grant is held, as a one-slot semaphore that a waiter can leave when
	// its context ends, by the one Post that grants the next lease, so that
	// concurrent posts at a bucket's end grant one lease and not one each.
	grant chan struct{}
	rate  *rate.Limiter // of notes written
	turns turns
	cache *cache
	now   func() time.Time // the clock of the lease buckets
	mu    sync.Mutex       // guards lease and leaseUntil
	lease clientv3.LeaseID
	// leaseUntil is when the current lease stops taking new notes.
	leaseUntil time.Time
}

// New returns a store that keeps notes in etcd through cli.
func New(cli *clientv3.Client, cfg Config) (*Store, error) {
	if cli == nil {
		return nil, errors.New("notes etcd store: no etcd client")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Store{cli: cli, cfg: cfg, budget: newBudget(cli, cfg.Budget, cfg.BudgetCheck), grant: make(chan struct{}, 1),
		rate: rate.NewLimiter(rate.Limit(cfg.WriteRate), max(1, cfg.WriteRate/10)), cache: newCache(cfg.CacheBytes), now: time.Now,
		logSometimes: rate.Sometimes{Interval: time.Minute}}, nil
}

// Stats returns the store's counters since it was made.
func (e *Store) Stats() Stats {
	return Stats{Skipped: e.skipped.Load(), PruneFailures: e.pruneFailures.Load(), UnreadAnswers: e.unreadAnswers.Load(),
		BadBounds: e.badBounds.Load(), BadFloors: e.badFloors.Load(), TooManyBounds: e.tooManyBounds.Load(), PrunesRefused: e.prunesRefused.Load(),
		FutureReads: e.futureReads.Load()}
}

// LocationPrefix is the etcd key prefix of the notes at a location.
func (e *Store) LocationPrefix(lat, lon int32) string {
	return fmt.Sprintf("%s%d,%d/", e.cfg.Prefix, lat, lon)
}

// Post implements notes.Store. When etcd commits a note but its answer is
// lost (the connection drops, the timeout passes), Post reports
// ErrUnavailable although the note is stored; a client that posts it again
// stores it twice, unless both posts carry its id (notes.WithNoteID).
func (e *Store) Post(ctx context.Context, note *pb.RouteNote) ([]*pb.RouteNote, error) {
	lat, lon := note.GetLocation().GetLatitude(), note.GetLocation().GetLongitude()
	if len(note.GetMessage()) > e.cfg.Limits.MessageBytes {
		return nil, fmt.Errorf("a note's message may have at most %d bytes: %w", e.cfg.Limits.MessageBytes, notes.ErrNoteTooLarge)
	}
	// Only the location and the message are stored: unknown fields of the
	// received message must not reach the other clients.
	value, err := proto.Marshal(&pb.RouteNote{Location: &pb.Point{Latitude: lat, Longitude: lon}, Message: note.GetMessage()})
	if err != nil {
		return nil, fmt.Errorf("store note: encode: %w", err)
	}
	opCtx, cancel := context.WithTimeout(ctx, e.cfg.Timeout)
	defer cancel()
	if err := e.budget.check(opCtx); err != nil {
		return nil, err
	}
	// Posts wait their turn in arrival order; a turn past the deadline is
	// refused at once, without waiting for it.
	if err := e.rate.Wait(opCtx); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("store note in etcd: %w", ctx.Err())
		}
		return nil, fmt.Errorf("the node writes at most %d notes a second to etcd, and this one's turn would come after its deadline: %w", e.cfg.WriteRate, notes.ErrWriteRate)
	}
	answer, err := e.post(opCtx, lat, lon, value)
	if err != nil {
		return nil, e.postError(ctx, err)
	}
	return answer, nil
}

// post stores value at the location and returns the notes there, retrying
// once with a new lease when the current one is gone.
func (e *Store) post(ctx context.Context, lat, lon int32, value []byte) ([]*pb.RouteNote, error) {
	for attempt := 0; ; attempt++ {
		lease, err := e.currentLease(ctx)
		if err != nil {
			return nil, err
		}
		answer, err := e.putAndRead(ctx, lat, lon, value, lease)
		// A lease vanishes when it was revoked, or expired while this node
		// still used it (its clock ran slow, or etcd was away long enough).
		if errors.Is(err, rpctypes.ErrLeaseNotFound) && attempt == 0 {
			e.forgetLease(lease)
			continue
		}
		return answer, err
	}
}

// putAndRead puts the note and reads its answer at the revision of the
// put; the next put at the location prunes what the answer left out.
func (e *Store) putAndRead(ctx context.Context, lat, lon int32, value []byte, lease clientv3.LeaseID) ([]*pb.RouteNote, error) {
	location := e.LocationPrefix(lat, lon)
	p := &pendingPut{value: string(value), lat: lat, lon: lon, lease: lease, done: make(chan putResult, 1)}
	if id := notes.NoteID(ctx); id != "" {
		p.idKey = fmt.Sprintf("%sids/%d,%d/%s", e.cfg.Prefix, lat, lon, id)
	}
	turn := e.turns.join(location, p)
	a, err := e.putAndReadInTurn(ctx, turn, p, lat, lon)
	var asked *prune
	if err == nil && a.full && !a.unsure {
		// Only while no store declared wider bounds since (bounds.go).
		asked = a.sequencedPrune()
	}
	e.turns.leave(turn, asked)
	if err != nil {
		return nil, err
	}
	if a.full && !a.unsure {
		if err := e.delete(ctx, location, a.legacyLeftOut(), a.rev); err != nil {
			e.pruneFailures.Add(1)
		}
	}
	return a.notes(), nil
}

func (e *Store) putAndReadInTurn(ctx context.Context, turn *turn, p *pendingPut, lat, lon int32) (*answer, error) {
	r := e.put(ctx, turn, p)
	if r.err != nil {
		return nil, r.err
	}
	if r.rev != 0 {
		e.budget.wrote(len(r.key) + len(p.value) + len(p.idKey)*2)
	}
	a, err := e.readAnswer(ctx, turn.location, r, lat, lon)
	if err != nil {
		e.unreadAnswers.Add(1)
		return nil, fmt.Errorf("note %s is stored, but its answer could not be read: %w", r.key, err)
	}
	return a, nil
}

// delete deletes keys, which an answer at rev left out, in transactions of
// pruneBatch.
func (e *Store) delete(ctx context.Context, location string, keys []string, rev int64) error {
	for batch := range slices.Chunk(keys, pruneBatch) {
		deletes := make([]clientv3.Op, len(batch))
		for i, k := range batch {
			deletes[i] = clientv3.OpDelete(k)
		}
		resp, err := e.cli.Txn(ctx).If(e.boundsUnchangedSince(rev)).Then(deletes...).Commit()
		if err != nil {
			return fmt.Errorf("prune %d notes at %s: %w", len(deletes), location, err)
		}
		if !resp.Succeeded {
			e.prunesRefused.Add(1)
		}
	}
	return nil
}

// decodeNote returns the note that value holds, if it is one at (lat, lon).
// Nodes before the protobuf encoding stored notes as JSON; those are read
// too, until they expire.
func decodeNote(value []byte, lat, lon int32) (*pb.RouteNote, bool) {
	n := new(pb.RouteNote)
	if err := proto.Unmarshal(value, n); err != nil || n.Location == nil {
		if (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(value, n) != nil {
			return nil, false
		}
	}
	if n.Location == nil || n.Location.Latitude != lat || n.Location.Longitude != lon {
		return nil, false
	}
	return n, true
}

// currentLease returns the lease for a note posted now, granting the next
// one when the current bucket is over.
func (e *Store) currentLease(ctx context.Context) (clientv3.LeaseID, error) {
	if lease, ok := e.usableLease(); ok {
		return lease, nil
	}
	select {
	case e.grant <- struct{}{}:
	case <-ctx.Done():
		return 0, fmt.Errorf("wait for a lease: %w", ctx.Err())
	}
	defer func() { <-e.grant }()
	// Another post may have granted it while this one waited.
	if lease, ok := e.usableLease(); ok {
		return lease, nil
	}
	bucket := e.cfg.MaxAge / LeaseBuckets
	// It takes notes until the clock's bucket ends, the same for every
	// store, so later notes expire later (docs/DESIGN.md, "The notes store").
	start := e.now()
	ttl := int64((e.cfg.MaxAge + bucket + time.Second - 1) / time.Second)
	resp, err := e.cli.Grant(ctx, ttl)
	if err != nil {
		return 0, fmt.Errorf("grant a lease of %ds for notes: %w", ttl, err)
	}
	// Before any note is on it: the declaration lasts as long as its notes.
	if err := e.declare(ctx, resp.ID, ttl); err != nil {
		return 0, err
	}
	e.mu.Lock()
	e.lease, e.leaseUntil = resp.ID, start.Truncate(bucket).Add(bucket)
	e.mu.Unlock()
	return resp.ID, nil
}

func (e *Store) usableLease() (clientv3.LeaseID, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.lease, e.lease != 0 && e.now().Before(e.leaseUntil)
}

// forgetLease drops lease if it is still the current one, so that the next
// post grants another.
func (e *Store) forgetLease(lease clientv3.LeaseID) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.lease == lease {
		e.lease, e.leaseUntil = 0, time.Time{}
	}
}

// postError says why a post failed in the terms of the Store contract: the
// caller's own context, a bound of etcd (notes.ErrLimit), or etcd unreachable
// (notes.ErrUnavailable).
func (e *Store) postError(ctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("store note in etcd: %w", ctx.Err())
	case errors.Is(err, rpctypes.ErrNoSpace), errors.Is(err, rpctypes.ErrRequestTooLarge):
		return fmt.Errorf("store note in etcd: %w: %w", notes.ErrLimit, err)
	default:
		return fmt.Errorf("store note in etcd (within %v): %w: %w", e.cfg.Timeout, notes.ErrUnavailable, err)
	}
}
