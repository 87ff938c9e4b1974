package etcdnotes

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/routeguide/notes"
)

// legacyValueBytes bounds a note stored by an earlier release, for the
// page sizes: protojson escapes a control character into six bytes. Such a
// note costs its stored size in an answer when that is more than its Cost.
// The first page of them assumes the bound, the next the largest seen: a
// post reads at most about one answer's bytes of them, unless small ones
// are followed by larger ones (JSON after protobuf), at most six.
func legacyValueBytes(l notes.Limits) int { return 6*l.MessageBytes + notes.NoteOverhead }

// maxLegacyKeys bounds the keys of earlier releases a post reads from each
// range beside the sequenced one: the previous release's default
// --max-notes-per-location. Past it, a post answers with the newest of
// those it read, and its prunes shrink the location.
const maxLegacyKeys = 1000

// answer is where the reading of one answer stands, newest first. The keys
// come from etcd's index (keys-only ranges read no value): the sequenced
// ones page by page, those of earlier releases at once, merged by create
// revision. The values come from the store's cache, or from etcd in pages
// of what surely fits in the room left. It is read within the widest
// bounds that any store declares (bounds.go), and cut to the store's own.
type answer struct {
	e        *Store
	location string
	lat, lon int32
	rev      int64        // every read is at the revision of the post's write
	limits   notes.Limits // the widest declared at rev
	cut      cut          // what is left of limits
	full     bool         // a bound stopped the answer while older notes remain
	unsure   bool         // too many bounds are declared to know the widest: prune nothing
	taken    []takenNote  // newest first
	floor    string       // the location's floor at rev; "" for none, or not known

	sequenced     []*mvccpb.KeyValue // keys in hand, not yet taken
	nextSequenced string             // where the next page of keys starts; "" once read to the floor
	lastSequenced string             // the key of the oldest sequenced note taken
	legacy        []*mvccpb.KeyValue // keys of earlier releases, newest first, not yet taken
	legacySeen    int                // the largest value of theirs read
	values        map[string]*cachedNote
}

// takenNote is a note an answer took; nil for a value that is no note,
// which takes a note's place.
type takenNote struct {
	note *pb.RouteNote
	cost int
}

// readAnswer reads the answer to the note that r put, at its revision, down
// to the floor (rev 0: the current one, for a note put before at revision
// created: the notes of earlier releases created after it are newer, and
// left out).
// It fails rather than answer with less than the notes that fit: a cut
// answer would not be a prefix of later ones.
func (e *Store) readAnswer(ctx context.Context, location string, r putResult, lat, lon int32) (*answer, error) {
	key, rev, created := r.key, r.rev, r.created
	a := &answer{e: e, location: location, lat: lat, lon: lon, rev: rev, limits: e.cfg.Limits, cut: newCut(e.cfg.Limits),
		floor: r.floor, nextSequenced: key, values: make(map[string]*cachedNote)}
	// The first page is as long as the store's own bounds need; wider
	// declared ones read the rest page by page.
	limit := a.keysLimit()
	var resp *clientv3.TxnResponse
	var err error
	if r.page != nil {
		resp, err = r.page.read(ctx, e, location, rev, r.floor, limit)
	} else {
		resp, err = e.readFirstPage(ctx, location, key, rev, r.floor, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("read the first page at %s: %w", location, err)
	}
	if rev == 0 {
		// A note put before is answered from its key at the revision this
		// first read saw.
		a.rev = resp.Header.Revision
	}
	if declared := resp.Responses[1].GetResponseRange().Kvs; len(declared) <= maxDeclarations {
		a.limits = e.widest(e.cfg.Limits, declared)
	} else {
		// The widest bounds are unknown: the answer is the store's own,
		// and it prunes nothing.
		a.unsure = true
		e.tooManyBounds.Add(1)
		e.logSometimes.Do(func() {
			e.cfg.logger().Warn("more bounds declared than a post reads: notes are not pruned", "most", maxDeclarations, "prefix", e.boundsPrefix())
		})
	}
	a.cut = newCut(a.limits)
	first := resp.Responses[0].GetResponseRange()
	kvs, more := first.Kvs, first.More
	if r.page != nil {
		// The batch's page starts at its newest note: this answer's part
		// starts at its own.
		kvs = kvs[min(r.offset, len(kvs)):min(r.offset+int(limit), len(kvs))]
		more = first.More || len(first.Kvs) > r.offset+int(limit)
	}
	a.addSequenced(kvs, more)
	for _, r := range resp.Responses[2:] {
		if r.GetResponseRange().More {
			e.logSometimes.Do(func() {
				e.cfg.logger().Warn("more notes of an earlier release at a location than a post reads", "most", maxLegacyKeys, "location", location)
			})
		}
		for _, kv := range r.GetResponseRange().Kvs {
			if created == 0 || kv.CreateRevision < created {
				a.legacy = append(a.legacy, kv)
			}
		}
	}
	slices.SortFunc(a.legacy, func(x, y *mvccpb.KeyValue) int { return cmp.Compare(y.CreateRevision, x.CreateRevision) })
	for {
		kv, err := a.next(ctx)
		if err != nil {
			return nil, err
		}
		if kv == nil {
			return a, nil
		}
		if more, err := a.take(ctx, kv); err != nil || !more {
			return a, err
		}
	}
}

// readFirstPage reads, at revision rev, the first page of keys of an
// answer from the note under key, the bounds declared, and the keys of
// earlier releases, in one read-only transaction: no raft entry, not in
// the apply loop.
func (e *Store) readFirstPage(ctx context.Context, location, key string, rev int64, floor string, limit int64) (*clientv3.TxnResponse, error) {
	legacy := legacyRanges(location)
	return e.readAt(ctx, rev, func(at ...clientv3.OpOption) []clientv3.Op {
		return []clientv3.Op{
			clientv3.OpGet(key, append(at, clientv3.WithRange(floorEnd(location, floor)), clientv3.WithKeysOnly(), clientv3.WithLimit(limit))...),
			// Not keys-only: etcd's index knows no lease, and a declaration
			// must be on one. Their values are empty.
			clientv3.OpGet(e.boundsPrefix(), append(at, clientv3.WithPrefix(), clientv3.WithLimit(maxDeclarations+1))...),
			clientv3.OpGet(legacy[0][0], append(at, clientv3.WithRange(legacy[0][1]), clientv3.WithKeysOnly(), clientv3.WithLimit(maxLegacyKeys))...),
			clientv3.OpGet(legacy[1][0], append(at, clientv3.WithRange(legacy[1][1]), clientv3.WithKeysOnly(), clientv3.WithLimit(maxLegacyKeys))...),
		}
	})
}

// readAt sends the reads that ops builds with at, which names revision
// rev. They are serializable: a revision names one state, whichever
// member answers, and the member then needs no round of raft to confirm
// that it is current. A member that has not applied rev yet refuses them,
// and they go again linearizable, as do reads of the current revision
// (rev 0).
func (e *Store) readAt(ctx context.Context, rev int64, ops func(at ...clientv3.OpOption) []clientv3.Op) (*clientv3.TxnResponse, error) {
	if rev != 0 {
		resp, err := e.cli.Txn(ctx).Then(ops(clientv3.WithRev(rev), clientv3.WithSerializable())...).Commit()
		if !errors.Is(err, rpctypes.ErrFutureRev) {
			return resp, err
		}
		e.futureReads.Add(1)
	}
	return e.cli.Txn(ctx).Then(ops(clientv3.WithRev(rev))...).Commit()
}

// firstPage is the first page of keys of the answers of one batch, read
// once for all of them: every answer is read at the batch's revision, and
// each one's page is the part from its own note on.
type firstPage struct {
	once   sync.Once
	newest string // the key of the batch's newest note
	extra  int    // the batch's other notes, newer than its oldest
	resp   *clientv3.TxnResponse
	err    error
}

// read returns the batch's page, as long as the oldest note's answer needs
// and the newer notes of the batch more; the first post to ask reads it,
// within the store's Timeout, as the others wait for it.
func (p *firstPage) read(ctx context.Context, e *Store, location string, rev int64, floor string, limit int64) (*clientv3.TxnResponse, error) {
	p.once.Do(func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.cfg.Timeout)
		defer cancel()
		p.resp, p.err = e.readFirstPage(rctx, location, p.newest, rev, floor, limit+int64(p.extra))
	})
	return p.resp, p.err
}

// pageLimit is how many notes costing at most noteBytes surely fit in the
// room left, and within PerLocation.
func (a *answer) pageLimit(noteBytes int) int {
	return max(1, min(a.cut.room/noteBytes, a.cut.places))
}

// cut is what is left of an answer's bounds, newest note first: a note
// that does not fit ends the answer, and a value that is no note takes a
// note's place.
type cut struct {
	room, places int
}

func newCut(l notes.Limits) cut { return cut{room: l.AnswerBytes, places: l.PerLocation} }

// take reports whether the next value, a note of cost or none, fits, and
// takes it if so.
func (c *cut) take(note bool, cost int) bool {
	if c.places == 0 || note && cost > c.room {
		return false
	}
	if note {
		c.room -= cost
	}
	c.places--
	return true
}

// keysLimit is a page of keys: as many notes as the room left could hold
// if each had a message of MessageBytes, and one more, so that at a full
// location the note that no longer fits is in hand without another page.
func (a *answer) keysLimit() int64 {
	return int64(a.pageLimit(a.limits.MessageBytes+notes.NoteOverhead)) + 1
}

func (a *answer) addSequenced(kvs []*mvccpb.KeyValue, more bool) {
	a.sequenced = append(a.sequenced, kvs...)
	a.nextSequenced = ""
	if more && len(kvs) > 0 {
		a.nextSequenced = string(kvs[len(kvs)-1].Key) + "\x00"
	}
}

// next returns the key of the newest note not taken yet, reading a page of
// keys when none is in hand; nil when all are taken.
func (a *answer) next(ctx context.Context) (*mvccpb.KeyValue, error) {
	if len(a.sequenced) == 0 && a.nextSequenced != "" {
		resp, err := a.e.readAt(ctx, a.rev, func(at ...clientv3.OpOption) []clientv3.Op {
			return []clientv3.Op{clientv3.OpGet(a.nextSequenced, append(at, clientv3.WithRange(floorEnd(a.location, a.floor)),
				clientv3.WithKeysOnly(), clientv3.WithLimit(a.keysLimit()))...)}
		})
		if err != nil {
			return nil, fmt.Errorf("read a page of notes at %s from %q: %w", a.location, a.nextSequenced, err)
		}
		page := resp.Responses[0].GetResponseRange()
		a.addSequenced(page.Kvs, page.More)
	}
	switch {
	case len(a.sequenced) == 0 && len(a.legacy) == 0:
		return nil, nil
	case len(a.legacy) == 0 || len(a.sequenced) > 0 && a.sequenced[0].CreateRevision > a.legacy[0].CreateRevision:
		kv := a.sequenced[0]
		a.sequenced = a.sequenced[1:]
		return kv, nil
	default:
		kv := a.legacy[0]
		a.legacy = a.legacy[1:]
		return kv, nil
	}
}

// value returns the note under kv's key, from the cache or from etcd. A
// value it reads brings along those of the next keys in hand of the same
// kind that the cache lacks, as many as surely fit in the room left.
func (a *answer) value(ctx context.Context, kv *mvccpb.KeyValue) (*cachedNote, error) {
	if v := a.values[string(kv.Key)]; v != nil {
		return v, nil
	}
	if v := a.e.cache.get(kv); v != nil {
		return v, nil
	}
	batch, bound := []*mvccpb.KeyValue{kv}, a.limits.MessageBytes+notes.NoteOverhead
	following := a.sequenced
	if _, ok := seqOf(a.location, kv.Key); !ok {
		// The first page of them assumes the worst; the next ones, the
		// largest seen, so that a location of protobuf notes takes as few
		// round trips as ours.
		following, bound = a.legacy, legacyValueBytes(a.limits)
		if a.legacySeen > 0 {
			bound = max(bound/6, a.legacySeen+notes.NoteOverhead)
		}
	}
	for _, k := range following {
		if len(batch) >= min(a.pageLimit(bound), maxBatch) {
			break
		}
		if a.e.cache.get(k) == nil {
			batch = append(batch, k)
		}
	}
	resp, err := a.e.readAt(ctx, a.rev, func(at ...clientv3.OpOption) []clientv3.Op {
		ops := make([]clientv3.Op, len(batch))
		for i, k := range batch {
			ops[i] = clientv3.OpGet(string(k.Key), at...)
		}
		return ops
	})
	if err != nil {
		return nil, fmt.Errorf("read %d notes at %s: %w", len(batch), a.location, err)
	}
	for _, r := range resp.Responses {
		for _, got := range r.GetResponseRange().Kvs {
			a.values[string(got.Key)] = a.e.cache.put(got, a.lat, a.lon)
			if _, ok := seqOf(a.location, got.Key); !ok {
				a.legacySeen = max(a.legacySeen, len(got.Value))
			}
		}
	}
	v := a.values[string(kv.Key)]
	if v == nil {
		return nil, fmt.Errorf("read note %s at revision %d: etcd has no such key", kv.Key, a.rev)
	}
	return v, nil
}

// take adds the note under kv's key to the answer unless a bound stops it,
// and reports whether the answer takes more.
func (a *answer) take(ctx context.Context, kv *mvccpb.KeyValue) (bool, error) {
	v, err := a.value(ctx, kv)
	if err != nil {
		return false, err
	}
	if !a.cut.take(v.note != nil, v.cost) {
		a.full = true
		if _, ok := seqOf(a.location, kv.Key); !ok {
			a.legacy = append([]*mvccpb.KeyValue{kv}, a.legacy...)
		}
		return false, nil
	}
	if v.note == nil {
		// It takes a note's place, until pruned.
		a.e.skipped.Add(1)
	}
	a.taken = append(a.taken, takenNote{v.note, v.cost})
	if _, ok := seqOf(a.location, kv.Key); ok {
		a.lastSequenced = string(kv.Key)
	}
	if a.cut.places == 0 {
		a.full = len(a.sequenced) > 0 || a.nextSequenced != "" || len(a.legacy) > 0
		return false, nil
	}
	return true, nil
}

// notes are the answer's notes within the store's own bounds, oldest
// first: the newest of those taken, cut as take cuts.
func (a *answer) notes() []*pb.RouteNote {
	own := newCut(a.e.cfg.Limits)
	var out []*pb.RouteNote
	for _, t := range a.taken {
		if !own.take(t.note != nil, t.cost) {
			break
		}
		if t.note != nil {
			out = append(out, t.note)
		}
	}
	slices.Reverse(out)
	return out
}

// sequencedPrune is the prune of the sequenced notes that the answer left
// out; nil when it took none (notes of earlier releases filled it: nothing
// marks where to prune from), or took the floor.
func (a *answer) sequencedPrune() *prune {
	if a.lastSequenced == "" || a.lastSequenced == a.floor {
		return nil
	}
	return &prune{after: a.lastSequenced, floor: a.floor, rev: a.rev}
}

// legacyLeftOut are the keys of the notes of earlier releases that the
// answer left out.
func (a *answer) legacyLeftOut() []string {
	keys := make([]string, len(a.legacy))
	for i, kv := range a.legacy {
		keys[i] = string(kv.Key)
	}
	return keys
}
