package etcdnotes

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The key layout (docs/DESIGN.md, "RouteChat in etcd"): a note is kept
// under <location>~<16 hex digits of MaxUint64 minus its sequence number>,
// so that plain key order is newest first and a Range with a limit reads
// exactly one page. etcd drops the limit of a sorted or revision-filtered
// Range and reads the whole range instead.
const sequencedMark = "~"

// Notes of earlier releases sit under <location><32 hex digits>, in no
// order: legacyRanges holds them, around the sequenced range.
const sequencedEnd = "\x7f"

func noteKey(location string, seq uint64) string {
	return fmt.Sprintf("%s%s%016x", location, sequencedMark, math.MaxUint64-seq)
}

// seqOf is the sequence number of a note key at location; ok is false for
// a key of another layout.
func seqOf(location string, key []byte) (seq uint64, ok bool) {
	rest, found := strings.CutPrefix(string(key), location+sequencedMark)
	if !found || len(rest) != 16 {
		return 0, false
	}
	inverted, err := strconv.ParseUint(rest, 16, 64)
	if err != nil {
		return 0, false
	}
	return math.MaxUint64 - inverted, true
}

// floorOf checks a floor read from etcd: the key of a note of location,
// numbered below what any location reaches. Anything else (written by
// hand, or by a hostile writer) would stretch ranges beyond the location
// or make its numbers wrap.
func floorOf(location string, floor []byte) (seq uint64, ok bool) {
	seq, ok = seqOf(location, floor)
	return seq, ok && seq < math.MaxUint64/2
}

// badFloor counts and logs a floor that floorOf refused, and deletes it.
func (e *Store) badFloor(ctx context.Context, location, floorKey, floor string) {
	e.badFloors.Add(1)
	e.logSometimes.Do(func() {
		e.cfg.logger().Warn("deleted a floor that is no note key of its location", "location", location, "floor", floor)
	})
	e.dropFloor(ctx, floorKey, floor)
}

// sequencedRange is where the sequenced notes of location are, newest first.
func sequencedRange(location string) (start, end string) {
	return location + sequencedMark, location + sequencedEnd
}

// legacyRanges are the parts of location outside the sequenced range.
func legacyRanges(location string) [2][2]string {
	return [2][2]string{
		{location, location + sequencedMark},
		{location + sequencedEnd, clientv3.GetPrefixRangeEnd(location)},
	}
}

// maxPutAttempts bounds the puts of one batch that lose to another node
// posting at the same location at the same time.
const maxPutAttempts = 16

// A batch of puts is at most maxBatch notes (etcd takes 128 operations in
// one transaction by default) of at most maxBatchBytes together (and 1.5
// MiB in one request).
const (
	maxBatch      = 100
	maxBatchBytes = 1 << 20
	// maxBatchOps is etcd's default of 128 operations in a transaction's
	// branch, less the prune that may ride with the puts and the read of
	// the floor.
	maxBatchOps = 126
)

// A location's floor is the key of the oldest note it keeps: the prune
// that sets it deletes every older note in the same transaction (see
// pruneOps), so that no note is ever older. Every range a post sends ends
// there: etcd walks its index over the whole range of a Range to count it,
// whatever the limit, and a deleted key stays in the index until etcd
// compacts its history (docs/DESIGN.md, "RouteChat in etcd"). It is kept
// beside the notes, outside the location's keys: <prefix>floors/<lat>,<lon>/.
func (e *Store) floorKey(location string) string {
	return e.cfg.Prefix + "floors/" + strings.TrimPrefix(location, e.cfg.Prefix)
}

// floorEnd is where the ranges of location end: after its floor, or at
// the end of the sequenced notes when it has none.
func floorEnd(location, floor string) string {
	_, end := sequencedRange(location)
	if floor == "" {
		return end
	}
	return min(floor+"\x00", end)
}

// prune is what an answer at rev left out: the sequenced notes older than
// after, down to the floor that the answer saw.
type prune struct {
	after, floor string
	rev          int64
}

// pruneOp deletes the notes older than p.after and makes p.after the
// floor, unless a store declared bounds since p's answer (bounds.go), or
// another prune moved the floor; then a later answer prunes again. Its
// transaction succeeds when the bounds allowed it.
func (e *Store) pruneOp(location, floorKey string, p prune, lease clientv3.LeaseID) clientv3.Op {
	floorUnmoved := clientv3.Compare(clientv3.Value(floorKey), "=", p.floor)
	if p.floor == "" {
		// Without a floor, the first prune walks the location's history
		// once.
		floorUnmoved = clientv3.Compare(clientv3.CreateRevision(floorKey), "=", 0)
	}
	return clientv3.OpTxn([]clientv3.Cmp{e.boundsUnchangedSince(p.rev)}, []clientv3.Op{
		clientv3.OpTxn([]clientv3.Cmp{floorUnmoved}, []clientv3.Op{
			clientv3.OpDelete(p.after+"\x00", clientv3.WithRange(floorEnd(location, p.floor))),
			clientv3.OpPut(floorKey, p.after, clientv3.WithLease(lease)),
		}, nil),
	}, nil)
}

// putOps is the operations p takes in a batch's transaction: its note, and
// its id.
func putOps(p *pendingPut) int {
	if p.idKey != "" {
		return 2
	}
	return 1
}

// pendingPut is a note waiting to be put at its location.
type pendingPut struct {
	value    string
	lat, lon int32
	lease    clientv3.LeaseID
	idKey    string         // where the client's note id is kept; "" without one
	done     chan putResult // gets the result once, from whichever post put it
}

// putResult is where a note was put, at which revision, and the floor of
// its location then; rev is 0 for a note whose id was put before, under
// key, at revision created.
type putResult struct {
	key          string
	rev, created int64
	floor        string
	// page is read once for the batch's answers, where this note's part
	// starts at offset; nil for a note put before.
	page   *firstPage
	offset int
	err    error
}

// put stores value under the next sequence number at location and returns
// its key and the revision of the write. The comparison (no note at or
// after the key in key order) makes sequence order the commit order,
// whichever nodes post. The node's own posts at a location take turns:
// the post whose turn it is puts every note waiting there in one
// transaction (a group commit), so a busy location costs one raft entry per
// batch, and only other nodes' posts make a put try again.
func (e *Store) put(ctx context.Context, turn *turn, p *pendingPut) putResult {
	location := turn.location
	for {
		select {
		case r := <-p.done:
			return r
		case turn.token <- struct{}{}:
			if batch := e.turns.takeBatch(turn); len(batch) == 1 && batch[0] == p {
				e.putBatch(ctx, turn, batch)
			} else if len(batch) > 0 {
				// The batch is the others' too: it ends with the store's
				// Timeout, not with this caller's context.
				bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.cfg.Timeout)
				e.putBatch(bctx, turn, batch)
				cancel()
			}
			<-turn.token
		case <-ctx.Done():
			if e.turns.withdraw(turn, p) {
				return putResult{err: fmt.Errorf("wait for the turn to post at %s: %w", location, ctx.Err())}
			}
			// Another post is putting it: its answer comes within Timeout.
			return <-p.done
		}
	}
}

// putBatch puts the notes of batch, oldest first, and gives each its
// result. The holder of the turn's token calls it.
func (e *Store) putBatch(ctx context.Context, turn *turn, batch []*pendingPut) {
	location := turn.location
	start, _ := sequencedRange(location)
	fail := func(err error) {
		turn.known = false
		for _, p := range batch {
			p.done <- putResult{err: err}
		}
	}
	floorKey := e.floorKey(location)
	if !turn.known {
		seq, err := e.newest(ctx, location, floorKey)
		if err != nil {
			fail(err)
			return
		}
		turn.seq, turn.known = seq, true
	}
	pruning := e.turns.takePrune(turn)
	pruned := false
	defer func() {
		if pruning != nil && !pruned {
			// Not sent: the next put carries it.
			e.turns.owe(turn, pruning)
		}
	}()
	step := uint64(1)
	for attempt := 0; attempt < maxPutAttempts && len(batch) > 0; attempt++ {
		keys := make([]string, len(batch))
		var writes, ids []clientv3.Op
		cmps := []clientv3.Cmp{{}}
		for i, p := range batch {
			keys[i] = noteKey(location, turn.seq+step+uint64(i))
			writes = append(writes, clientv3.OpPut(keys[i], p.value, clientv3.WithLease(p.lease)))
			if p.idKey != "" {
				// The id names the note's key, on the note's lease.
				cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(p.idKey), "=", 0))
				writes = append(writes, clientv3.OpPut(p.idKey, keys[i], clientv3.WithLease(p.lease)))
				ids = append(ids, clientv3.OpGet(p.idKey))
			}
		}
		newer := clientv3.WithRange(keys[0] + "\x00")
		cmps[0] = clientv3.Compare(clientv3.CreateRevision(start).WithRange(keys[0]+"\x00"), "=", 0)
		if pruning != nil {
			// What an earlier answer left out goes in the same raft entry,
			// in a transaction of its own.
			writes = append(writes, e.pruneOp(location, floorKey, *pruning, batch[0].lease))
		}
		writes = append(writes, clientv3.OpGet(floorKey))
		resp, err := e.cli.Txn(ctx).If(cmps...).Then(writes...).
			Else(append([]clientv3.Op{clientv3.OpGet(start, newer, clientv3.WithKeysOnly(), clientv3.WithLimit(1))}, ids...)...).
			Commit()
		if err != nil {
			fail(fmt.Errorf("put %d notes at %s from %s: %w", len(batch), location, keys[0], err))
			return
		}
		if resp.Succeeded {
			pruned = true
			if pruning != nil && !resp.Responses[len(resp.Responses)-2].GetResponseTxn().GetSucceeded() {
				e.prunesRefused.Add(1)
			}
			turn.seq += step + uint64(len(batch)) - 1
			floor := ""
			if kvs := resp.Responses[len(resp.Responses)-1].GetResponseRange().Kvs; len(kvs) > 0 {
				floor = string(kvs[0].Value)
			}
			if _, ok := floorOf(location, []byte(floor)); floor != "" && !ok {
				e.badFloor(ctx, location, floorKey, floor)
				floor = ""
			}
			if floor != "" && floor < keys[0] {
				// Every note above the floor is gone, and the numbers this
				// node knew were below it: the floor no longer holds.
				e.dropFloor(ctx, floorKey, floor)
				floor = ""
			}
			page := &firstPage{newest: keys[len(keys)-1], extra: len(keys) - 1}
			for i, p := range batch {
				// Before any answer of the batch, which may hold it.
				e.cache.put(&mvccpb.KeyValue{Key: []byte(keys[i]), Value: []byte(p.value), ModRevision: resp.Header.Revision}, p.lat, p.lon)
			}
			for i, p := range batch {
				p.done <- putResult{key: keys[i], rev: resp.Header.Revision, floor: floor, page: page, offset: len(keys) - 1 - i}
			}
			return
		}
		// A note whose id is kept was put before: it is answered from
		// there, and the others try again.
		stored := map[string]*mvccpb.KeyValue{}
		for _, r := range resp.Responses[1:] {
			for _, kv := range r.GetResponseRange().Kvs {
				stored[string(kv.Key)] = kv
			}
		}
		if len(stored) > 0 {
			batch = slices.DeleteFunc(batch, func(p *pendingPut) bool {
				kv, ok := stored[p.idKey]
				if ok {
					p.done <- putResult{key: string(kv.Value), created: kv.CreateRevision}
				}
				return ok
			})
			continue
		}
		// The winner's next post takes the number after its last one: a
		// post that lost skips further ahead, so that it wins unless that
		// node posts twice meanwhile. Gaps in the order change nothing.
		turn.seq = max(turn.seq, newestSeq(location, (*clientv3.GetResponse)(resp.Responses[0].GetResponseRange())))
		step *= 2
	}
	if len(batch) == 0 {
		return
	}
	fail(fmt.Errorf("put a note at %s: other nodes posted there first %d times in a row", location, maxPutAttempts))
}

// dropFloor deletes the floor of a location, unless it moved.
func (e *Store) dropFloor(ctx context.Context, floorKey, floor string) {
	// On failure the next batch finds it again.
	_, _ = e.cli.Txn(ctx).If(clientv3.Compare(clientv3.Value(floorKey), "=", floor)).Then(clientv3.OpDelete(floorKey)).Commit()
}

// newest is the newest sequence number at location: its floor's, or its
// newest note's, read in a range that ends at the floor.
func (e *Store) newest(ctx context.Context, location, floorKey string) (uint64, error) {
	resp, err := e.cli.Get(ctx, floorKey)
	if err != nil {
		return 0, fmt.Errorf("read the floor of %s: %w", location, err)
	}
	var floor uint64
	end := floorEnd(location, "")
	if len(resp.Kvs) > 0 {
		var ok bool
		if floor, ok = floorOf(location, resp.Kvs[0].Value); ok {
			end = floorEnd(location, string(resp.Kvs[0].Value))
		} else {
			e.badFloor(ctx, location, floorKey, string(resp.Kvs[0].Value))
		}
	}
	start, _ := sequencedRange(location)
	resp, err = e.cli.Get(ctx, start, clientv3.WithRange(end), clientv3.WithKeysOnly(), clientv3.WithLimit(1))
	if err != nil {
		return 0, fmt.Errorf("read the newest note at %s: %w", location, err)
	}
	// When every note is gone, the floor may remain: numbers go on from it.
	return max(floor, newestSeq(location, resp)), nil
}

func newestSeq(location string, resp *clientv3.GetResponse) uint64 {
	if len(resp.Kvs) == 0 {
		return 0
	}
	seq, _ := seqOf(location, resp.Kvs[0].Key)
	return seq
}

// turns let one post at a time of this store take a location's next
// sequence number. An entry lives while posts wait for it, so the map holds
// at most as many locations as posts run at once. What an entry knows
// outlives it at up to maxIdle idle locations: the newest number seen, so
// that a location posted to now and then is not read again before each
// post (a number another node passed meanwhile costs the put one lost
// comparison), and the prune that the last answer asked for, which the next
// put there carries.
type turns struct {
	mu   sync.Mutex
	at   map[string]*turn
	idle map[string]idleTurn
}

type idleTurn struct {
	seq   uint64
	prune *prune
}

// maxIdle bounds the idle locations a store remembers. A prune forgotten
// with one is done by the next prune there, which deletes down to the floor.
const maxIdle = 4096

type turn struct {
	location string
	token    chan struct{} // one slot: held by the post whose turn it is
	seq      uint64        // the newest sequence number seen; guarded by token
	known    bool          // whether seq is, as far as this node knows, etcd's

	// Guarded by turns.mu:
	users   int           // posts that joined and have not left
	waiting []*pendingPut // notes not yet taken into a batch, oldest first
	// prune is what the newest answer that left notes out asks for: the
	// next batch deletes them.
	prune *prune
}

// join queues p at location and returns the location's turn.
func (t *turns) join(location string, p *pendingPut) *turn {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.at == nil {
		t.at = make(map[string]*turn)
	}
	tu := t.at[location]
	if tu == nil {
		tu = &turn{location: location, token: make(chan struct{}, 1)}
		if idle, ok := t.idle[location]; ok {
			tu.seq, tu.known, tu.prune = idle.seq, true, idle.prune
			delete(t.idle, location)
		}
		t.at[location] = tu
	}
	tu.users++
	tu.waiting = append(tu.waiting, p)
	return tu
}

// takeBatch takes the oldest waiting notes, as many as one transaction
// takes.
func (t *turns) takeBatch(tu *turn) []*pendingPut {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, bytes, ops := 0, 0, 0
	ids := map[string]bool{}
	for ; n < len(tu.waiting) && n < maxBatch; n++ {
		p := tu.waiting[n]
		if n > 0 && (bytes+len(p.value) > maxBatchBytes || ops+putOps(p) > maxBatchOps ||
			p.lease != tu.waiting[0].lease || (p.idKey != "" && ids[p.idKey])) {
			// One batch is one transaction: within etcd's bounds, on one
			// lease (a lease gone fails every put), each id key once.
			break
		}
		bytes, ops = bytes+len(p.value), ops+putOps(p)
		if p.idKey != "" {
			ids[p.idKey] = true
		}
	}
	batch := slices.Clone(tu.waiting[:n])
	tu.waiting = slices.Delete(tu.waiting, 0, n)
	return batch
}

// withdraw takes p out of the queue, and reports whether it was still
// there, not yet taken into a batch.
func (t *turns) withdraw(tu *turn, p *pendingPut) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	i := slices.Index(tu.waiting, p)
	if i < 0 {
		return false
	}
	tu.waiting = slices.Delete(tu.waiting, i, i+1)
	return true
}

// takePrune returns the prune for the put of the turn's holder, and clears
// it; if that put fails, a later answer prunes again.
func (t *turns) takePrune(tu *turn) *prune {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := tu.prune
	tu.prune = nil
	return p
}

// owe leaves p to the next batch at the turn's location, unless a prune
// that deletes more already waits.
func (t *turns) owe(tu *turn, p *prune) {
	t.mu.Lock()
	defer t.mu.Unlock()
	tu.owe(p)
}

func (tu *turn) owe(p *prune) {
	// The newest answer's prune deletes the most: its oldest key is the
	// least in key order.
	if p != nil && (tu.prune == nil || p.after < tu.prune.after) {
		tu.prune = p
	}
}

// leave ends a post's part in the turn, with the prune its answer asks
// for, if any: the next batch at the location carries it, one operation for
// the posts of a batch, which read the same answer. Until then the location
// keeps, beyond its answers, the notes of the batches put since.
func (t *turns) leave(tu *turn, p *prune) {
	t.mu.Lock()
	defer t.mu.Unlock()
	tu.owe(p)
	if tu.users--; tu.users > 0 {
		return
	}
	delete(t.at, tu.location)
	// Read under t.mu: no post holds the turn's token now.
	if !tu.known {
		return
	}
	if t.idle == nil {
		t.idle = make(map[string]idleTurn)
	}
	for k := range t.idle {
		if len(t.idle) < maxIdle {
			break
		}
		delete(t.idle, k)
	}
	t.idle[tu.location] = idleTurn{seq: tu.seq, prune: tu.prune}
}
