package chatcheck

import (
	"fmt"
	"hash/fnv"
	"slices"
	"strings"

	"github.com/anishathalye/porcupine"

	"github.com/routeguide-cluster/routeguide/routeguide/notes"
)

// Bounds are the node flags that shape an answer: --max-notes-per-location
// and --max-chat-answer-bytes.
type Bounds struct {
	PerLocation int
	AnswerBytes int
}

// Keep is what one server keeps at a location after a post and answers
// with: the newest notes that fit the bounds, oldest first, counted as
// notes.Cost each. It stops at the first note that does not fit, as the
// stores do, so what it drops is always the oldest. A bound <= 0 is none.
func (b Bounds) Keep(atLocation []string) []string {
	room, kept := b.AnswerBytes, 0
	for i := len(atLocation) - 1; i >= 0; i-- {
		if b.PerLocation > 0 && kept == b.PerLocation {
			break
		}
		if room -= notes.Cost(atLocation[i]); b.AnswerBytes > 0 && room < 0 {
			break
		}
		kept++
	}
	return atLocation[len(atLocation)-kept:]
}

// input and output are an op as the model sees it. repeated marks a
// message that more than one op posts (a retry): the model remembers what
// its post kept, to answer the others as a store with note ids does.
type input struct {
	message  string
	repeated bool
}

type output struct {
	outcome Outcome
	answer  []string
}

// state is what the model keeps at a location: the notes, oldest first,
// and for each repeated message stored so far, the notes kept up to and
// including it when it was stored.
type state struct {
	kept   []string
	stored []snapshot // by message
}

type snapshot struct {
	message string
	upTo    []string
}

func bySnapshotMessage(x snapshot, m string) int { return strings.Compare(x.message, m) }

func (s state) snapshot(message string) ([]string, bool) {
	i, ok := slices.BinarySearchFunc(s.stored, message, bySnapshotMessage)
	if !ok {
		return nil, false
	}
	return s.stored[i].upTo, true
}

// post is s after a post of in stores its note.
func (s state) post(b Bounds, in input) state {
	next := state{kept: b.Keep(append(slices.Clip(s.kept), in.message)), stored: s.stored}
	if in.repeated {
		i, _ := slices.BinarySearchFunc(s.stored, in.message, bySnapshotMessage)
		next.stored = slices.Insert(slices.Clone(s.stored), i, snapshot{in.message, next.kept})
	}
	return next
}

// Model is one RouteGuide server with bounds b whose clients name each
// post with a note id, one partition per location; a retry is answered as
// etcdnotes answers it. docs/DESIGN.md, "Checking RouteChat against one
// server, under faults", states the model and the rules it checks.
func Model(b Bounds) porcupine.Model {
	return porcupine.Model{
		Partition: partitionByLocation,
		Init:      func() any { return state{} },
		Step: func(st, in, out any) (bool, any) {
			s, i, o := st.(state), in.(input), out.(output)
			if o.outcome == Refused {
				return true, s
			}
			if upTo, ok := s.snapshot(i.message); ok {
				return o.outcome == Unknown || retryAnswerFits(upTo, s.kept, i.message, o), s
			}
			next := s.post(b, i)
			switch o.outcome {
			case Unknown:
				return true, next
			case Partial:
				return len(o.answer) <= len(next.kept) && slices.Equal(next.kept[:len(o.answer)], o.answer), next
			}
			return slices.Equal(next.kept, o.answer), next
		},
		Equal: func(a, b any) bool {
			x, y := a.(state), b.(state)
			return slices.Equal(x.kept, y.kept) && slices.EqualFunc(x.stored, y.stored, func(p, q snapshot) bool {
				return p.message == q.message && slices.Equal(p.upTo, q.upTo)
			})
		},
		Hash: func(st any) uint64 {
			s := st.(state)
			h := fnv.New64a()
			for _, m := range s.kept {
				h.Write([]byte(m))
				h.Write([]byte{0})
			}
			for _, snap := range s.stored {
				h.Write([]byte{1})
				h.Write([]byte(snap.message))
			}
			return h.Sum64()
		},
		DescribeOperation: func(in, out any) string {
			o := out.(output)
			if o.outcome != Acked && o.outcome != Partial {
				return fmt.Sprintf("post %q -> %s", in.(input).message, o.outcome)
			}
			return fmt.Sprintf("post %q -> %s[%s]", in.(input).message, map[Outcome]string{Partial: "partial "}[o.outcome], strings.Join(o.answer, " "))
		},
		DescribeState: func(st any) string { return "[" + strings.Join(st.(state).kept, " ") + "]" },
	}
}

// retryAnswerFits reports whether o answers a post of message, stored
// before with upTo the notes kept up to it then: an Acked answer is a
// suffix of upTo holding at least the notes up to message still kept (any
// suffix, empty too, once message is forgotten); a Partial one begins such
// a suffix.
func retryAnswerFits(upTo, kept []string, message string, o output) bool {
	least := slices.Index(kept, message) + 1
	for start := 0; start <= len(upTo)-least; start++ {
		rest := upTo[start:]
		if o.outcome == Acked && slices.Equal(rest, o.answer) {
			return true
		}
		if o.outcome == Partial && len(o.answer) <= len(rest) && slices.Equal(rest[:len(o.answer)], o.answer) {
			return true
		}
	}
	return false
}

// partitionByLocation splits a history by location: the notes of one
// location never change what another answers.
func partitionByLocation(history []porcupine.Operation) [][]porcupine.Operation {
	byLocation := map[string][]porcupine.Operation{}
	var order []string
	for _, op := range history {
		loc := op.Metadata.(Op).Location
		if _, ok := byLocation[loc]; !ok {
			order = append(order, loc)
		}
		byLocation[loc] = append(byLocation[loc], op)
	}
	parts := make([][]porcupine.Operation, len(order))
	for i, loc := range order {
		parts[i] = byLocation[loc]
	}
	return parts
}
