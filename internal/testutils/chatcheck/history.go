// Package chatcheck records what RouteChat clients post and are answered,
// and checks such a history with porcupine against a model of one RouteGuide
// server with the node's bounds: the Jepsen way of testing a cluster under
// faults. docs/DESIGN.md says what the model promises and why.
package chatcheck

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Outcome is what a client learned of one post.
type Outcome int

const (
	// Acked: the answer came back whole, so the note is stored.
	Acked Outcome = iota
	// Unknown: the post failed where the note may have been stored (the
	// node died, etcd did not answer in time, the deadline passed).
	Unknown
	// Refused: a status that the node gives before it stores anything.
	Refused
	// Partial: the stream failed after some notes of the answer came. A
	// node answers only after its write, so the note is stored; the notes
	// that came must begin the answer.
	Partial
)

func (o Outcome) String() string {
	switch o {
	case Acked:
		return "acked"
	case Unknown:
		return "unknown"
	case Partial:
		return "partial"
	default:
		return "refused"
	}
}

// OutcomeOf classifies the error a post ended with. Only statuses that the
// service returns before the store is written mean the note was not stored.
func OutcomeOf(err error) Outcome {
	if err == nil {
		return Acked
	}
	switch status.Code(err) {
	case codes.InvalidArgument, codes.ResourceExhausted:
		return Refused
	}
	return Unknown
}

// Op is one post and what came of it.
type Op struct {
	Client   int
	Location string // "lat,lon": the model keeps one list of notes per location
	Message  string // unique per post; a Retry posts it again
	// Retry marks a post of a message the client posted before, whose
	// outcome was unknown, again under the same note id: stored once
	// whatever the first attempt did.
	Retry        bool
	Call, Return time.Duration // since the history began
	Outcome      Outcome
	// Answer is the notes answered (of a Partial op, those that came),
	// oldest first. A note of another
	// location is kept as WrongLocation(message) so that no model takes it.
	Answer []string
	Node   string // the node that answered, from its header
	Code   codes.Code
	Err    string
}

// WrongLocation is how an answered note of another location is recorded.
func WrongLocation(location, message string) string {
	return fmt.Sprintf("<at %s> %s", location, message)
}

func (op Op) String() string {
	ret := op.Return.String()
	if op.Outcome == Unknown {
		ret = "?"
	}
	retry := ""
	if op.Retry {
		retry = " (retry)"
	}
	s := fmt.Sprintf("client %d at %s [%v, %s] post %s%s -> %s", op.Client, op.Location, op.Call, ret, short(op.Message), retry, op.Outcome)
	if op.Outcome == Acked || op.Outcome == Partial {
		answer := make([]string, len(op.Answer))
		for i, m := range op.Answer {
			answer[i] = short(m)
		}
		s += fmt.Sprintf(" by %s: [%s]", op.Node, strings.Join(answer, " "))
	}
	if op.Err != "" {
		s += ": " + op.Err
	}
	return s
}

// short writes a message without its padding, as c3-17+42 for c3-17 and 42
// dots.
func short(message string) string {
	trimmed := strings.TrimRight(message, ".")
	if pad := len(message) - len(trimmed); pad > 0 {
		return fmt.Sprintf("%s+%d", trimmed, pad)
	}
	return trimmed
}

// Recorder collects the ops of one history from many goroutines.
type Recorder struct {
	start time.Time
	mu    sync.Mutex
	ops   []Op
}

// NewRecorder starts a history now.
func NewRecorder() *Recorder { return &Recorder{start: time.Now()} }

// Now is the time since the history began, on the monotonic clock.
func (r *Recorder) Now() time.Duration { return time.Since(r.start) }

// Add records op, once it has returned or failed.
func (r *Recorder) Add(op Op) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, op)
}

// Ops is a copy of the ops recorded so far.
func (r *Recorder) Ops() []Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ops)
}

// Count counts the ops that ended with outcome and were called at since or
// later, through node (any node when "").
func (r *Recorder) Count(outcome Outcome, node string, since time.Duration) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, op := range r.ops {
		if op.Outcome == outcome && op.Call >= since && (node == "" || op.Node == node) {
			n++
		}
	}
	return n
}

// DropAcknowledged returns a copy of ops in which one answer lacks a note
// that was acknowledged before the op was called, and which the bounds had
// not forgotten (a note stands after it in the answer): a history no model
// of one server accepts, for negative controls. It reports false when ops
// has no such answer.
func DropAcknowledged(ops []Op) ([]Op, bool) {
	ackedAt := map[string]time.Duration{}
	for _, op := range ops {
		if op.Outcome == Acked {
			ackedAt[op.Message] = op.Return
		}
	}
	for i, op := range ops {
		if op.Outcome != Acked {
			continue
		}
		// The last note is the op's own; the one before it must follow
		// the one dropped, so that no bound can explain its absence.
		for j, m := range op.Answer[:max(0, len(op.Answer)-2)] {
			if at, ok := ackedAt[m]; ok && at < op.Call {
				out := slices.Clone(ops)
				out[i].Answer = slices.Delete(slices.Clone(op.Answer), j, j+1)
				return out, true
			}
		}
	}
	return nil, false
}

// DuplicateRetried returns a copy of ops in which one answer holds twice a
// note that two ops posted (a retry, under one note id): a history no model
// of one server with note ids accepts, for negative controls. It reports
// false when no answer holds a retried note.
func DuplicateRetried(ops []Op) ([]Op, bool) {
	posts := map[string]int{}
	for _, op := range ops {
		posts[op.Location+" "+op.Message]++
	}
	for i, op := range ops {
		if op.Outcome != Acked {
			continue
		}
		for j, m := range op.Answer {
			if posts[op.Location+" "+m] > 1 {
				out := slices.Clone(ops)
				out[i].Answer = slices.Insert(slices.Clone(op.Answer), j, m)
				return out, true
			}
		}
	}
	return nil, false
}
