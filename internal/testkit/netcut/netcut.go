// Package netcut is a TCP proxy for tests that cuts a network path: during
// a cut every byte in both directions is held and new connections reach
// nobody, as a network that drops packets behaves.
package netcut

import (
	"net"
	"sync"
	"testing"
)

// Proxy forwards TCP connections to a node. A cut stops every byte in
// both directions and holds new connections, as a network that drops
// packets does: nothing is refused or reset, so the service learns of the
// cut only from its own timeouts. When the cut ends, what was held flows
// again, as TCP's retransmissions would deliver it, including what a
// client wrote just before it gave up on the connection.
type Proxy struct {
	ln     net.Listener
	target string

	mu sync.Mutex
	// open is closed while bytes flow; during a cut it is a fresh
	// channel, closed when the cut ends.
	open  chan struct{}
	conns map[net.Conn]struct{}
	done  sync.WaitGroup
}

// Start starts a proxy to target (host:port) on a free loopback port; the
// test's cleanup closes it.
func Start(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target, open: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	close(p.open)
	p.done.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// Port is the port the proxy listens on.
func (p *Proxy) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// Cut stops the traffic until Restore.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
		p.open = make(chan struct{})
	default:
	}
}

// Restore lets the traffic through again.
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
	default:
		close(p.open)
	}
}

// wait returns once bytes may flow.
func (p *Proxy) wait() {
	p.mu.Lock()
	open := p.open
	p.mu.Unlock()
	<-open
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

// untrack forgets and closes the connections.
func (p *Proxy) untrack(conns ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range conns {
		c.Close()
		delete(p.conns, c)
	}
}

func (p *Proxy) accept() {
	defer p.done.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			c.Close()
			return
		}
		p.done.Add(1)
		go func() {
			defer p.done.Done()
			p.serve(c)
		}()
	}
}

func (p *Proxy) serve(c net.Conn) {
	defer c.Close()
	// A connection opened during a cut reaches nobody until it ends.
	p.wait()
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	if !p.track(up) {
		up.Close()
		return
	}
	defer p.untrack(c, up)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(up, c) }()
	go func() { defer wg.Done(); p.pipe(c, up) }()
	wg.Wait()
}

// pipe copies from src to dst, holding each read until the cut ends;
// at the end of either side it closes both, so the other pipe ends too.
func (p *Proxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.wait()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *Proxy) close() {
	p.Restore()
	p.ln.Close()
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for c := range conns {
		c.Close()
	}
	p.done.Wait()
}
