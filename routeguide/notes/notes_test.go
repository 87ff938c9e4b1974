package notes_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/routeguide/notes"
	"github.com/routeguide-cluster/routeguide/routeguide/notes/notestest"
)

// note and messages are short names for what every store's tests use.
var (
	note     = notestest.Note
	messages = notestest.Messages
)

func TestMemoryPostAnswersTheLocationsNotesInPostingOrder(t *testing.T) {
	m := notes.NewMemory(notes.Limits{})
	notestest.CheckPostingOrder(t, m)
	if m.Len() != len(notestest.PostingOrderSteps) {
		t.Errorf("Len = %d, want %d", m.Len(), len(notestest.PostingOrderSteps))
	}
}

func TestMemorySnapshotDoesNotChangeAfterwards(t *testing.T) {
	m := notes.NewMemory(notes.Limits{})
	posted := note(1, 1, "a1")
	first, err := m.Post(t.Context(), posted)
	if err != nil {
		t.Fatal(err)
	}
	second, err := m.Post(t.Context(), note(1, 1, "a2"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(messages(first), []string{"a1"}) {
		t.Errorf("a snapshot changed after a later post: %q, want [a1]", messages(first))
	}
	// A caller that appends to its snapshot must not write into the store.
	_ = append(first, note(1, 1, "appended by a caller"))
	_ = append(second, note(1, 1, "appended by a caller"))
	// Nor may the caller's message, changed after posting, change the note.
	posted.Message = "changed by the caller"
	posted.Location.Latitude = 2
	got, err := m.Post(t.Context(), note(1, 1, "a3"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"a1", "a2", "a3"}; !slices.Equal(messages(got), want) {
		t.Errorf("after callers changed their copies: %q, want %q", messages(got), want)
	}
	if !slices.Equal(messages(second), []string{"a1", "a2"}) {
		t.Errorf("a snapshot changed after a later post: %q, want [a1 a2]", messages(second))
	}
	if got[0].Location.Latitude != 1 {
		t.Errorf("the stored note moved to %v with the caller's message", got[0].Location)
	}
}

func TestMemoryLimitsRefuseWithErrLimitAndKeepWhatIsStored(t *testing.T) {
	type post struct {
		note    *pb.RouteNote
		want    []string // the answer when it is stored
		wantErr string   // a substring of the error, which wraps ErrLimit; "" when stored
	}
	tests := []struct {
		name   string
		limits notes.Limits
		posts  []post
	}{
		{
			name:   "notes per location",
			limits: notes.Limits{PerLocation: 2},
			posts: []post{
				{note(1, 1, "a1"), []string{"a1"}, ""},
				{note(1, 1, "a2"), []string{"a1", "a2"}, ""},
				{note(1, 1, "a3"), nil, "keeps 2 notes at most"},
				{note(2, 2, "b1"), []string{"b1"}, ""},
				{note(2, 2, "b2"), []string{"b1", "b2"}, ""},
				{note(1, 1, "a4"), nil, "keeps 2 notes at most"},
			},
		},
		{
			name:   "bytes count the message and the overhead",
			limits: notes.Limits{Bytes: 2*notes.NoteOverhead + 5},
			posts: []post{
				{note(1, 1, "a1"), []string{"a1"}, ""},
				{note(2, 2, "1234"), nil, "store is full (261 bytes at most)"}, // one byte too many
				{note(2, 2, "123"), []string{"123"}, ""},                       // fits exactly
				{note(1, 1, ""), nil, "store is full"},                         // the overhead alone is too much
			},
		},
		{
			name:   "message bytes",
			limits: notes.Limits{MessageBytes: 3},
			posts: []post{
				{note(1, 1, "abc"), []string{"abc"}, ""}, // exactly the bound
				{note(1, 1, "abcd"), nil, "at most 3 bytes"},
				{note(1, 1, "é"), []string{"abc", "é"}, ""}, // bytes, not characters: 2
			},
		},
		{
			name:   "a note larger than the whole store",
			limits: notes.Limits{Bytes: notes.NoteOverhead - 1},
			posts: []post{
				{note(1, 1, ""), nil, "store is full"},
			},
		},
		{
			name:   "both limits, the first reached refuses",
			limits: notes.Limits{PerLocation: 1, Bytes: 3 * notes.NoteOverhead},
			posts: []post{
				{note(1, 1, ""), []string{""}, ""},
				{note(1, 1, ""), nil, "keeps 1 notes at most"},
				{note(2, 2, ""), []string{""}, ""},
				{note(3, 3, ""), []string{""}, ""},
				{note(4, 4, ""), nil, "store is full"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := notes.NewMemory(tt.limits)
			stored := 0
			for i, p := range tt.posts {
				got, err := m.Post(t.Context(), p.note)
				if p.wantErr == "" {
					if err != nil {
						t.Fatalf("post %d: %v", i, err)
					}
					stored++
				} else {
					if !errors.Is(err, notes.ErrLimit) || !strings.Contains(err.Error(), p.wantErr) {
						t.Fatalf("post %d: error %v, want one that wraps ErrLimit and says %q", i, err, p.wantErr)
					}
				}
				if !slices.Equal(messages(got), p.want) {
					t.Errorf("post %d = %q, want %q", i, messages(got), p.want)
				}
				if m.Len() != stored {
					t.Errorf("after post %d: Len = %d, want %d", i, m.Len(), stored)
				}
			}
		})
	}
}

func TestMemoryLimitsOfZeroOrLessMeanNoBound(t *testing.T) {
	for _, limits := range []notes.Limits{{}, {PerLocation: -1, Bytes: -1}} {
		m := notes.NewMemory(limits)
		big := strings.Repeat("x", 1<<20)
		for i := range 1000 {
			if _, err := m.Post(t.Context(), note(1, 1, big)); err != nil {
				t.Fatalf("limits %+v: post %d: %v", limits, i, err)
			}
		}
	}
}

func TestMemoryConcurrentPostsAreAllCounted(t *testing.T) {
	const posters, each, locations = 8, 100, 4
	tests := []struct {
		name   string
		limits notes.Limits
		stored int // how many of the posters*each posts fit
	}{
		{"no limits", notes.Limits{}, posters * each},
		{"notes per location", notes.Limits{PerLocation: 50}, 50 * locations},
		// Every message below is 16 bytes long.
		{"bytes", notes.Limits{Bytes: 150*(notes.NoteOverhead+16) + 10}, 150},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := notes.NewMemory(tt.limits)
			var mu sync.Mutex
			succeeded := 0
			var wg sync.WaitGroup
			for p := range posters {
				wg.Go(func() {
					for i := range each {
						loc := int32(i % locations)
						sent := fmt.Sprintf("poster %d no %04d", p, i)
						got, err := m.Post(t.Context(), note(loc, loc, sent))
						if errors.Is(err, notes.ErrLimit) {
							continue
						}
						if err != nil {
							t.Errorf("post %q: %v", sent, err)
							return
						}
						if len(got) == 0 || got[len(got)-1].Message != sent {
							t.Errorf("post %q: the answer does not end with it: %q", sent, messages(got))
						}
						mu.Lock()
						succeeded++
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			if succeeded != tt.stored || m.Len() != succeeded {
				t.Errorf("%d posts succeeded and Len = %d, want both %d", succeeded, m.Len(), tt.stored)
			}
		})
	}
}

func TestMemoryConcurrentSnapshotsArePrefixesOfOnePostingOrder(t *testing.T) {
	const posters, each = 8, 50
	m := notes.NewMemory(notes.Limits{})
	snapshots := make([][][]string, posters)
	var wg sync.WaitGroup
	for p := range posters {
		wg.Go(func() {
			for i := range each {
				got, err := m.Post(t.Context(), note(5, 5, fmt.Sprintf("poster %d no %d", p, i)))
				if err != nil {
					t.Errorf("poster %d: %v", p, err)
					return
				}
				snapshots[p] = append(snapshots[p], messages(got))
			}
		})
	}
	wg.Wait()
	last, err := m.Post(t.Context(), note(5, 5, "last"))
	if err != nil {
		t.Fatal(err)
	}
	order := messages(last)
	if len(order) != posters*each+1 {
		t.Fatalf("the location holds %d notes, want %d", len(order), posters*each+1)
	}
	for p := range snapshots {
		for i, snapshot := range snapshots[p] {
			if !slices.Equal(snapshot, order[:len(snapshot)]) {
				t.Fatalf("poster %d, post %d: snapshot %q is not a prefix of the posting order", p, i, snapshot)
			}
		}
	}
}

func TestMemoryDoesNotStoreUnknownFields(t *testing.T) {
	unknown := protowire.AppendString(protowire.AppendTag(nil, 99, protowire.BytesType), "smuggled")
	sent := note(1, 1, "hello")
	sent.ProtoReflect().SetUnknown(unknown)
	sent.Location.ProtoReflect().SetUnknown(unknown)

	m := notes.NewMemory(notes.Limits{Bytes: notes.NoteOverhead + 5})
	// The note fits only if its unknown fields are not counted either.
	if _, err := m.Post(t.Context(), sent); err != nil {
		t.Fatalf("post: %v", err)
	}
	m = notes.NewMemory(notes.Limits{})
	if _, err := m.Post(t.Context(), sent); err != nil {
		t.Fatal(err)
	}
	got, err := m.Post(t.Context(), note(1, 1, "next"))
	if err != nil {
		t.Fatal(err)
	}
	stored := got[0]
	if !proto.Equal(stored, note(1, 1, "hello")) {
		t.Errorf("stored note = %v, want it without unknown fields", stored)
	}
	if len(stored.ProtoReflect().GetUnknown()) != 0 || len(stored.Location.ProtoReflect().GetUnknown()) != 0 {
		t.Errorf("stored note keeps unknown fields: %x, location %x",
			stored.ProtoReflect().GetUnknown(), stored.Location.ProtoReflect().GetUnknown())
	}
}

func TestMemoryDropOldestKeepsTheNewestPerLocation(t *testing.T) {
	// Bytes for exactly three notes of two bytes: dropping frees room.
	m := notes.NewMemory(notes.Limits{PerLocation: 3, DropOldest: true, Bytes: 3*(notes.NoteOverhead+2) + notes.NoteOverhead + 1})
	if _, err := m.Post(t.Context(), note(9, 9, "")); err != nil {
		t.Fatal(err)
	}
	var posted []string
	var snapshots [][]*pb.RouteNote
	for i := range 9 {
		msg := fmt.Sprintf("a%d", i)
		posted = append(posted, msg)
		got, err := m.Post(t.Context(), note(1, 1, msg))
		if err != nil {
			t.Fatalf("post %q: %v", msg, err)
		}
		if want := posted[max(0, len(posted)-3):]; !slices.Equal(messages(got), want) {
			t.Errorf("post %q = %q, want the newest 3: %q", msg, messages(got), want)
		}
		snapshots = append(snapshots, got)
	}
	if m.Len() != 4 {
		t.Errorf("Len = %d, want 3 at the full location and 1 elsewhere", m.Len())
	}
	// Answers handed out before a drop do not change after it.
	for i, got := range snapshots {
		if want := posted[max(0, i-2) : i+1]; !slices.Equal(messages(got), want) {
			t.Errorf("answer to post %d changed to %q, want %q", i, messages(got), want)
		}
	}
	// The byte bound still refuses what dropping cannot make room for.
	if _, err := m.Post(t.Context(), note(1, 1, "a longer note")); !errors.Is(err, notes.ErrLimit) {
		t.Errorf("a note larger than what one drop frees: %v, want ErrLimit", err)
	}
	got, err := m.Post(t.Context(), note(1, 1, "ok"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"a7", "a8", "ok"}; !slices.Equal(messages(got), want) {
		t.Errorf("after a refused post: %q, want %q: a refusal must drop nothing", messages(got), want)
	}
}

func TestMemoryAnswersTheNewestNotesThatFitInAnAnswerAndForgetsTheRest(t *testing.T) {
	const answerBytes = 2000
	m := notes.NewMemory(notes.Limits{AnswerBytes: answerBytes, DropOldest: true})
	notestest.CheckAnswerBytes(t, m, answerBytes)
	// The 60 notes cost about 10 KB; the location keeps one answer's worth.
	if m.Len() > answerBytes/notes.NoteOverhead {
		t.Errorf("the location keeps %d notes, more than an answer of %d bytes can hold", m.Len(), answerBytes)
	}
}
