// Package notes keeps the notes that RouteChat relays: the Store contract
// and Memory, the store of a standalone node. Package etcdnotes holds the
// store that the nodes of a cluster share, apart, so that the service links
// no etcd code.
package notes

import (
	"context"
	"errors"
	"fmt"
	"sync"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
)

// ErrLimit is wrapped by every error that a store returns because one of its
// bounds is reached. The service answers it with ResourceExhausted.
var ErrLimit = errors.New("limit reached")

// ErrUnavailable is wrapped by every error that a store returns because its
// backend could not be reached or did not answer in time, while the caller
// still waited. The service answers it with Unavailable, so that a client
// may retry on another node or later.
var ErrUnavailable = errors.New("note store unavailable")

// ErrNoteTooLarge is the ErrLimit of a note whose message is over a store's
// bound on one message, as opposed to a store or a location that is full.
var ErrNoteTooLarge = fmt.Errorf("note too large: %w", ErrLimit)

// Store keeps notes by location.
type Store interface {
	// Post stores note and returns every note stored at its location, in
	// posting order, the new one last. The returned notes are shared and must
	// not be modified.
	Post(ctx context.Context, note *pb.RouteNote) ([]*pb.RouteNote, error)
}

// MemoryLimits bound what a Memory store holds, so a flood of notes cannot
// exhaust the node's memory.
type MemoryLimits struct {
	// PerLocation is how many notes one location keeps.
	PerLocation int
	// DropOldest makes a post to a full location drop the location's oldest
	// note, as the etcd store (package etcdnotes) does, instead of being refused with ErrLimit.
	DropOldest bool
	// Bytes bounds the memory that all notes take together, counted as the
	// length of each message plus NoteOverhead.
	Bytes int64
	// MessageBytes bounds one note's message, as etcdnotes.Config.MaxMessageBytes
	// does in the cluster, so a node answers alike alone and in a cluster.
	MessageBytes int
}

// NoteOverhead is what a Memory store charges for one note besides its text:
// about what the note, its point and the index entry take in memory.
const NoteOverhead = 128

// Memory is a Store in the process's memory, for a node that serves alone.
// Readers never wait on a slow client: Post returns a snapshot.
type Memory struct {
	limits MemoryLimits

	mu         sync.Mutex
	byLocation map[uint64][]*pb.RouteNote
	count      int
	bytes      int64
}

// NewMemory returns an empty store bounded by limits; a limit <= 0 means no bound.
func NewMemory(limits MemoryLimits) *Memory {
	return &Memory{limits: limits, byLocation: make(map[uint64][]*pb.RouteNote)}
}

// Post implements Store.
func (m *Memory) Post(_ context.Context, note *pb.RouteNote) ([]*pb.RouteNote, error) {
	lat, lon := note.GetLocation().GetLatitude(), note.GetLocation().GetLongitude()
	// Keep a clean copy: the received message may carry unknown fields that
	// would otherwise be stored and echoed to every other client.
	note = &pb.RouteNote{Location: &pb.Point{Latitude: lat, Longitude: lon}, Message: note.GetMessage()}
	if m.limits.MessageBytes > 0 && len(note.Message) > m.limits.MessageBytes {
		return nil, fmt.Errorf("a note's message may have at most %d bytes: %w", m.limits.MessageBytes, ErrNoteTooLarge)
	}
	cost := int64(len(note.Message)) + NoteOverhead
	key := uint64(uint32(lat))<<32 | uint64(uint32(lon))

	m.mu.Lock()
	defer m.mu.Unlock()
	stored := m.byLocation[key]
	drop := 0 // how many of the oldest notes make room for this one
	var freed int64
	if m.limits.PerLocation > 0 && len(stored) >= m.limits.PerLocation {
		if !m.limits.DropOldest {
			return nil, fmt.Errorf("this location is full (it keeps %d notes at most): %w", m.limits.PerLocation, ErrLimit)
		}
		drop = len(stored) - m.limits.PerLocation + 1
		for _, old := range stored[:drop] {
			freed += int64(len(old.Message)) + NoteOverhead
		}
	}
	if m.limits.Bytes > 0 && m.bytes-freed+cost > m.limits.Bytes {
		return nil, fmt.Errorf("the note store is full (%d bytes at most): %w", m.limits.Bytes, ErrLimit)
	}
	// Dropping reslices and appending writes only past the end of every
	// snapshot handed out, so a returned slice stays valid after the lock is
	// released (the dropped notes are not cleared for the same reason). The
	// capacity is clipped so a later append cannot write into it.
	stored = append(stored[drop:], note)
	m.byLocation[key] = stored
	m.count += 1 - drop
	m.bytes += cost - freed
	return stored[:len(stored):len(stored)], nil
}

// Len is the number of notes stored.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.count
}
