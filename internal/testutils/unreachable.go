package testutils

import (
	"fmt"
	"net"
	"testing"
)

// UnreachableAddrs returns n distinct addresses 127.1.x.y:port on loopback,
// where port was free on 127.0.0.1 a moment ago and nothing listens on it
// now: every connection to them is refused at once, and never reaches
// beyond this machine.
func UnreachableAddrs(tb testing.TB, n int) []string {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	port := lis.Addr().(*net.TCPAddr).Port
	lis.Close()
	addrs := make([]string, n)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("127.1.%d.%d:%d", i/250, i%250+1, port)
	}
	return addrs
}

// UnreachableAddr is one of UnreachableAddrs.
func UnreachableAddr(tb testing.TB) string {
	tb.Helper()
	return UnreachableAddrs(tb, 1)[0]
}
