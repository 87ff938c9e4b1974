package discovery

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// interfaces returns the addresses given, all on one interface, eth0, as
// HostAddrs would list them.
func interfaces(addrs ...string) func() ([]HostAddr, error) {
	var list []string
	for _, a := range addrs {
		list = append(list, "eth0="+a)
	}
	return addrsOf(list...)
}

// addrsOf returns a fake host's addresses, each given as interface=address.
func addrsOf(addrs ...string) func() ([]HostAddr, error) {
	return func() ([]HostAddr, error) {
		var out []HostAddr
		for _, a := range addrs {
			name, ip, _ := strings.Cut(a, "=")
			addr, err := netip.ParseAddr(ip)
			if err != nil {
				return nil, err
			}
			out = append(out, HostAddr{Interface: name, Addr: addr})
		}
		return out, nil
	}
}

// noInterfaces fails: a case that uses it must not need the interfaces.
func noInterfaces() ([]HostAddr, error) {
	return nil, errors.New("interfaces consulted")
}

func TestAdvertiseAddrDerivation(t *testing.T) {
	// The host's interfaces in the order the kernel lists them: the first
	// usable one comes after loopback, link-local and IPv6 addresses, and
	// after an address that is not an *net.IPNet.
	host := addrsOf("lo=127.0.0.1", "eth0=169.254.10.20", "lo=::1", "eth0=fe80::1", "eth0=2001:db8::5",
		"eth0=10.1.2.3", "eth0=192.168.1.7")
	tests := []struct {
		name       string
		advertise  string
		listen     string
		port       int
		interfaces func() ([]HostAddr, error)
		want       string
		wantErr    []string // substrings of the error; nil means no error
	}{
		{name: "advertise wins over a listen host", advertise: "node1.example:6000", listen: "127.0.0.1:50051", port: 50051, interfaces: noInterfaces, want: "node1.example:6000"},
		{name: "advertise wins over a wildcard listen", advertise: "10.9.9.9:7000", listen: ":50051", port: 50051, interfaces: noInterfaces, want: "10.9.9.9:7000"},
		{name: "listen with an IP", listen: "192.0.2.10:50051", port: 50051, interfaces: noInterfaces, want: "192.0.2.10:50051"},
		{name: "listen with an IPv6 address", listen: "[2001:db8::7]:50051", port: 50051, interfaces: noInterfaces, want: "[2001:db8::7]:50051"},
		{name: "listen with a hostname", listen: "node1.internal:50051", port: 50051, interfaces: noInterfaces, want: "node1.internal:50051"},
		{name: "listen with an IP and port 0", listen: "127.0.0.1:0", port: 43210, interfaces: noInterfaces, want: "127.0.0.1:43210"},
		{name: "listen with a hostname and port 0", listen: "localhost:0", port: 43210, interfaces: noInterfaces, want: "localhost:43210"},
		{name: "listen with no host", listen: ":50051", port: 50051, interfaces: host, want: "10.1.2.3:50051"},
		{name: "listen on 0.0.0.0", listen: "0.0.0.0:50051", port: 50051, interfaces: host, want: "10.1.2.3:50051"},
		{name: "listen on [::]", listen: "[::]:50051", port: 50051, interfaces: host, want: "10.1.2.3:50051"},
		{name: "listen with no host and port 0", listen: ":0", port: 43210, interfaces: host, want: "10.1.2.3:43210"},
		{name: "listen on 0.0.0.0 and port 0", listen: "0.0.0.0:0", port: 43210, interfaces: host, want: "10.1.2.3:43210"},

		{name: "advertise 0.0.0.0", advertise: "0.0.0.0:50051", listen: ":50051", port: 50051, interfaces: host, wantErr: []string{`"0.0.0.0:50051"`, "cannot dial"}},
		{name: "advertise [::]", advertise: "[::]:50051", listen: ":50051", port: 50051, interfaces: host, wantErr: []string{`"[::]:50051"`, "cannot dial"}},
		{name: "advertise without a host", advertise: ":50051", listen: ":50051", port: 50051, interfaces: host, wantErr: []string{`":50051"`, "cannot dial"}},
		{name: "advertise without a port", advertise: "node1.example", listen: ":50051", port: 50051, interfaces: host, wantErr: []string{`"node1.example"`}},
		{name: "advertise with port 0", advertise: "node1.example:0", listen: ":50051", port: 50051, interfaces: host, wantErr: []string{`"node1.example:0"`, "port"}},
		{name: "advertise with a port that is not a number", advertise: "node1.example:grpc", listen: ":50051", port: 50051, interfaces: host, wantErr: []string{`"node1.example:grpc"`, "port"}},
		{name: "advertise with a port out of range", advertise: "node1.example:70000", listen: ":50051", port: 50051, interfaces: host, wantErr: []string{`"node1.example:70000"`, "port"}},
		{name: "listen that is not host:port", listen: "nowhere", port: 50051, interfaces: host, wantErr: []string{`"nowhere"`}},
		{name: "only loopback, link-local and IPv6 interfaces", listen: ":50051", port: 50051,
			interfaces: interfaces("127.0.0.1", "169.254.1.1", "::1", "fe80::1", "2001:db8::5"),
			wantErr:    []string{`":50051"`, "no non-loopback IPv4", "--advertise"}},
		{name: "no interfaces at all", listen: "0.0.0.0:50051", port: 50051, interfaces: interfaces(),
			wantErr: []string{`"0.0.0.0:50051"`, "--advertise"}},
		{name: "interfaces cannot be listed", listen: "[::]:50051", port: 50051, interfaces: noInterfaces,
			wantErr: []string{"interfaces consulted", "--advertise"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := AdvertiseAddr(tt.advertise, tt.listen, "", tt.port, tt.interfaces)
			if tt.wantErr == nil {
				if err != nil || got != tt.want {
					t.Errorf("AdvertiseAddr(%q, %q, %d) = %q, %v; want %q", tt.advertise, tt.listen, tt.port, got, err, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("AdvertiseAddr(%q, %q, %d) = %q; want an error", tt.advertise, tt.listen, tt.port, got)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			if got != "" {
				t.Errorf("address %q returned with the error", got)
			}
		})
	}
}

// TestAdvertiseAddrNeverReturnsAWildcard: whatever the host's interfaces
// list, the result is an address another host can dial, or an error.
func TestAdvertiseAddrNeverReturnsAWildcard(t *testing.T) {
	for _, listen := range []string{":0", "0.0.0.0:0", "[::]:0"} {
		got, err := AdvertiseAddr("", listen, "", 50051, interfaces("0.0.0.0", "127.0.0.1", "10.0.0.1"))
		if err != nil || got != "10.0.0.1:50051" {
			t.Errorf("listen %q: got %q, %v; want 10.0.0.1:50051", listen, got, err)
		}
	}
}

// The interfaces a container sees, as Docker lays them out: a Swarm task on
// an overlay network, with and without a published port (ingress), and a
// compose container on two networks; and a host running Docker.
var (
	swarmTask        = addrsOf("lo=127.0.0.1", "eth0=10.20.0.7", "eth1=172.18.0.5", "lo=::1")
	swarmTaskIngress = addrsOf("lo=127.0.0.1", "eth0=10.0.0.12", "eth1=10.20.0.7", "eth2=172.18.0.5")
	twoNetworks      = addrsOf("lo=127.0.0.1", "eth0=172.30.1.4", "eth1=172.31.2.9")
	dockerHost       = addrsOf("lo=127.0.0.1", "enp1s0=fe80::5054:ff:fe12:3456", "enp1s0=192.168.122.40",
		"docker0=172.17.0.1", "docker_gwbridge=172.18.0.1", "br-4f2a9c1d0e7b=172.19.0.1", "veth12ab=169.254.3.3")
)

// TestAdvertiseNetwork: with --advertise-network, the address inside it,
// whatever else the host has; an error that lists them when none is.
func TestAdvertiseNetwork(t *testing.T) {
	tests := []struct {
		name    string
		network string
		addrs   func() ([]HostAddr, error)
		want    string
		wantErr []string
	}{
		{name: "swarm task: the overlay, not docker_gwbridge", network: "10.20.0.0/24", addrs: swarmTask, want: "10.20.0.7:50051"},
		{name: "swarm task with ingress: the overlay, not ingress", network: "10.20.0.0/24", addrs: swarmTaskIngress, want: "10.20.0.7:50051"},
		{name: "two networks: the second", network: "172.31.0.0/16", addrs: twoNetworks, want: "172.31.2.9:50051"},
		{name: "two networks: the first", network: "172.30.1.0/24", addrs: twoNetworks, want: "172.30.1.4:50051"},
		{name: "a host address, not a network", network: "172.31.2.9/16", addrs: twoNetworks, want: "172.31.2.9:50051"},
		{name: "a single address", network: "172.31.2.9/32", addrs: twoNetworks, want: "172.31.2.9:50051"},
		{name: "an IPv6 network", network: "2001:db8::/64", addrs: addrsOf("eth0=10.1.1.1", "eth0=2001:db8::5"), want: "[2001:db8::5]:50051"},
		{name: "a Docker bridge named on purpose", network: "172.17.0.0/16", addrs: dockerHost, want: "172.17.0.1:50051"},
		{name: "no address inside", network: "10.99.0.0/16", addrs: swarmTask, wantErr: []string{"10.99.0.0/16", "eth0 10.20.0.7", "eth1 172.18.0.5"}},
		{name: "loopback is never chosen", network: "127.0.0.0/8", addrs: swarmTask, wantErr: []string{"127.0.0.0/8", "no address"}},
		{name: "not a CIDR", network: "10.20.0.0", addrs: swarmTask, wantErr: []string{`"10.20.0.0"`, "CIDR"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := AdvertiseAddr("", ":50051", tt.network, 50051, tt.addrs)
			checkChoice(t, got, err, tt.want, tt.wantErr)
		})
	}
}

// TestAdvertiseAutomatic: without --advertise-network, the one interface
// left once Docker's host bridges are set aside, or an error that asks for
// the flag when several are left.
func TestAdvertiseAutomatic(t *testing.T) {
	tests := []struct {
		name    string
		addrs   func() ([]HostAddr, error)
		want    string
		wantErr []string
	}{
		{name: "a container on one network", addrs: addrsOf("lo=127.0.0.1", "eth0=172.30.1.4"), want: "172.30.1.4:50051"},
		{name: "a host running Docker: not its bridges", addrs: dockerHost, want: "192.168.122.40:50051"},
		{name: "several addresses of one interface: the first", addrs: addrsOf("eth0=10.1.1.1", "eth0=10.1.1.2"), want: "10.1.1.1:50051"},
		{name: "swarm task: refuses to guess", addrs: swarmTask, wantErr: []string{"several networks", "eth0 10.20.0.7", "eth1 172.18.0.5", "--advertise-network"}},
		{name: "swarm task with ingress: refuses to guess", addrs: swarmTaskIngress, wantErr: []string{"several networks", "--advertise-network"}},
		{name: "two networks: refuses to guess", addrs: twoNetworks, wantErr: []string{"several networks", "--advertise-network"}},
		{name: "only Docker bridges", addrs: addrsOf("lo=127.0.0.1", "docker0=172.17.0.1"), wantErr: []string{"no non-loopback IPv4", "docker0 172.17.0.1", "--advertise"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := AdvertiseAddr("", ":50051", "", 50051, tt.addrs)
			checkChoice(t, got, err, tt.want, tt.wantErr)
		})
	}
}

// TestAdvertiseFlagsWinOverNetwork: --advertise and a listen host are used
// as they are, and the interfaces are not consulted.
func TestAdvertiseFlagsWinOverNetwork(t *testing.T) {
	if got, err := AdvertiseAddr("node1.example:6000", ":50051", "10.20.0.0/24", 50051, noInterfaces); err != nil || got != "node1.example:6000" {
		t.Errorf("advertise and network: %q, %v; want node1.example:6000", got, err)
	}
	if got, err := AdvertiseAddr("", "10.20.0.9:50051", "10.30.0.0/24", 50051, noInterfaces); err != nil || got != "10.20.0.9:50051" {
		t.Errorf("listen host and network: %q, %v; want 10.20.0.9:50051", got, err)
	}
}

// TestHostAddrs: the real host's list holds a loopback address, and no
// automatic choice ever returns one.
func TestHostAddrs(t *testing.T) {
	addrs, err := HostAddrs()
	if err != nil {
		t.Fatal(err)
	}
	var loopback bool
	for _, a := range addrs {
		loopback = loopback || a.Addr.IsLoopback()
	}
	if !loopback {
		t.Errorf("HostAddrs() = %v; want a loopback address among them", addrs)
	}
	if ip, err := chooseHostAddr(addrs); err == nil && !usable(ip) {
		t.Errorf("chooseHostAddr(%v) = %v", addrs, ip)
	}
}

func checkChoice(t *testing.T, got string, err error, want string, wantErr []string) {
	t.Helper()
	if wantErr == nil {
		if err != nil || got != want {
			t.Errorf("got %q, %v; want %q", got, err, want)
		}
		return
	}
	if err == nil {
		t.Fatalf("got %q; want an error", got)
	}
	for _, w := range wantErr {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
}
