package discovery

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// HostAddr is one address of one of the host's network interfaces.
type HostAddr struct {
	Interface string
	Addr      netip.Addr
}

// HostAddrs lists the addresses of the host's interfaces that are up, in the
// order the kernel lists them.
func HostAddrs() ([]HostAddr, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	var out []HostAddr
	for _, iface := range ifaces {
		if iface.Flags&net.FlagUp == 0 {
			continue
		}
		addrs, err := iface.Addrs()
		if err != nil {
			return nil, fmt.Errorf("list addresses of %s: %w", iface.Name, err)
		}
		for _, a := range addrs {
			if ipNet, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(ipNet.IP); ok {
					out = append(out, HostAddr{Interface: iface.Name, Addr: ip.Unmap()})
				}
			}
		}
	}
	return out, nil
}

// ParseNetwork reads an --advertise-network value: a CIDR such as
// 10.20.0.0/24. It is the one check of that value.
func ParseNetwork(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR such as 10.20.0.0/24", s)
	}
	return p.Masked(), nil
}

// AdvertiseAddr chooses the address a node registers, in this order: the
// advertise flag when set; else the host of the listen address when it names
// one; else the host's address inside network (a CIDR) when it is set; else
// the one network address of the host (see chooseHostAddr). port is the port
// actually listened on, which tells ":0" apart from the chosen port. It never
// returns a wildcard address such as 0.0.0.0 or ::, which no other host can
// dial. hostAddrs nil means HostAddrs.
func AdvertiseAddr(advertise, listen, network string, port int, hostAddrs func() ([]HostAddr, error)) (string, error) {
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
	if hostAddrs == nil {
		hostAddrs = HostAddrs
	}
	addrs, err := hostAddrs()
	if err != nil {
		return "", fmt.Errorf("listening on %q, so the advertised address must come from the host's interfaces: %w (set --advertise)", listen, err)
	}
	var ip netip.Addr
	if network != "" {
		prefix, err := ParseNetwork(network)
		if err != nil {
			return "", fmt.Errorf("advertise network: %w", err)
		}
		ip, err = addrIn(prefix, addrs)
		if err != nil {
			return "", err
		}
	} else if ip, err = chooseHostAddr(addrs); err != nil {
		return "", fmt.Errorf("listening on %q, so the advertised address must come from the host's interfaces: %w", listen, err)
	}
	return net.JoinHostPort(ip.String(), strconv.Itoa(port)), nil
}

// addrIn is the first address inside prefix.
func addrIn(prefix netip.Prefix, addrs []HostAddr) (netip.Addr, error) {
	for _, a := range addrs {
		if prefix.Contains(a.Addr) && usable(a.Addr) {
			return a.Addr, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("advertise network %s: no address of this host is inside it (the host has %s)", prefix, listAddrs(addrs))
}

// chooseHostAddr is the automatic choice, when neither --advertise nor
// --advertise-network is set. The candidates are the IPv4 addresses that
// are not loopback, link-local or unspecified, on interfaces other than
// Docker's bridges on a host (docker0, docker_gwbridge, br-*, veth*), which
// only that host reaches. All on one interface: its first. On several, it
// refuses to guess: a Swarm task has one on its overlay network and one on
// docker_gwbridge (which holds its default route), and nothing inside the
// container tells the two apart. See docs/OPERATIONS.md, "Which address a
// node advertises".
func chooseHostAddr(addrs []HostAddr) (netip.Addr, error) {
	var candidates []HostAddr
	for _, a := range addrs {
		if a.Addr.Is4() && usable(a.Addr) && !dockerBridge(a.Interface) {
			candidates = append(candidates, a)
		}
	}
	if len(candidates) == 0 {
		return netip.Addr{}, fmt.Errorf("no non-loopback IPv4 address found (the host has %s); set --advertise", listAddrs(addrs))
	}
	for _, a := range candidates[1:] {
		if a.Interface != candidates[0].Interface {
			return netip.Addr{}, fmt.Errorf("the host has addresses on several networks (%s), and any one may be reachable from this host only; set --advertise-network to the CIDR of the network other nodes and clients reach (or --advertise)", listAddrs(candidates))
		}
	}
	return candidates[0].Addr, nil
}

func usable(ip netip.Addr) bool {
	return ip.IsValid() && !ip.IsLoopback() && !ip.IsLinkLocalUnicast() && !ip.IsUnspecified() && !ip.IsMulticast()
}

// dockerBridge tells the interfaces Docker makes on a host, for its bridge
// networks, from the host's own.
func dockerBridge(name string) bool {
	return name == "docker0" || name == "docker_gwbridge" || strings.HasPrefix(name, "br-") || strings.HasPrefix(name, "veth")
}

func listAddrs(addrs []HostAddr) string {
	if len(addrs) == 0 {
		return "no address"
	}
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.Interface + " " + a.Addr.String()
	}
	return strings.Join(s, ", ")
}
