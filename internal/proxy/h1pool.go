package proxy

import (
	"bufio"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"syscall"
	"time"
)

// h1Upstream is a kept-alive HTTP/1.1 connection to the app or to an endpoint, with its own
// buffers. One request at a time uses it; between requests it waits in its pool.
type h1Upstream struct {
	conn net.Conn // *net.TCPConn (app) or *tls.Conn (endpoint)
	br   *bufio.Reader
	bw   *bufio.Writer
	pool *h1Pool
	// address is where it is connected, the Host of a request that has none.
	address string

	// rawTCP and peekFD check that the connection is still open before a request goes on it.
	rawTCP    syscall.RawConn
	peekFD    func(fd uintptr) bool
	peekAlive bool
	peekBuf   [1]byte

	idleSince time.Time
	reused    bool
}

func newH1Upstream(conn net.Conn, pool *h1Pool, address string) *h1Upstream {
	u := &h1Upstream{
		conn:    conn,
		br:      bufio.NewReaderSize(conn, 4<<10),
		bw:      bufio.NewWriterSize(conn, 4<<10),
		pool:    pool,
		address: address,
	}
	tcp := conn
	if tc, ok := conn.(*tls.Conn); ok {
		tcp = tc.NetConn()
	}
	if sc, ok := tcp.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			u.rawTCP = raw
			u.peekFD = u.peek
		}
	}
	return u
}

// alive reports whether an idle connection can carry a request: the peer has not closed it and
// sent nothing (an idle HTTP/1.1 connection gets no bytes; a TLS close_notify, a late 408 or a
// FIN all mean it is done). A peek of the socket, which never blocks: the transport learns the
// same from its read loop, which the fast path does not have.
func (u *h1Upstream) alive() bool {
	if u.br.Buffered() > 0 {
		return false
	}
	if u.rawTCP == nil {
		return true
	}
	u.peekAlive = false
	if err := u.rawTCP.Read(u.peekFD); err != nil {
		return false
	}
	return u.peekAlive
}

func (u *h1Upstream) peek(fd uintptr) bool {
	_, _, err := syscall.Recvfrom(int(fd), u.peekBuf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	u.peekAlive = errors.Is(err, syscall.EAGAIN)
	return true
}

func (u *h1Upstream) close() { _ = u.conn.Close() }

// h1Pool keeps the idle connections to one app port or one endpoint, most recently used first,
// and closes those idle for PoolIdleTimeout (before the peer would: see Options).
type h1Pool struct {
	timeout time.Duration

	mu        sync.Mutex
	idle      []*h1Upstream // oldest first
	timer     *time.Timer   // sweeps
	scheduled bool          // a sweep is due: the oldest idle connection has its sweep
}

func newH1Pool(timeout time.Duration) *h1Pool { return &h1Pool{timeout: timeout} }

// get takes the most recently used idle connection that is still open, nil when none.
func (p *h1Pool) get() *h1Upstream {
	for {
		p.mu.Lock()
		n := len(p.idle)
		if n == 0 {
			p.mu.Unlock()
			return nil
		}
		u := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		if time.Since(u.idleSince) < p.timeout && u.alive() {
			u.reused = true
			return u
		}
		u.close()
	}
}

// put gives a connection back after a complete exchange.
func (p *h1Pool) put(u *h1Upstream) {
	u.idleSince = time.Now()
	p.mu.Lock()
	if len(p.idle) >= maxIdleConnsPerHost {
		p.mu.Unlock()
		u.close()
		return
	}
	p.idle = append(p.idle, u)
	if !p.scheduled {
		p.scheduled = true
		if p.timer == nil {
			p.timer = time.AfterFunc(p.timeout, p.sweep)
		} else {
			p.timer.Reset(p.timeout)
		}
	}
	p.mu.Unlock()
}

// sweep closes the connections idle for the timeout and plans the next sweep.
func (p *h1Pool) sweep() {
	now := time.Now()
	p.mu.Lock()
	stale := 0
	for stale < len(p.idle) && now.Sub(p.idle[stale].idleSince) >= p.timeout {
		stale++
	}
	closing := make([]*h1Upstream, stale)
	copy(closing, p.idle[:stale])
	n := copy(p.idle, p.idle[stale:])
	clear(p.idle[n:])
	p.idle = p.idle[:n]
	p.scheduled = n > 0
	if p.scheduled {
		p.timer.Reset(p.timeout - now.Sub(p.idle[0].idleSince))
	}
	p.mu.Unlock()
	for _, u := range closing {
		u.close()
	}
}

// closeIdle closes every idle connection.
func (p *h1Pool) closeIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, u := range idle {
		u.close()
	}
}
