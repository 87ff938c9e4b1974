package discovery

import (
	"math/rand/v2"
	"time"
)

// Backoff spaces out the retries of a loop that must never give up: the n-th
// delay (from 0) is drawn uniformly from [0, min(Max, Base*2^n)], the "full
// jitter" of the AWS architecture blog's study of backoff, so that nodes that
// lost etcd together do not come back in lock step.
type Backoff struct {
	Base time.Duration
	Max  time.Duration
}

// DefaultBackoff retries quickly at first and never waits more than 2s, so a
// node is back in the registry about 2s at most after etcd returns.
var DefaultBackoff = Backoff{Base: 50 * time.Millisecond, Max: 2 * time.Second}

// Delay is the wait before retry number attempt (from 0). A zero Base or Max
// takes DefaultBackoff's, so that a half-set Backoff never retries in a tight
// loop.
func (b Backoff) Delay(attempt int) time.Duration {
	if b.Base <= 0 {
		b.Base = DefaultBackoff.Base
	}
	if b.Max <= 0 {
		b.Max = DefaultBackoff.Max
	}
	ceiling := b.Max
	if attempt < 32 {
		if d := b.Base << attempt; d > 0 && d < ceiling {
			ceiling = d
		}
	}
	if ceiling <= 0 {
		return 0
	}
	return rand.N(ceiling + 1)
}
