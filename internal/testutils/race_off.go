//go:build !race

package testutils

// RaceEnabled says whether the race detector is on.
const RaceEnabled = false
