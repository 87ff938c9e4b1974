//go:build race

package testutils

// RaceEnabled says whether the race detector is on: it makes sync.Pool drop
// items at random, so allocation counts are exact only without it.
const RaceEnabled = true
