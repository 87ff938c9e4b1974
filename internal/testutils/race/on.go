//go:build race

// Package race tells tests whether they run under the race detector.
package race

// Enabled says whether the race detector is on: it makes sync.Pool drop
// items at random, so allocation counts are exact only without it.
const Enabled = true
