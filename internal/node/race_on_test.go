//go:build race

package node

// raceEnabled says whether the race detector is on: it makes sync.Pool drop
// items at random, so allocation counts are exact only without it.
const raceEnabled = true
