package servertest

import (
	"errors"
	"io"
	"net"
	"net/url"
	"sync"
)

// tcpProxy forwards connections to a target address until it is cut.
type tcpProxy struct {
	listener net.Listener
	target   string

	mu     sync.Mutex
	isCut  bool
	conns  map[net.Conn]struct{}
	closed bool
}

// proxyDatabase starts a proxy to the database of dbURL and returns the
// URL that goes through it.
func proxyDatabase(dbURL string) (string, *tcpProxy, error) {
	u, err := url.Parse(dbURL)
	if err != nil || u.Host == "" {
		return "", nil, errors.New("the database URL must be a postgres:// URL with a host and port")
	}
	target := u.Host
	if u.Port() == "" {
		target = net.JoinHostPort(u.Hostname(), "5432")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	p := &tcpProxy{listener: l, target: target, conns: map[net.Conn]struct{}{}}
	go p.serve()
	u.Host = l.Addr().String()
	return u.String(), p, nil
}

func (p *tcpProxy) serve() {
	for {
		client, err := p.listener.Accept()
		if err != nil {
			return
		}
		go p.forward(client)
	}
}

func (p *tcpProxy) forward(client net.Conn) {
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		client.Close()
		return
	}
	if !p.track(client, server) {
		client.Close()
		server.Close()
		return
	}
	var wg sync.WaitGroup
	wg.Add(2)
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		// Either side ending ends both.
		dst.Close()
		src.Close()
	}
	go pipe(server, client)
	go pipe(client, server)
	wg.Wait()
	p.untrack(client, server)
}

// track registers a connection pair unless the proxy is cut or closed.
func (p *tcpProxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.isCut || p.closed {
		return false
	}
	for _, c := range conns {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *tcpProxy) untrack(conns ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range conns {
		delete(p.conns, c)
	}
}

// cut breaks every connection and refuses new ones until restore.
func (p *tcpProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.isCut = true
	for c := range p.conns {
		c.Close()
	}
}

func (p *tcpProxy) restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.isCut = false
}

func (p *tcpProxy) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.cut()
	_ = p.listener.Close()
}
