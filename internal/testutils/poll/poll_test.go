package poll

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

func TestUntilReturnsOnceTheConditionHolds(t *testing.T) {
	checks := 0
	Until(t, 5*time.Second, "the third check", func() bool {
		checks++
		return checks == 3
	})
	if checks != 3 {
		t.Errorf("checked %d times, want 3", checks)
	}
}

func TestUntilFailsAfterTheDeadlineSayingWhat(t *testing.T) {
	rec := &recorder{T: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Until(rec, 20*time.Millisecond, "something that never happens", func() bool { return false })
	}()
	<-done
	if rec.msg == "" {
		t.Fatal("Until returned without failing")
	}
	if want := "still waiting after 20ms for something that never happens"; rec.msg != want {
		t.Errorf("failure %q, want %q", rec.msg, want)
	}
}

// recorder is a testing.TB whose Fatalf records the message and ends the
// goroutine, as testing.T's does.
type recorder struct {
	*testing.T
	msg string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestUntilReportedFailsWithTheLastStateItSaw(t *testing.T) {
	rec := &recorder{T: t}
	done := make(chan struct{})
	checks := 0
	go func() {
		defer close(done)
		UntilReported(rec, 20*time.Millisecond, time.Millisecond, "three targets up", func() (bool, string) {
			checks++
			return false, fmt.Sprintf("%d up", checks)
		})
	}()
	<-done
	if want := fmt.Sprintf("still waiting after 20ms for three targets up; last: %d up", checks); rec.msg != want {
		t.Errorf("failure %q, want %q", rec.msg, want)
	}
}
