package etcdnotes

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"

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

// maxPutAttempts bounds the puts of one post that lose to another node
// posting at the same location at the same time.
const maxPutAttempts = 16

// put stores value under the next sequence number at location and returns
// its key and the revision of the write. The comparison (no note at or
// after the key in key order) makes sequence order the commit order,
// whichever nodes post; the node's own posts at a location take turns, so
// that only other nodes' posts make a put try again.
func (e *Store) put(ctx context.Context, location, value string, lease clientv3.LeaseID) (string, int64, error) {
	turn, err := e.turns.take(ctx, location)
	if err != nil {
		return "", 0, fmt.Errorf("wait for the turn to post at %s: %w", location, err)
	}
	defer e.turns.give(turn)
	start, end := sequencedRange(location)
	newest := func(resp *clientv3.GetResponse) uint64 {
		if len(resp.Kvs) == 0 {
			return 0
		}
		seq, _ := seqOf(location, resp.Kvs[0].Key)
		return seq
	}
	if !turn.known {
		resp, err := e.cli.Get(ctx, start, clientv3.WithRange(end), clientv3.WithKeysOnly(), clientv3.WithLimit(1))
		if err != nil {
			return "", 0, fmt.Errorf("read the newest note at %s: %w", location, err)
		}
		turn.seq, turn.known = newest(resp), true
	}
	step := uint64(1)
	writes := []clientv3.Op{{}}
	if pruneAfter := e.turns.takePrune(turn); pruneAfter != "" {
		// What an earlier answer left out goes in the same raft entry.
		writes = append(writes, clientv3.OpDelete(pruneAfter+"\x00", clientv3.WithRange(end)))
	}
	for range maxPutAttempts {
		key := noteKey(location, turn.seq+step)
		writes[0] = clientv3.OpPut(key, value, clientv3.WithLease(lease))
		resp, err := e.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(start).WithRange(key+"\x00"), "=", 0)).
			Then(writes...).
			Else(clientv3.OpGet(start, clientv3.WithRange(end), clientv3.WithKeysOnly(), clientv3.WithLimit(1))).
			Commit()
		if err != nil {
			turn.known = false
			return "", 0, fmt.Errorf("put note %s: %w", key, err)
		}
		if resp.Succeeded {
			turn.seq += step
			return key, resp.Header.Revision, nil
		}
		// The winner's next post takes the number after its last one: a
		// post that lost skips further ahead, so that it wins unless that
		// node posts twice meanwhile. Gaps in the order change nothing.
		turn.seq = newest((*clientv3.GetResponse)(resp.Responses[0].GetResponseRange()))
		step *= 2
	}
	turn.known = false
	return "", 0, fmt.Errorf("put a note at %s: other nodes posted there first %d times in a row", location, maxPutAttempts)
}

// turns let one post at a time of this store take a location's next
// sequence number. An entry lives while posts wait for it, so the map holds
// at most as many locations as posts run at once.
type turns struct {
	mu sync.Mutex
	at map[string]*turn
}

type turn struct {
	location string
	token    chan struct{} // one slot: held by the post whose turn it is
	users    int           // guarded by turns.mu
	seq      uint64        // the newest sequence number seen; guarded by token
	known    bool          // whether seq is, as far as this node knows, etcd's
	// pruneAfter is the oldest sequenced key of an answer that left older
	// notes out: the next put deletes those. Guarded by turns.mu.
	pruneAfter string
}

func (t *turns) take(ctx context.Context, location string) (*turn, error) {
	t.mu.Lock()
	if t.at == nil {
		t.at = make(map[string]*turn)
	}
	tu := t.at[location]
	if tu == nil {
		tu = &turn{location: location, token: make(chan struct{}, 1)}
		t.at[location] = tu
	}
	tu.users++
	t.mu.Unlock()
	select {
	case tu.token <- struct{}{}:
		return tu, nil
	case <-ctx.Done():
		t.leave(tu)
		return nil, ctx.Err()
	}
}

// deferPrune leaves the deletion of the sequenced notes after key to the
// next put at location, and reports whether one is waiting to take it.
func (t *turns) deferPrune(location, key string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	tu := t.at[location]
	if tu == nil {
		return false
	}
	// The newest answer's bound deletes the most: its oldest key is
	// the least in key order.
	if tu.pruneAfter == "" || key < tu.pruneAfter {
		tu.pruneAfter = key
	}
	return true
}

// takePrune returns the key after which the put of the turn's holder
// deletes, and clears it; if that put fails, a later answer prunes again.
func (t *turns) takePrune(tu *turn) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	after := tu.pruneAfter
	tu.pruneAfter = ""
	return after
}

func (t *turns) give(tu *turn) {
	<-tu.token
	t.leave(tu)
}

func (t *turns) leave(tu *turn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if tu.users--; tu.users == 0 {
		delete(t.at, tu.location)
	}
}
