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

// ErrWriteRate is the ErrLimit of a note refused because its store writes
// no more notes per second than its bound, and the note's turn would come
// after its deadline.
var ErrWriteRate = fmt.Errorf("note write rate reached: %w", ErrLimit)

// noteIDKey is the context key of a note's id.
type noteIDKey struct{}

// WithNoteID returns ctx naming the note posted with it: a store that
// keeps ids stores a note under an id once, and answers a post of it again
// as it answered the first.
func WithNoteID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, noteIDKey{}, id)
}

// NoteID is the id WithNoteID gave ctx, or "".
func NoteID(ctx context.Context) string {
	id, _ := ctx.Value(noteIDKey{}).(string)
	return id
}

// Store keeps notes by location.
type Store interface {
	// Post stores note and returns every note stored at its location, in
	// posting order, the new one last. The returned notes are shared and must
	// not be modified.
	Post(ctx context.Context, note *pb.RouteNote) ([]*pb.RouteNote, error)
}

// Limits bound what a store keeps and what one post answers, so that no
// client can make a node or etcd hold, read or send unbounded notes. Both
// stores take them; a limit <= 0 means no bound.
type Limits struct {
	// PerLocation is how many notes one location keeps.
	PerLocation int
	// MessageBytes bounds one note's message.
	MessageBytes int
	// AnswerBytes bounds one answer, counted as Cost of each note: a post
	// answers with the newest notes at its location that fit, oldest first,
	// and the store forgets the older ones, which no answer could carry.
	AnswerBytes int
	// Bytes bounds what all notes of a Memory store take together, counted
	// as Cost of each. The etcd store has a budget of its own instead.
	Bytes int64
	// DropOldest makes a post to a full location of a Memory store drop the
	// location's oldest note, as the etcd store always does, instead of
	// being refused with ErrLimit.
	DropOldest bool
}

// DefaultLimits are a node's limits when no flag changes them. A full
// location forgets its oldest note, in memory as in etcd, so a busy spot
// keeps chatting rather than refusing every note.
func DefaultLimits() Limits {
	return Limits{
		PerLocation:  1000,
		MessageBytes: 4 << 10,
		AnswerBytes:  1 << 20,
		Bytes:        64 << 20,
		DropOldest:   true,
	}
}

// NoteOverhead is what a note costs besides its message: about what the
// note, its point and the index entry take in memory, and more than its
// encoding adds on the wire and in etcd.
const NoteOverhead = 128

// Cost is what a note with message counts for against the byte limits.
func Cost(message string) int { return len(message) + NoteOverhead }

// Memory is a Store in the process's memory, for a node that serves alone.
// Readers never wait on a slow client: Post returns a snapshot.
type Memory struct {
	limits Limits

	mu         sync.Mutex
	byLocation map[uint64][]*pb.RouteNote
	count      int
	bytes      int64
}

// NewMemory returns an empty store bounded by limits.
func NewMemory(limits Limits) *Memory {
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
	cost := Cost(note.Message)
	key := uint64(uint32(lat))<<32 | uint64(uint32(lon))

	m.mu.Lock()
	defer m.mu.Unlock()
	stored := m.byLocation[key]
	keep := len(stored) // how many of the newest notes stay beside this one
	full := ""
	if m.limits.PerLocation > 0 && keep >= m.limits.PerLocation {
		keep, full = m.limits.PerLocation-1, fmt.Sprintf("it keeps %d notes at most", m.limits.PerLocation)
	}
	if m.limits.AnswerBytes > 0 {
		room := m.limits.AnswerBytes - cost
		for i := len(stored) - 1; i >= len(stored)-keep; i-- {
			if room -= Cost(stored[i].Message); room < 0 {
				keep, full = len(stored)-1-i, fmt.Sprintf("one answer holds %d bytes at most", m.limits.AnswerBytes)
				break
			}
		}
	}
	drop := len(stored) - keep
	if drop > 0 && !m.limits.DropOldest {
		return nil, fmt.Errorf("this location is full (%s): %w", full, ErrLimit)
	}
	var freed int64
	for _, old := range stored[:drop] {
		freed += int64(Cost(old.Message))
	}
	if m.limits.Bytes > 0 && m.bytes-freed+int64(cost) > m.limits.Bytes {
		return nil, fmt.Errorf("the note store is full (%d bytes at most): %w", m.limits.Bytes, ErrLimit)
	}
	// Dropping reslices and appending writes only past the end of every
	// snapshot handed out, so a returned slice stays valid after the lock is
	// released (the dropped notes are not cleared for the same reason). The
	// capacity is clipped so a later append cannot write into it.
	stored = append(stored[drop:], note)
	m.byLocation[key] = stored
	m.count += 1 - drop
	m.bytes += int64(cost) - freed
	return stored[:len(stored):len(stored)], nil
}

// Len is the number of notes stored.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.count
}
