// Package testutils holds the small helpers that tests share: whether the
// race detector is on, the process's CPU time, the goroutines' stacks,
// addresses where nothing listens and pseudo-terminals. Helpers that need
// more room, or pull in a library, have packages of their own below it.
package testutils
