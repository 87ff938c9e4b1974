// Package listenaddr checks listen addresses given on the command line, so
// that a malformed one is a usage error before anything starts.
package listenaddr

import (
	"net"
	"strconv"
)

// Valid reports whether addr is what net.Listen accepts for TCP: an optional
// host and a numeric port (0 for any free port).
func Valid(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	_, err = strconv.ParseUint(port, 10, 16)
	return err == nil
}
