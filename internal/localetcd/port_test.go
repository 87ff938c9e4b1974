package localetcd

import (
	"net"
	"strconv"
	"testing"
)

func TestAPickedClientPortIsBelowTheEphemeralRange(t *testing.T) {
	// The kernel gives ports of the ephemeral range to outgoing connections
	// as well: one of them could take a port that etcd gave up while it was
	// stopped, and a restart on it would fail.
	s, err := Start(Config{Dir: t.TempDir(), ClientAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, portText, err := net.SplitHostPort(s.ClientAddr())
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(portText)
	if start := ephemeralStart(); port < lowestPickedPort || port >= start {
		t.Errorf("client port %d, want one in [%d, %d): below the ephemeral range", port, lowestPickedPort, start)
	}
}
