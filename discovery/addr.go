package discovery

import (
	"fmt"
	"net"
	"strconv"
)

// AddrUse says what an address is for, which decides what CheckAddr accepts.
type AddrUse int

const (
	// ListenAddr is an address to listen on, as net.Listen takes it for TCP:
	// the host may be empty, and port 0 picks a free port.
	ListenAddr AddrUse = iota
	// DialAddr is an address that others dial: one registered in etcd, read
	// from it, or advertised. It names a host and a port from 1 to 65535.
	DialAddr
)

// CheckAddr reports what is wrong with addr as a host:port address for use,
// or nil. It is the one address check of the project: flags, the registry
// and the advertised address are all checked by it.
func CheckAddr(addr string, use AddrUse) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: %w", addr, err)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if use == ListenAddr {
		if err != nil {
			return fmt.Errorf("address %q: port must be a number from 0 to 65535", addr)
		}
		return nil
	}
	if host == "" {
		return fmt.Errorf("address %q has no host, and other hosts cannot dial it", addr)
	}
	if err != nil || n == 0 {
		return fmt.Errorf("address %q: port must be a number from 1 to 65535", addr)
	}
	return nil
}

// IsLoopbackHost reports whether host, the host of a host:port address or
// of a URL, is this machine only: "localhost" or a loopback IP. An empty
// host (all interfaces) is not.
func IsLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
