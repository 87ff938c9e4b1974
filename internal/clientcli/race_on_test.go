//go:build race

package clientcli

// raceEnabled says that the race detector is on: allocation counts then
// mean nothing.
const raceEnabled = true
