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

// input and output are an op as the model sees it.
type input struct{ message string }

type output struct {
	outcome Outcome
	answer  []string
}

// Model is one RouteGuide server with bounds b, one partition per location:
// its state is the notes it keeps at the location, oldest first. A post
// appends its note, forgets what the bounds leave out, and answers with
// what it keeps, its own note last. An Acked post must have been answered
// exactly that, and a Partial one the beginning of it; an Unknown one may
// take effect at any time after its call, or never; a Refused one changes
// nothing.
//
// So every acknowledged note is in every answer linearized after it until
// the bounds forget it, every answer is in one posting order, no note is
// answered that no post made, and a note is answered twice only when two
// posts made it (a retry).
func Model(b Bounds) porcupine.Model {
	return porcupine.Model{
		Partition: partitionByLocation,
		Init:      func() any { return []string(nil) },
		Step: func(state, in, out any) (bool, any) {
			kept, o := state.([]string), out.(output)
			switch o.outcome {
			case Refused:
				return true, kept
			case Unknown:
				return true, b.Keep(append(slices.Clip(kept), in.(input).message))
			}
			next := b.Keep(append(slices.Clip(kept), in.(input).message))
			if o.outcome == Partial {
				return len(o.answer) <= len(next) && slices.Equal(next[:len(o.answer)], o.answer), next
			}
			return slices.Equal(next, o.answer), next
		},
		Equal: func(a, b any) bool { return slices.Equal(a.([]string), b.([]string)) },
		Hash: func(state any) uint64 {
			h := fnv.New64a()
			for _, m := range state.([]string) {
				h.Write([]byte(m))
				h.Write([]byte{0})
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
		DescribeState: func(state any) string { return "[" + strings.Join(state.([]string), " ") + "]" },
	}
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
