package routeguide

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc/peer"

	"github.com/routeguide-cluster/routeguide/internal/testutils/poll"
)

// from is a stream context of a client at host.
func from(host string, port int) context.Context {
	return peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP(host), Port: port}})
}

func TestWriteGateGivesOneAddressAQuarterAndAlwaysLeavesRoomForOneMore(t *testing.T) {
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
	// A second host takes 2 as well; a third only 8/(3+1) = 2.
	for host := 2; host <= 3; host++ {
		for i := range 3 {
			if err := enter(from(net.IPv4(10, 0, 0, byte(host)).String(), i)); i < 2 && err != nil || i >= 2 && !errors.Is(err, errGateFull) {
				t.Fatalf("note %d of host %d: %v", i, host, err)
			}
		}
	}
	// With four hosts holding, each may hold 8/5 = 1 more: the fourth gets
	// one, and the fifth finds room too.
	if err := enter(from("10.0.0.4", 1)); err != nil {
		t.Fatalf("the fourth host: %v", err)
	}
	if err := enter(from("10.0.0.4", 2)); !errors.Is(err, errGateFull) {
		t.Fatalf("a second note of the fourth host: %v, want errGateFull", err)
	}
	if err := enter(from("10.0.0.5", 1)); err != nil {
		t.Fatalf("the fifth host: %v", err)
	}
	if err := enter(from("10.0.0.9", 1)); !errors.Is(err, errGateFull) {
		t.Fatalf("a ninth note: %v, want errGateFull", err)
	}
	// A note that leaves makes room, and a cancelled wait ends at once.
	leaves[0]()
	if err := enter(from("10.0.0.6", 3)); err != nil {
		t.Fatalf("after a note left: %v", err)
	}
	ctx, cancel := context.WithCancel(from("10.0.0.7", 1))
	cancel()
	if _, err := g.enter(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled note: %v, want context.Canceled", err)
	}
	for _, leave := range leaves[1:] {
		leave()
	}
	if g.inUse != 0 || len(g.groups) != 0 || g.waiting.Len() != 0 {
		t.Errorf("after every note left the gate holds %d places, %d groups and %d waiters, want none", g.inUse, len(g.groups), g.waiting.Len())
	}
}

func TestWriteGateCountsAnIPv6Slash64AsOneAddress(t *testing.T) {
	g := newWriteGate(8, 20*time.Millisecond)
	for i := range 2 {
		if _, err := g.enter(from(fmt.Sprintf("2001:db8:1:2::%x", i+1), 1)); err != nil {
			t.Fatalf("host %d of the /64: %v", i, err)
		}
	}
	if _, err := g.enter(from("2001:db8:1:2:ffff::9", 1)); !errors.Is(err, errGateFull) {
		t.Fatalf("a third host of the same /64: %v, want errGateFull", err)
	}
	if _, err := g.enter(from("2001:db8:1:3::1", 1)); err != nil {
		t.Fatalf("a host of another /64: %v", err)
	}
	// An IPv4 client seen through an IPv6 socket is its IPv4 address.
	if got, want := clientGroup(from("::ffff:10.0.0.1", 1)), clientGroup(from("10.0.0.1", 2)); got != want || got.Bits() != 32 {
		t.Errorf("mapped address groups as %v, want %v", got, want)
	}
}

func TestWriteGateGrantsFreedPlacesInArrivalOrder(t *testing.T) {
	g := newWriteGate(4, 10*time.Second)
	// Four hosts hold one place each (the share is 1 with four groups).
	var leaves []func()
	for host := range 4 {
		leave, err := g.enter(from(net.IPv4(10, 0, 0, byte(host)).String(), 1))
		if err != nil {
			t.Fatal(err)
		}
		leaves = append(leaves, leave)
	}
	// A newcomer waits; when host 0 gives its place back and posts again
	// at once, the newcomer has it, not host 0.
	got := make(chan error, 1)
	go func() {
		leave, err := g.enter(from("10.0.1.1", 1))
		if err == nil {
			leaves = append(leaves, leave) // read after got
		}
		got <- err
	}()
	poll.Until(t, 5*time.Second, "the newcomer to wait", func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.waiting.Len() == 1
	})
	leaves[0]()
	ctx, cancel := context.WithTimeout(from("10.0.0.0", 2), 50*time.Millisecond)
	defer cancel()
	if leave, err := g.enter(ctx); err == nil {
		leave()
		t.Error("host 0 took back the place it gave while a newcomer waited")
	}
	if err := <-got; err != nil {
		t.Fatalf("the newcomer: %v", err)
	}
	for _, leave := range leaves[1:] {
		leave()
	}
}
