package faultproxy

import (
	"io"
	"net"
	"testing"
	"time"
)

// echoServer echoes every connection back until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return l.Addr().String()
}

func roundTrip(t *testing.T, c net.Conn, msg string) error {
	t.Helper()
	c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	_, err := io.ReadFull(c, buf)
	return err
}

// dial connects to p until the test ends.
func dial(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestProxyForwardsBlackholesAndCuts(t *testing.T) {
	p, err := Start(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c := dial(t, p)
	if err := roundTrip(t, c, "hello"); err != nil {
		t.Fatalf("forwarding: %v", err)
	}
	p.Blackhole()
	if err := roundTrip(t, c, "lost"); err == nil {
		t.Fatal("a silent proxy answered")
	}
	p.Restore()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, len("lost"))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "lost" {
		t.Fatalf("bytes held back while silent did not arrive after Restore: %q, %v", buf, err)
	}
	p.Cut()
	if err := roundTrip(t, c, "cut"); err == nil {
		t.Fatal("a cut connection still carried data")
	}
}

// TestCloseAfterBlackholeAndCutReturns: pipes held back by a silence must be
// released by a Cut, or Close waits for them forever.
func TestCloseAfterBlackholeAndCutReturns(t *testing.T) {
	p, err := Start(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, p)
	if err := roundTrip(t, c, "hello"); err != nil {
		t.Fatal(err)
	}
	p.Blackhole()
	c.Write([]byte("held"))
	p.Cut()
	closed := make(chan struct{})
	go func() { p.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
}

// TestProxyWithoutTargetRefusesUntilSetTarget: the proxy's address can be
// handed out before the server behind it listens.
func TestProxyWithoutTargetRefusesUntilSetTarget(t *testing.T) {
	p, err := Start("")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := roundTrip(t, dial(t, p), "early"); err == nil {
		t.Fatal("a proxy without a target carried data")
	}
	p.SetTarget(echoServer(t))
	if err := roundTrip(t, dial(t, p), "hello"); err != nil {
		t.Fatalf("after SetTarget: %v", err)
	}
}
