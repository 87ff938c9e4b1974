// Package poll waits, in tests, until a condition holds: it checks the
// condition every few milliseconds up to a deadline, so a test waits no
// longer than it must, and when the deadline passes it fails saying what it
// was waiting for. It is how tests wait for something to be ready instead of
// sleeping for a guessed time.
package poll

import (
	"testing"
	"time"
)

// Interval is the time between two checks.
const Interval = 5 * time.Millisecond

// Until checks cond until it returns true, and fails tb if it has not within.
func Until(tb testing.TB, within time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("still waiting after %v for %s", within, what)
		}
		time.Sleep(Interval)
	}
}
