package failover

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// cutProxy forwards TCP connections to a node. A cut stops every byte in
// both directions and holds new connections, as a network that drops
// packets does: nothing is refused or reset, so the service learns of the
// cut only from its own timeouts. When the cut ends, what was held flows
// again, as TCP's retransmissions would deliver it, including what a
// client wrote just before it gave up on the connection.
type cutProxy struct {
	ln     net.Listener
	target string

	mu sync.Mutex
	// open is closed while bytes flow; during a cut it is a fresh
	// channel, closed when the cut ends.
	open  chan struct{}
	conns map[net.Conn]struct{}
	done  sync.WaitGroup
}

func startCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, open: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	close(p.open)
	p.done.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *cutProxy) port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// cut stops the traffic until restore.
func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
		p.open = make(chan struct{})
	default:
	}
}

func (p *cutProxy) restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
	default:
		close(p.open)
	}
}

// wait returns once bytes may flow.
func (p *cutProxy) wait() {
	p.mu.Lock()
	open := p.open
	p.mu.Unlock()
	<-open
}

func (p *cutProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

// untrack forgets and closes the connections.
func (p *cutProxy) untrack(conns ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range conns {
		c.Close()
		delete(p.conns, c)
	}
}

func (p *cutProxy) accept() {
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

func (p *cutProxy) serve(c net.Conn) {
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
func (p *cutProxy) pipe(dst, src net.Conn) {
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

func (p *cutProxy) close() {
	p.restore()
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

// The proxy holds bytes and new connections during a cut, and delivers
// them once it ends.
func TestCutProxyHoldsTrafficUntilRestored(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	p := startCutProxy(t, echo.Addr().String())
	dial := func() net.Conn {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p.port()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// roundTrip writes a byte and reads its echo within d.
	roundTrip := func(c net.Conn, b byte, d time.Duration) error {
		if _, err := c.Write([]byte{b}); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(d))
		got := make([]byte, 1)
		if _, err := io.ReadFull(c, got); err != nil {
			return err
		}
		if got[0] != b {
			return fmt.Errorf("echo %q, want %q", got[0], b)
		}
		return nil
	}
	before := dial()
	if err := roundTrip(before, 'a', 5*time.Second); err != nil {
		t.Fatalf("before the cut: %v", err)
	}
	p.cut()
	if err := roundTrip(before, 'b', 200*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("during the cut, an open connection's echo: %v, want none", err)
	}
	during := dial()
	if err := roundTrip(during, 'c', 200*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("during the cut, a new connection's echo: %v, want none", err)
	}
	p.restore()
	// What was held arrives: 'b' on the old connection, 'c' on the new.
	for _, c := range []struct {
		conn net.Conn
		held byte
	}{{before, 'b'}, {during, 'c'}} {
		_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		got := make([]byte, 1)
		if _, err := io.ReadFull(c.conn, got); err != nil || got[0] != c.held {
			t.Fatalf("after the cut, the held byte: %q, %v; want %q", got, err, c.held)
		}
		if err := roundTrip(c.conn, 'd', 5*time.Second); err != nil {
			t.Fatalf("after the cut: %v", err)
		}
	}
}
