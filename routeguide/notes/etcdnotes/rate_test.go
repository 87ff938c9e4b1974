package etcdnotes_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/routeguide-cluster/routeguide/internal/testutils/etcdtest"
	"github.com/routeguide-cluster/routeguide/routeguide/notes"
	"github.com/routeguide-cluster/routeguide/routeguide/notes/notestest"
)

// TestEtcdWritesNoMoreNotesASecondThanItsWriteRate posts from more clients
// than the rate lets through: the notes stored in the time it took are at
// most the rate's, and its burst, however fast etcd answers.
func TestEtcdWritesNoMoreNotesASecondThanItsWriteRate(t *testing.T) {
	const posters, each = 10, 10
	cfg := testConfig(t)
	cfg.WriteRate = 40
	store := newEtcd(t, newClient(t, etcdtest.Start(t).ClientURL()), cfg)
	var stored atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for p := range posters {
		wg.Go(func() {
			for i := range each {
				if _, err := store.Post(t.Context(), notestest.Note(1, int32(p), fmt.Sprint(i))); err != nil {
					t.Error(err)
					return
				}
				stored.Add(1)
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	burst := cfg.WriteRate / 10
	if n, most := stored.Load(), int64(burst)+int64(took.Seconds()*float64(cfg.WriteRate))+1; n != posters*each || n > most {
		t.Errorf("stored %d notes in %v, want %d and at most %d (%d a second, %d at once)", n, took, posters*each, most, cfg.WriteRate, burst)
	}
}

// TestEtcdANoteWhoseTurnComesAfterItsDeadlineIsRefused: a post waits its
// turn within its deadline and the store's Timeout, and past them is
// refused with ErrWriteRate, an ErrLimit, which the service answers with
// RESOURCE_EXHAUSTED.
func TestEtcdANoteWhoseTurnComesAfterItsDeadlineIsRefused(t *testing.T) {
	cfg := testConfig(t)
	cfg.WriteRate = 1
	store := newEtcd(t, newClient(t, etcdtest.Start(t).ClientURL()), cfg)
	if _, err := store.Post(t.Context(), notestest.Note(1, 1, "first")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	_, err := store.Post(ctx, notestest.Note(1, 1, "too soon"))
	if !errors.Is(err, notes.ErrWriteRate) || !errors.Is(err, notes.ErrLimit) {
		t.Errorf("a post whose turn comes after its deadline: %v, want ErrWriteRate", err)
	}
	got, err := store.Post(t.Context(), notestest.Note(1, 1, "waits its turn"))
	if err != nil {
		t.Fatalf("a post whose turn comes within its deadline: %v", err)
	}
	if want := []string{"first", "waits its turn"}; fmt.Sprint(notestest.Messages(got)) != fmt.Sprint(want) {
		t.Errorf("answer %q, want %q", notestest.Messages(got), want)
	}
}
