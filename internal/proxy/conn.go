package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
)

type closeWriter interface{ CloseWrite() error }

// trackedConn is an accepted connection. It replays the bytes read to classify it, and leaves
// its generation (and the active-connections gauge) when it is closed, whoever closes it: a
// server, a TCP pipe or Drain.
type trackedConn struct {
	net.Conn
	replay
	gen    *generation
	dir    direction
	closed atomic.Bool

	// listener, accepted and kind describe the connection in the report of a cut (retire.go).
	listener string
	accepted time.Time
	kind     atomic.Uint32 // a connKind, set once the connection is classified

	// peer is the SPIFFE ID of an inbound mTLS client, set after the handshake and before the
	// connection is served (X-Meshlift-Peer-Identity).
	peer string

	// The HTTP/1 server's view (ConnState hook), for closing idle connections in a drain.
	http1State atomic.Int32 // 0: not served by the HTTP/1 server; else http.ConnState+1
	http1Since atomic.Int64 // Unix nanoseconds of the last change to StateNew or StateIdle
}

// trackedOf finds the accepted connection under what a server was given.
func trackedOf(c net.Conn) *trackedConn {
	for {
		switch conn := c.(type) {
		case *trackedConn:
			return conn
		case *tls.Conn:
			c = conn.NetConn()
		case *prefixConn:
			c = conn.Conn
		default:
			return nil
		}
	}
}

func recordHTTP1State(c net.Conn, state http.ConnState) {
	tc := trackedOf(c)
	if tc == nil {
		return
	}
	if state == http.StateNew || state == http.StateIdle {
		tc.http1Since.Store(time.Now().UnixNano())
	}
	tc.http1State.Store(int32(state) + 1)
}

func (c *trackedConn) Read(b []byte) (int, error) {
	if n, ok := c.readBuffered(b); ok {
		return n, nil
	}
	return c.Conn.Read(b)
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	if c.closed.CompareAndSwap(false, true) {
		c.gen.forget(c)
	}
	return err
}

// CloseWrite half-closes the TCP connection (end of a TCP pipe's direction).
func (c *trackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return nil
}

// prefixConn replays bytes read from inside a TLS connection. It hides the *tls.Conn from
// net/http on purpose: a conn that is not a *tls.Conn is served as plaintext, which is what the
// bytes inside the tunnel are.
type prefixConn struct {
	net.Conn
	replay
}

func (c *prefixConn) Read(b []byte) (int, error) {
	if n, ok := c.readBuffered(b); ok {
		return n, nil
	}
	return c.Conn.Read(b)
}

func (c *prefixConn) CloseWrite() error {
	if cw, ok := c.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return nil
}

// connQueue is the net.Listener an HTTP/1 http.Server serves: the proxy accepts, classifies and
// (inbound) terminates TLS itself, then hands the connection over.
type connQueue struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	addr  net.Addr
}

func newConnQueue(addr net.Addr) *connQueue {
	return &connQueue{conns: make(chan net.Conn), done: make(chan struct{}), addr: addr}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.conns:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.done) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return q.addr }

// push hands c to the server; false when the queue is closed.
func (q *connQueue) push(c net.Conn) bool {
	select {
	case q.conns <- c:
		return true
	case <-q.done:
		return false
	}
}

type queueAddr struct{ name string }

func (a queueAddr) Network() string { return "meshlift" }
func (a queueAddr) String() string  { return a.name }

// httpServers serve the HTTP connections of one target (an inbound port or an upstream) in one
// generation. HTTP/1 and HTTP/2 are separate so that each drains its own way: HTTP/1 by
// answering the next request with "Connection: close" and closing connections that stay idle,
// HTTP/2 by GOAWAY.
type httpServers struct {
	http1      *http.Server
	http1Conns *connQueue
	http2      *http2.Server
	// http2Base carries the settings of the HTTP/2 server and its shutdown hook (GOAWAY on every
	// connection ServeConn registered). It never serves a listener.
	http2Base *http.Server
}

// generation is what serves the connections accepted between a Start (or ResumeAccepting) and
// the next Drain. A drain ends its generation; connections accepted before keep the servers of
// theirs while a new generation serves new connections.
type generation struct {
	p        *Proxy
	ctx      context.Context
	cancel   context.CancelFunc
	draining atomic.Bool

	// servers are by target.httpIndex: the configuration's targets from the start, those of
	// captured outbound routes (capture.go) once a connection needs them; nil after close.
	serversMu sync.Mutex
	servers   []*httpServers

	mu     sync.Mutex
	conns  map[*trackedConn]struct{}
	closed bool
	empty  chan struct{} // signalled when the last connection leaves
}

func (p *Proxy) newGeneration() *generation {
	ctx, cancel := context.WithCancel(context.Background())
	g := &generation{p: p, ctx: ctx, cancel: cancel, conns: make(map[*trackedConn]struct{}),
		empty: make(chan struct{}, 1)}
	g.servers = make([]*httpServers, 0, len(p.httpTargets))
	for _, t := range p.httpTargets {
		g.servers = append(g.servers, p.newHTTPServers(g, t))
	}
	return g
}

// serversFor returns the servers of t in this generation, starting them if t is a target made
// after the generation was (a captured outbound route's); nil once the generation is closed.
func (g *generation) serversFor(t *target) *httpServers {
	g.serversMu.Lock()
	defer g.serversMu.Unlock()
	if g.servers == nil {
		return nil
	}
	if t.httpIndex >= len(g.servers) {
		g.servers = append(g.servers, make([]*httpServers, t.httpIndex+1-len(g.servers))...)
	}
	if g.servers[t.httpIndex] == nil {
		g.servers[t.httpIndex] = g.p.newHTTPServers(g, t)
	}
	return g.servers[t.httpIndex]
}

// allServers are the servers started in this generation.
func (g *generation) allServers() []*httpServers {
	g.serversMu.Lock()
	defer g.serversMu.Unlock()
	out := make([]*httpServers, 0, len(g.servers))
	for _, s := range g.servers {
		if s != nil {
			out = append(out, s)
		}
	}
	return out
}

// generationHandler serves a target's requests for the connections of one generation.
type generationHandler struct {
	route *route
	gen   *generation
}

func (h generationHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.route.serve(w, r, h.gen)
}

func (p *Proxy) newHTTPServers(g *generation, t *target) *httpServers {
	handler := generationHandler{route: t.route, gen: g}
	h1 := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: p.opts.HandshakeTimeout,
		IdleTimeout:       p.opts.IdleTimeout,
		ErrorLog:          p.httpErrorLog,
		ConnState:         recordHTTP1State,
		ConnContext:       withPeerIdentity,
		// Never HTTP/2 here: HTTP/2 connections go to the http2 server.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
	h1.Protocols = new(http.Protocols)
	h1.Protocols.SetHTTP1(true)
	queue := newConnQueue(queueAddr{name: t.name})
	go h1.Serve(queue) //nolint:errcheck // returns when the queue is closed

	base := &http.Server{Handler: handler, IdleTimeout: p.opts.IdleTimeout, ErrorLog: p.httpErrorLog}
	h2 := &http2.Server{}
	// ConfigureServer only fails for a TLSConfig with bad cipher suites; base has none.
	_ = http2.ConfigureServer(base, h2)
	return &httpServers{http1: h1, http1Conns: queue, http2: h2, http2Base: base}
}

// track adds an accepted connection; nil (and raw closed) once the generation is closed.
func (g *generation) track(raw net.Conn, dir direction, listener string) *trackedConn {
	c := &trackedConn{Conn: raw, gen: g, dir: dir, listener: listener, accepted: time.Now()}
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		_ = raw.Close()
		return nil
	}
	g.conns[c] = struct{}{}
	g.mu.Unlock()
	g.p.metrics.activeConnections[dir].Inc()
	g.p.metrics.connections[dir].Inc()
	return c
}

func (g *generation) forget(c *trackedConn) {
	g.mu.Lock()
	_, ok := g.conns[c]
	delete(g.conns, c)
	left := len(g.conns)
	g.mu.Unlock()
	if !ok {
		return
	}
	g.p.metrics.activeConnections[c.dir].Dec()
	if left == 0 {
		select {
		case g.empty <- struct{}{}:
		default:
		}
	}
}

func (g *generation) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.conns)
}

// serveHTTP serves a classified connection: with the HTTP/1.1 fast path, or by handing it to the
// target's HTTP/1 or HTTP/2 server.
func (g *generation) serveHTTP(t *target, c net.Conn, h2 bool) {
	kind := kindHTTP1
	if h2 {
		kind = kindHTTP2
	}
	setKind(c, kind)
	if !h2 && t.route.fastHTTP1 {
		g.serveHTTP1(t.route, c)
		return
	}
	servers := g.serversFor(t)
	if servers == nil { // the generation was closed
		_ = c.Close()
		return
	}
	if h2 {
		servers.http2.ServeConn(c, &http2.ServeConnOpts{Context: withPeerIdentity(g.ctx, c), BaseConfig: servers.http2Base})
		_ = c.Close()
		return
	}
	if !servers.http1Conns.push(c) {
		_ = c.Close()
	}
}

// drainStep makes every HTTP connection of the generation finish: HTTP/1 responses carry
// "Connection: close" from now on, HTTP/1 connections idle (or waiting for a first request) for
// idleGrace close, HTTP/2 connections get a GOAWAY. Drain repeats it, for connections handed
// over late and connections that go idle.
func (g *generation) drainStep(idleGrace time.Duration) {
	g.draining.Store(true)
	for _, s := range g.allServers() {
		// http2Base serves nothing itself, so Shutdown returns at once after starting the
		// registered hooks: the graceful GOAWAY of every HTTP/2 connection (once per connection).
		_ = s.http2Base.Shutdown(g.ctx)
	}
	idleSince := time.Now().Add(-idleGrace).UnixNano()
	g.mu.Lock()
	var idle []*trackedConn
	for c := range g.conns {
		state := http.ConnState(c.http1State.Load() - 1)
		if (state == http.StateIdle || state == http.StateNew) && c.http1Since.Load() <= idleSince {
			idle = append(idle, c)
		}
	}
	g.mu.Unlock()
	for _, c := range idle {
		_ = c.Close()
	}
}

// close ends the generation: its servers and every connection still open. It returns how many
// connections it closed.
func (g *generation) close() int {
	g.mu.Lock()
	g.closed = true
	conns := make([]*trackedConn, 0, len(g.conns))
	for c := range g.conns {
		conns = append(conns, c)
	}
	g.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
	g.serversMu.Lock()
	servers := g.servers
	g.servers = nil
	g.serversMu.Unlock()
	for _, s := range servers {
		if s != nil {
			_ = s.http1.Close()
			_ = s.http2Base.Close()
		}
	}
	g.cancel()
	return len(conns)
}
