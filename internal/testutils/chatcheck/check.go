package chatcheck

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/routeguide-cluster/routeguide/routeguide/notes"
)

// Result is the verdict on one history.
type Result struct {
	Ops, Acked, Unknown, Refused, Partial, Retries, Locations int
	// Duplicates counts the notes answered twice in one answer, which
	// the model forbids: a retry carries the note id of the first post.
	Duplicates int
	// Unseen counts the Unknown ops whose note no answer holds and no
	// other op posts, left out of the search: they changed no answer
	// (docs/DESIGN.md, "Checking RouteChat against one server").
	Unseen int
	// FullByCount and FullByBytes count the acked answers that a bound
	// filled: PerLocation notes, or no room for one more of the longest
	// note posted. Both above zero mean both bounds forgot notes.
	FullByCount, FullByBytes int
	// Verdict is porcupine's: Ok, Illegal, or Unknown when the check ran
	// out of time.
	Verdict porcupine.CheckResult
	// Findings name, for a history that is not Ok, each simple rule of the
	// model that an answer breaks, with the ops that show it; porcupine
	// finds what breaks no single rule (say, two answers that each hold
	// but fit no one order with the other posts).
	Findings []string
	// Failing are the locations whose own history is not Ok.
	Failing []string

	model porcupine.Model
	info  porcupine.LinearizationInfo
}

// OK reports whether the history fits the model.
func (r Result) OK() bool { return r.Verdict == porcupine.Ok }

func (r Result) String() string {
	return fmt.Sprintf("%s: %d ops (%d acked, %d unknown of which %d unseen, %d refused, %d partial, %d retries, %d notes stored twice) at %d locations",
		r.Verdict, r.Ops, r.Acked, r.Unknown, r.Unseen, r.Refused, r.Partial, r.Retries, r.Duplicates, r.Locations)
}

// Visualize writes porcupine's HTML view of the history to path: each
// location's ops on a timeline, and the longest order the model accepts.
func (r Result) Visualize(path string) error {
	model := r.model
	model.DescribeOperationMetadata = func(info any) string {
		op := info.(Op)
		return fmt.Sprintf("client %d, node %s, %s %s", op.Client, op.Node, op.Outcome, op.Err)
	}
	return porcupine.VisualizePath(model, r.info, path)
}

// Check checks ops against Model(b), giving porcupine at most timeout.
func Check(ops []Op, b Bounds, timeout time.Duration) Result {
	r := Result{Ops: len(ops), model: Model(b)}
	var end time.Duration
	for _, op := range ops {
		end = max(end, op.Return, op.Call)
	}
	history := make([]porcupine.Operation, 0, len(ops))
	locations := map[string]bool{}
	process := processes(ops)
	twice := map[string]bool{}
	seen := map[string]bool{} // location and message of every note answered
	posts := map[string]int{} // location and message -> ops posting it
	for _, op := range ops {
		for _, m := range op.Answer {
			seen[op.Location+" "+m] = true
		}
		posts[op.Location+" "+op.Message]++
	}
	for i, op := range ops {
		for j, m := range op.Answer {
			if slices.Contains(op.Answer[j+1:], m) {
				twice[m] = true
			}
		}
		locations[op.Location] = true
		switch op.Outcome {
		case Acked:
			r.Acked++
		case Unknown:
			r.Unknown++
			// It may take effect at any time after its call: porcupine
			// reads a return after every other op as "never returned".
			op.Return = end + 1
		case Refused:
			r.Refused++
		case Partial:
			r.Partial++
		}
		if op.Retry {
			r.Retries++
		}
		// A post of a retried note stays in the search: the retry's answer
		// may depend on whether the first attempt stored it.
		repeated := posts[op.Location+" "+op.Message] > 1
		if op.Outcome == Unknown && !seen[op.Location+" "+op.Message] && !repeated {
			r.Unseen++
			continue
		}
		history = append(history, porcupine.Operation{ClientId: process[i], Input: input{op.Message, repeated}, Call: int64(op.Call),
			Output: output{op.Outcome, op.Answer}, Return: int64(op.Return), Metadata: op})
	}
	r.Locations, r.Duplicates = len(locations), len(twice)
	r.FullByCount, r.FullByBytes = countFull(ops, b)
	r.Verdict, r.info = porcupine.CheckOperationsVerbose(r.model, history, timeout)
	if !r.OK() {
		r.Findings = Explain(ops, b)
		for loc := range locations {
			if porcupine.CheckOperationsTimeout(r.model, at(history, loc), timeout) != porcupine.Ok {
				r.Failing = append(r.Failing, loc)
			}
		}
		slices.Sort(r.Failing)
	}
	return r
}

func at(history []porcupine.Operation, location string) []porcupine.Operation {
	var out []porcupine.Operation
	for _, op := range history {
		if op.Metadata.(Op).Location == location {
			out = append(out, op)
		}
	}
	return out
}

func countFull(ops []Op, b Bounds) (byCount, byBytes int) {
	longest := maxCost(ops)
	for _, op := range ops {
		if op.Outcome != Acked {
			continue
		}
		switch b.filled(op.Answer, longest) {
		case "count":
			byCount++
		case "bytes":
			byBytes++
		}
	}
	return byCount, byBytes
}

// filled names the bound that answer fills: "count" at PerLocation notes,
// "bytes" when one more note costing maxCost would not fit; "" when it has
// room. Once a bound has forgotten a note, every answer is full, so an
// answer with room has forgotten nothing.
func (b Bounds) filled(answer []string, maxCost int) string {
	cost := 0
	for _, m := range answer {
		cost += notes.Cost(m)
	}
	switch {
	case b.PerLocation > 0 && len(answer) >= b.PerLocation:
		return "count"
	case b.AnswerBytes > 0 && cost+maxCost > b.AnswerBytes:
		return "bytes"
	}
	return ""
}

// maxCost is the cost of the longest note that ops post.
func maxCost(ops []Op) int {
	most := 0
	for _, op := range ops {
		most = max(most, notes.Cost(op.Message))
	}
	return most
}

// processes gives each op the id of the process that made it, for
// porcupine's view: a client's ops one after another, and a new process
// after an unknown outcome, whose op never returns.
func processes(ops []Op) []int {
	order := make([]int, len(ops))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(ops[a].Call, ops[b].Call) })
	ids := make([]int, len(ops))
	current := map[int]int{}
	next := 0
	for _, i := range order {
		id, ok := current[ops[i].Client]
		if !ok {
			id, next = next, next+1
			current[ops[i].Client] = id
		}
		ids[i] = id
		if ops[i].Outcome == Unknown {
			delete(current, ops[i].Client)
		}
	}
	return ids
}

// Explain checks the rules of the model one at a time, at each location,
// and names the ops that break one: a note answered that no post made, a
// note answered twice, two answers in opposite orders, an answer without
// its own note last, and an acknowledged note missing from an answer of a
// new note that began after it and that the bounds had not filled.
func Explain(ops []Op, b Bounds) []string {
	var findings []string
	byLocation := map[string][]Op{}
	for _, op := range ops {
		byLocation[op.Location] = append(byLocation[op.Location], op)
	}
	locations := make([]string, 0, len(byLocation))
	for loc := range byLocation {
		locations = append(locations, loc)
	}
	slices.Sort(locations)
	for _, loc := range locations {
		findings = append(findings, explainLocation(byLocation[loc], b)...)
	}
	return findings
}

func explainLocation(ops []Op, b Bounds) []string {
	var findings []string
	posts := map[string]int{} // message -> posts of it
	for _, op := range ops {
		posts[op.Message]++
	}
	before := map[[2]string]Op{} // (a, b) -> an answer with a before b
	for _, op := range ops {
		if op.Outcome != Acked {
			continue
		}
		// A retry whose note is forgotten is answered with nothing.
		if (len(op.Answer) > 0 || posts[op.Message] == 1) && (len(op.Answer) == 0 || op.Answer[len(op.Answer)-1] != op.Message) {
			findings = append(findings, fmt.Sprintf("answer without its own note last: %v", op))
		}
		seen := map[string]int{}
		for i, m := range op.Answer {
			seen[m]++
			if posts[m] == 0 {
				findings = append(findings, fmt.Sprintf("note %q answered but never posted here: %v", m, op))
			} else if seen[m] > 1 {
				findings = append(findings, fmt.Sprintf("note %q answered %d times in one answer (posted %d times, under one note id): %v", m, seen[m], posts[m], op))
			}
			for _, later := range op.Answer[i+1:] {
				if other, ok := before[[2]string{later, m}]; ok && later != m {
					findings = append(findings, fmt.Sprintf("notes %q and %q in opposite orders:\n  %v\n  %v", later, m, other, op))
				}
				before[[2]string{m, later}] = op
			}
		}
	}
	longest := maxCost(ops)
	for _, op := range ops {
		// A retry is answered from its note's place, without newer notes.
		if op.Outcome != Acked || posts[op.Message] > 1 || b.filled(op.Answer, longest) != "" {
			continue
		}
		var missing []Op
		for _, acked := range ops {
			if acked.Outcome == Acked && acked.Return < op.Call && !slices.Contains(op.Answer, acked.Message) {
				missing = append(missing, acked)
			}
		}
		if len(missing) > 0 {
			findings = append(findings, fmt.Sprintf("an answer with room for more lacks %d notes acknowledged before it began, such as the first:\n  %v\n  %v", len(missing), missing[0], op))
		}
	}
	return dedupe(findings)
}

func dedupe(findings []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, f := range findings {
		if !seen[f] {
			seen[f] = true
			out = append(out, f)
		}
	}
	return out
}

// Describe lists the ops at location, by call time, for a failure message.
func Describe(ops []Op, location string) string {
	var at []Op
	for _, op := range ops {
		if op.Location == location {
			at = append(at, op)
		}
	}
	slices.SortFunc(at, func(a, b Op) int { return cmp.Compare(a.Call, b.Call) })
	lines := make([]string, len(at))
	for i, op := range at {
		lines[i] = op.String()
	}
	return strings.Join(lines, "\n")
}
