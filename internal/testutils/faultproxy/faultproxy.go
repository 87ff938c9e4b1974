// Package faultproxy is a TCP proxy for fault tests: it forwards connections
// to a target until told to cut them, with a reset (connections close at
// once) or silently (bytes stop flowing, as when a cable is cut or a host
// freezes, and nothing tells either side).
package faultproxy

import (
	"net"
	"sync"
)

// Proxy forwards TCP connections from its own address to a target.
type Proxy struct {
	listener net.Listener

	mu      sync.Mutex
	target  string // "" until SetTarget: connections are closed at once
	mode    mode
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup
	resumed chan struct{} // closed when the proxy forwards again after a Blackhole
}

type mode int

const (
	forwarding mode = iota
	refusing        // new connections are closed at once
	silent          // nothing is forwarded; connections stay open
)

// Start listens on 127.0.0.1 at a free port and forwards to target. An empty
// target closes every connection until SetTarget names one: the proxy's
// address can then be handed out (as a node's advertised address, or an etcd
// member's peer URL) before the server behind it has a port.
func Start(target string) (*Proxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{listener: l, target: target, conns: make(map[net.Conn]struct{}), resumed: make(chan struct{})}
	close(p.resumed)
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the address clients dial instead of the target.
func (p *Proxy) Addr() string { return p.listener.Addr().String() }

// SetTarget makes new connections go to target; connections open already
// stay with the target they were made to.
func (p *Proxy) SetTarget(target string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target = target
}

// Cut closes every connection and refuses new ones, as a crashed host whose
// kernel still answers with resets would.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mode == silent {
		close(p.resumed) // release the pipes held back, into closed connections
	}
	p.mode = refusing
	for c := range p.conns {
		c.Close()
	}
}

// Blackhole stops forwarding without closing anything: both sides see a
// connection that is open and silent.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mode != silent {
		p.mode = silent
		p.resumed = make(chan struct{})
	}
}

// Restore forwards again. Connections cut before stay closed; connections
// that were silent carry on.
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mode == silent {
		close(p.resumed)
	}
	p.mode = forwarding
}

// Close stops the proxy, closes every connection, and waits for its goroutines.
func (p *Proxy) Close() {
	p.listener.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	if p.mode == silent {
		close(p.resumed)
	}
	p.mode = refusing
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.listener.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refuse, target := p.mode == refusing, p.target
		p.mu.Unlock()
		if refuse || target == "" {
			client.Close()
			continue
		}
		server, err := net.Dial("tcp", target)
		if err != nil {
			client.Close()
			continue
		}
		if !p.track(client, server) {
			continue
		}
		p.wg.Add(2)
		go p.pipe(server, client)
		go p.pipe(client, server)
	}
}

func (p *Proxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mode == refusing {
		for _, c := range conns {
			c.Close()
		}
		return false
	}
	for _, c := range conns {
		p.conns[c] = struct{}{}
	}
	return true
}

// pipe copies from src to dst, holding data back while the proxy is silent.
func (p *Proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	defer func() {
		dst.Close()
		src.Close()
		p.mu.Lock()
		delete(p.conns, dst)
		delete(p.conns, src)
		p.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			resumed := p.resumed
			p.mu.Unlock()
			<-resumed
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
