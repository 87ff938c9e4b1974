package listenaddr

import "testing"

func TestValidAcceptsWhatListenAccepts(t *testing.T) {
	tests := []struct {
		addr string
		want bool
	}{
		{":50051", true},
		{"127.0.0.1:0", true},
		{"[::1]:9090", true},
		{"localhost:9090", true},
		{"127.0.0.1", false},
		{"127.0.0.1:http", false},
		{"127.0.0.1:65536", false},
		{"127.0.0.1:-1", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := Valid(tt.addr); got != tt.want {
			t.Errorf("Valid(%q) = %v, want %v", tt.addr, got, tt.want)
		}
	}
}
