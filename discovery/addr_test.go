package discovery

import "testing"

func TestCheckAddrAcceptsWhatEachUseTakes(t *testing.T) {
	tests := []struct {
		addr         string
		listen, dial bool // whether CheckAddr accepts it for ListenAddr, DialAddr
	}{
		{":50051", true, false},
		{"127.0.0.1:0", true, false},
		{"127.0.0.1:50051", true, true},
		{"[::1]:9090", true, true},
		{"localhost:9090", true, true},
		{"node1.example:65535", true, true},
		{"127.0.0.1", false, false},
		{"127.0.0.1:http", false, false},
		{"127.0.0.1:65536", false, false},
		{"127.0.0.1:-1", false, false},
		{"", false, false},
	}
	for _, tt := range tests {
		if err := CheckAddr(tt.addr, ListenAddr); (err == nil) != tt.listen {
			t.Errorf("CheckAddr(%q, ListenAddr) = %v, want accepted %v", tt.addr, err, tt.listen)
		}
		if err := CheckAddr(tt.addr, DialAddr); (err == nil) != tt.dial {
			t.Errorf("CheckAddr(%q, DialAddr) = %v, want accepted %v", tt.addr, err, tt.dial)
		}
	}
}
