package discovery

import (
	"errors"
	"fmt"
	"net"
	"strconv"
)

// AdvertiseAddr chooses the address a node registers, in this order: the
// advertise flag when set; else the host of the listen address when it names
// one; else the first non-loopback IPv4 address of the host (in a container,
// the container's own). port is the port actually listened on, which tells
// ":0" apart from the chosen port. It never returns a wildcard address such
// as 0.0.0.0 or ::, which no other host can dial.
func AdvertiseAddr(advertise, listen string, port int, interfaceAddrs func() ([]net.Addr, error)) (string, error) {
	if advertise != "" {
		if err := CheckAddr(advertise, DialAddr); err != nil {
			return "", fmt.Errorf("advertise %w", err)
		}
		if host, _, _ := net.SplitHostPort(advertise); net.ParseIP(host).IsUnspecified() {
			return "", fmt.Errorf("advertise address %q: other hosts cannot dial %q", advertise, host)
		}
		return advertise, nil
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("listen address %q: %w", listen, err)
	}
	if host != "" {
		if ip := net.ParseIP(host); ip == nil || !ip.IsUnspecified() {
			return net.JoinHostPort(host, strconv.Itoa(port)), nil
		}
	}
	ip, err := firstNonLoopbackIPv4(interfaceAddrs)
	if err != nil {
		return "", fmt.Errorf("listening on %q, so the advertised address must come from the host's interfaces: %w (set --advertise)", listen, err)
	}
	return net.JoinHostPort(ip.String(), strconv.Itoa(port)), nil
}

func firstNonLoopbackIPv4(interfaceAddrs func() ([]net.Addr, error)) (net.IP, error) {
	if interfaceAddrs == nil {
		interfaceAddrs = net.InterfaceAddrs
	}
	addrs, err := interfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("list interface addresses: %w", err)
	}
	for _, a := range addrs {
		ipNet, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip := ipNet.IP.To4()
		if ip != nil && !ip.IsLoopback() && !ip.IsLinkLocalUnicast() && !ip.IsUnspecified() {
			return ip, nil
		}
	}
	return nil, errors.New("no non-loopback IPv4 address found")
}
