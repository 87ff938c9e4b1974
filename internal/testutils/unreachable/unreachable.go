// Package unreachable gives tests addresses on loopback where nothing
// listens, so that every connection to them is refused at once: registry
// entries and endpoints that can never answer, and never anything beyond
// this machine.
package unreachable

import (
	"fmt"
	"net"
	"testing"
)

// Addrs returns n distinct addresses 127.1.x.y:port, where port was free on
// 127.0.0.1 a moment ago and nothing listens on it now.
func Addrs(tb testing.TB, n int) []string {
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
