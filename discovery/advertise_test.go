package discovery

import (
	"errors"
	"net"
	"strings"
	"testing"
)

// interfaces returns an interface list for AdvertiseAddr, as net.InterfaceAddrs
// would report it.
func interfaces(cidrs ...string) func() ([]net.Addr, error) {
	return func() ([]net.Addr, error) {
		var addrs []net.Addr
		for _, c := range cidrs {
			ip, ipNet, err := net.ParseCIDR(c)
			if err != nil {
				return nil, err
			}
			ipNet.IP = ip
			addrs = append(addrs, ipNet)
		}
		return addrs, nil
	}
}

// noInterfaces fails: a case that uses it must not need the interfaces.
func noInterfaces() ([]net.Addr, error) {
	return nil, errors.New("interfaces consulted")
}

func TestAdvertiseAddrDerivation(t *testing.T) {
	// The host's interfaces in the order the kernel lists them: the first
	// usable one comes after loopback, link-local and IPv6 addresses, and
	// after an address that is not an *net.IPNet.
	host := func() ([]net.Addr, error) {
		addrs, err := interfaces("127.0.0.1/8", "169.254.10.20/16", "::1/128", "fe80::1/64", "2001:db8::5/64",
			"10.1.2.3/24", "192.168.1.7/24")()
		return append([]net.Addr{&net.IPAddr{IP: net.ParseIP("172.16.0.9")}}, addrs...), err
	}
	tests := []struct {
		name       string
		advertise  string
		listen     string
		port       int
		interfaces func() ([]net.Addr, error)
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
			interfaces: interfaces("127.0.0.1/8", "169.254.1.1/16", "::1/128", "fe80::1/64", "2001:db8::5/64"),
			wantErr:    []string{`":50051"`, "no non-loopback IPv4", "--advertise"}},
		{name: "no interfaces at all", listen: "0.0.0.0:50051", port: 50051, interfaces: interfaces(),
			wantErr: []string{`"0.0.0.0:50051"`, "--advertise"}},
		{name: "interfaces cannot be listed", listen: "[::]:50051", port: 50051, interfaces: noInterfaces,
			wantErr: []string{"interfaces consulted", "--advertise"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := AdvertiseAddr(tt.advertise, tt.listen, tt.port, tt.interfaces)
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
		got, err := AdvertiseAddr("", listen, 50051, interfaces("0.0.0.0/0", "127.0.0.1/8", "10.0.0.1/8"))
		if err != nil || got != "10.0.0.1:50051" {
			t.Errorf("listen %q: got %q, %v; want 10.0.0.1:50051", listen, got, err)
		}
	}
}
