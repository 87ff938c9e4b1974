// Package testutils holds the small helpers that tests share: building the
// commands a test runs, whether the race detector is on, the process's CPU
// time, the goroutines' stacks, addresses where nothing listens and
// pseudo-terminals. It imports the standard library only, so that the
// benchmark modules use it too. Helpers that need more room, or pull in a
// library, have packages of their own below it.
package testutils
