package routeguide

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc/peer"
)

// from is a stream context of a client at host.
func from(host string, port int) context.Context {
	return peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP(host), Port: port}})
}

func TestWriteGateGivesOnePeerAQuarterAndAllPeersTheWhole(t *testing.T) {
	g := newWriteGate(8, 20*time.Millisecond)
	var leaves []func()
	enter := func(ctx context.Context) error {
		leave, err := g.enter(ctx)
		if err == nil {
			leaves = append(leaves, leave)
		}
		return err
	}
	// One host, over several connections, takes 2 of 8.
	for port := range 2 {
		if err := enter(from("10.0.0.1", port)); err != nil {
			t.Fatalf("note %d of the first host: %v", port, err)
		}
	}
	if err := enter(from("10.0.0.1", 99)); !errors.Is(err, errGateFull) {
		t.Fatalf("a third note of the first host: %v, want errGateFull", err)
	}
	// Other hosts take the rest, and no more.
	for i := range 6 {
		if err := enter(from("10.0.0.2", i)); i < 2 && err != nil || i >= 2 && !errors.Is(err, errGateFull) {
			t.Fatalf("note %d of the second host: %v", i, err)
		}
	}
	for host := range 2 {
		for i := range 2 {
			if err := enter(from(net.IPv4(10, 0, 1, byte(host)).String(), i)); err != nil {
				t.Fatalf("note %d of host %d: %v", i, host, err)
			}
		}
	}
	if err := enter(from("10.0.0.9", 1)); !errors.Is(err, errGateFull) {
		t.Fatalf("a ninth note: %v, want errGateFull", err)
	}
	// A note that leaves makes room, and a cancelled wait ends at once.
	leaves[0]()
	if err := enter(from("10.0.0.1", 3)); err != nil {
		t.Fatalf("after a note left: %v", err)
	}
	ctx, cancel := context.WithCancel(from("10.0.0.3", 1))
	cancel()
	if _, err := g.enter(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled note: %v, want context.Canceled", err)
	}
	for _, leave := range leaves[1:] {
		leave()
	}
	if len(g.all) != 0 || len(g.peers) != 0 {
		t.Errorf("after every note left the gate holds %d places and %d peers, want none", len(g.all), len(g.peers))
	}
}
