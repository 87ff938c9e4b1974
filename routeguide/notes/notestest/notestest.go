// Package notestest holds what the tests of every notes.Store share: the
// posting-order table that each store must pass, and small helpers.
package notestest

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/routeguide/notes"
)

// Note is a note with message at (lat, lon).
func Note(lat, lon int32, message string) *pb.RouteNote {
	return &pb.RouteNote{Location: &pb.Point{Latitude: lat, Longitude: lon}, Message: message}
}

// Messages are the messages of list, in order.
func Messages(list []*pb.RouteNote) []string {
	out := make([]string, len(list))
	for i, n := range list {
		out[i] = n.Message
	}
	return out
}

// PostingOrderSteps are posts and the answer each must get from an empty
// store without limits. Every Store must pass them.
var PostingOrderSteps = []struct {
	Note *pb.RouteNote
	Want []string
}{
	{Note(1, 1, "a1"), []string{"a1"}},
	{Note(1, 1, "a2"), []string{"a1", "a2"}},
	{Note(1, 2, "b1"), []string{"b1"}},
	{Note(2, 1, "c1"), []string{"c1"}}, // swapped coordinates are another location
	{Note(-1, -1, "d1"), []string{"d1"}},
	{Note(1, 10, "e1"), []string{"e1"}}, // a location whose key extends another's
	{Note(11, 1, "f1"), []string{"f1"}}, // and one that another's key ends
	{Note(1, 1, "a3"), []string{"a1", "a2", "a3"}},
	{Note(1, 1, "a3"), []string{"a1", "a2", "a3", "a3"}},   // the same text twice is two notes
	{Note(1, 1, ""), []string{"a1", "a2", "a3", "a3", ""}}, // an empty message is a note
}

// CheckPostingOrder runs PostingOrderSteps against store, which is empty.
func CheckPostingOrder(t testing.TB, store notes.Store) {
	t.Helper()
	for _, step := range PostingOrderSteps {
		got, err := store.Post(t.Context(), step.Note)
		if err != nil {
			t.Fatalf("post %q: %v", step.Note.Message, err)
		}
		if !slices.Equal(Messages(got), step.Want) {
			t.Errorf("post %q at %v = %q, want %q", step.Note.Message, step.Note.Location, Messages(got), step.Want)
		}
		for _, n := range got {
			if !proto.Equal(n.Location, step.Note.Location) {
				t.Errorf("post at %v returned a note at %v", step.Note.Location, n.Location)
			}
		}
	}
}

// CheckOnePostingOrder checks the answers of writers posting at one location
// at once against order, the location's notes after them all: order holds
// want notes, each once, and every answer (answers[w][i], the messages
// answered to post i of writer w) is a prefix of order, as the answers of one
// server would be.
func CheckOnePostingOrder(t testing.TB, order []string, want int, answers [][][]string) {
	t.Helper()
	if len(order) != want {
		t.Fatalf("the location holds %d notes, want %d: a note was lost", len(order), want)
	}
	seen := make(map[string]bool)
	for _, m := range order {
		if seen[m] {
			t.Errorf("note %q is twice in the posting order", m)
		}
		seen[m] = true
	}
	for w := range answers {
		for i, answer := range answers[w] {
			if len(answer) > len(order) || !slices.Equal(answer, order[:len(answer)]) {
				t.Errorf("writer %d: answer to note %d = %q, not a prefix of the posting order %q", w, i, answer, order)
			}
		}
	}
}

// CheckAnswerBytes posts notes of many sizes at one location of store, whose
// Limits.AnswerBytes is answerBytes, and checks that every answer holds the
// newest notes whose notes.Cost fits in answerBytes, oldest first.
func CheckAnswerBytes(t testing.TB, store notes.Store, answerBytes int) {
	t.Helper()
	var posted []string
	for i := range 60 {
		message := strings.Repeat(string(rune('a'+i%26)), i*37%300)
		got, err := store.Post(t.Context(), Note(7, 7, message))
		if err != nil {
			t.Fatalf("post %d: %v", i, err)
		}
		posted = append(posted, message)
		var want []string
		for room, j := answerBytes, len(posted)-1; j >= 0; j-- {
			if room -= notes.Cost(posted[j]); room < 0 {
				break
			}
			want = append(want, posted[j])
		}
		slices.Reverse(want)
		if !slices.Equal(Messages(got), want) {
			t.Fatalf("post %d: answered %d notes, want the newest %d that fit in %d bytes", i, len(got), len(want), answerBytes)
		}
	}
}
