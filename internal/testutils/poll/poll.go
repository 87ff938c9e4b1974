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

// UntilReported checks check every interval until it reports done, and
// fails tb if it has not within, with check's last word on the state it saw.
// For checks that are slow or costly (a docker command, a Prometheus query),
// where the interval matters and the last state explains a failure.
func UntilReported(tb testing.TB, within, interval time.Duration, what string, check func() (done bool, state string)) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for {
		done, state := check()
		if done {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("still waiting after %v for %s; last: %s", within, what, state)
		}
		time.Sleep(interval)
	}
}
