package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// The HTTP/1.1 fast path serves the HTTP/1.x client connections of every outbound route and of
// inbound HTTP ports in the connection's own goroutine: it reads a request head, sends the
// request on a pooled upstream connection, reads the response head and streams the response
// back, with no goroutine hand-off on the way (net/http's server and transport take four per
// request and hop). A request body that is not small and whole (chunked, or larger than
// maxReplay) is sent by a second goroutine while the response is read, so that an upstream that
// answers before reading it all cannot deadlock the exchange. HTTP/2 connections, and HTTP/1
// clients of inbound HTTP2 and GRPC ports (whose app speaks h2c), keep net/http (http.go).

const (
	// rstAvoidanceDelay bounds how long a connection closed after a response waits for the
	// client to close its side, so that unread bytes from it do not reset the connection
	// before the client read the response (net/http's server waits the same).
	rstAvoidanceDelay = 500 * time.Millisecond
	// maxDiscardBody is how much of an unread request body is read and dropped to keep the
	// connection after an error answer (net/http's server drops up to the same).
	maxDiscardBody = 256 << 10
)

var (
	continueResponse = []byte("HTTP/1.1 100 Continue\r\n\r\n")
	errWrongUpgrade  = errors.New("101 response to a request without Upgrade")
	errTooManyInfo   = errors.New("too many interim responses")
)

// noResponseError: the upstream connection failed before any byte of a response came.
type noResponseError struct{ err error }

func (e *noResponseError) Error() string {
	return "connection closed before a response: " + e.err.Error()
}
func (e *noResponseError) Unwrap() error { return e.err }

// sendError: writing the request to the upstream connection failed.
type sendError struct{ err error }

func (e *sendError) Error() string { return "sending the request: " + e.err.Error() }
func (e *sendError) Unwrap() error { return e.err }

// clientWriteError: writing to the client failed (it went away).
type clientWriteError struct{ err error }

func (e *clientWriteError) Error() string { return "writing to the client: " + e.err.Error() }
func (e *clientWriteError) Unwrap() error { return e.err }

// h1Conn is a client connection served by the fast path.
type h1Conn struct {
	gen     *generation
	rt      *route
	conn    net.Conn
	tracked *trackedConn
	br      *bufio.Reader
	bw      *bufio.Writer

	req     h1Head
	res     h1Head
	trailer h1Head // of a chunked response
	// body is a request body read whole before it is sent (up to maxReplay bytes), so that it
	// can be sent again.
	body   []byte
	stream streamedBody
}

// streamedBody is a request body sent by a goroutine of its own (a copier) while the response
// is read.
type streamedBody struct {
	active  bool
	reader  bodyReader
	trailer h1Head
	replay  *replayBody
	// copiers counts the goroutines sending the body: a request sent again on a new connection
	// gets a new one, and the old one stops at its next read or write.
	copiers sync.WaitGroup
	current *copier // nil until one started
}

// copier is one goroutine sending a streamed body.
type copier struct {
	finished chan struct{} // closed once it is done
	err      error         // its outcome, once finished is closed
}

// copierGrace is how long a response that is over waits for its request body's copier: the
// upstream can answer as soon as it has the last byte, a moment before the copier sees the
// end of the body. A copier still busy after it is stopped (the upstream answered early).
const copierGrace = 50 * time.Millisecond

// wait reports whether the copier finished, waiting at most d.
func (cp *copier) wait(d time.Duration) bool {
	select {
	case <-cp.finished:
		return true
	default:
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-cp.finished:
		return true
	case <-timer.C:
		return false
	}
}

var h1Conns = sync.Pool{New: func() any {
	return &h1Conn{br: bufio.NewReaderSize(nil, 4<<10), bw: bufio.NewWriterSize(nil, 4<<10)}
}}

// serveHTTP1 serves an HTTP/1.x connection of the route with the fast path until it closes.
func (g *generation) serveHTTP1(rt *route, conn net.Conn) {
	c := h1Conns.Get().(*h1Conn)
	c.gen, c.rt, c.conn, c.tracked = g, rt, conn, trackedOf(conn)
	c.br.Reset(conn)
	c.bw.Reset(conn)
	c.serve()
	// Not on a panic: a copier may still hold the connection's buffers.
	c.br.Reset(nil)
	c.bw.Reset(nil)
	c.gen, c.rt, c.conn, c.tracked = nil, nil, nil, nil
	if cap(c.body) > maxReplay {
		c.body = nil
	}
	h1Conns.Put(c)
}

func (c *h1Conn) serve() {
	opts := &c.rt.p.opts
	c.setState(http.StateNew)
	for first := true; ; first = false {
		// One deadline per request in the common case: IdleTimeout (HandshakeTimeout for the
		// first request) to start a request; HandshakeTimeout for a head that is not here yet,
		// then IdleTimeout again. The deadline left bounds reading a body read whole; a
		// streamed body or an upgraded connection has none.
		wait := opts.IdleTimeout
		if first {
			wait = opts.HandshakeTimeout
		}
		_ = c.conn.SetReadDeadline(time.Now().Add(wait))
		if c.br.Buffered() == 0 { // else a pipelined request is here
			if _, err := c.br.Peek(1); err != nil {
				_ = c.conn.Close()
				return
			}
		}
		c.setState(http.StateActive)
		whole := headBuffered(c.br)
		if !whole {
			_ = c.conn.SetReadDeadline(time.Now().Add(opts.HandshakeTimeout))
		}
		if err := readRequestHead(c.br, &c.req); err != nil {
			c.refuse(err)
			return
		}
		if !whole {
			_ = c.conn.SetReadDeadline(time.Now().Add(opts.IdleTimeout))
		}
		if !c.exchange() {
			return
		}
		c.setState(http.StateIdle)
	}
}

// headBuffered reports whether the reader holds a whole head (an empty line).
func headBuffered(br *bufio.Reader) bool {
	b, _ := br.Peek(br.Buffered())
	return bytes.Contains(b, []byte("\n\r\n")) || bytes.Contains(b, []byte("\n\n"))
}

// setState keeps the connection's state where Drain looks for idle HTTP/1 connections, as the
// http.Server's ConnState hook does for its own.
func (c *h1Conn) setState(state http.ConnState) {
	if c.tracked == nil {
		return
	}
	if state == http.StateNew || state == http.StateIdle {
		c.tracked.http1Since.Store(time.Now().UnixNano())
	}
	c.tracked.http1State.Store(int32(state) + 1)
}

// refuse answers a request head that cannot be served (a *headError) and closes the
// connection; other errors (timeouts, the client closing) close it without a word.
func (c *h1Conn) refuse(err error) {
	var he *headError
	if !errors.As(err, &he) {
		_ = c.conn.Close()
		return
	}
	c.rt.p.log.V(1).Info("Refused an HTTP/1 request", "direction", c.rt.dir.String(), "target", c.rt.name,
		"status", he.status, "error", err.Error())
	text := strconv.Itoa(he.status) + " " + http.StatusText(he.status) + ": " + he.reason
	c.writeErrorResponse(he.status, text, true)
	c.closeGracefully()
}

// exchange proxies the request whose head is in c.req. It returns false when it closed the
// connection.
func (c *h1Conn) exchange() bool {
	start := time.Now()
	req := &c.req
	hasBody := req.chunked || req.contentLength > 0
	if req.expectContinue && hasBody && req.minor >= 1 {
		// A client gone by now fails the exchange at its next read or write.
		_, _ = c.bw.Write(continueResponse)
		_ = c.bw.Flush()
	}
	c.stream.active = req.chunked || req.contentLength > maxReplay
	c.body = c.body[:0]
	if hasBody && !c.stream.active {
		c.body = grow(c.body, int(req.contentLength))
		if _, err := io.ReadFull(c.br, c.body); err != nil {
			c.rt.stats.canceled.Inc()
			_ = c.conn.Close()
			return false
		}
	}
	if c.stream.active {
		_ = c.conn.SetReadDeadline(time.Time{})
		c.startStream()
	}

	u, e, err := c.roundTrip()
	if err != nil {
		return c.fail(err, start)
	}
	if e != nil {
		defer e.active.Add(-1)
	}
	if c.res.status == http.StatusSwitchingProtocols {
		c.switchProtocols(u)
		return false
	}
	return c.forwardResponse(u, start)
}

func grow(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}

// roundTrip sends the request and reads the response head: to the app, or to an endpoint of the
// cluster, and to another one when connecting fails, up to MaxConnectAttempts endpoints.
func (c *h1Conn) roundTrip() (*h1Upstream, *endpoint, error) {
	rt := c.rt
	if rt.cluster == nil {
		u, err := c.roundTripTo(nil, rt.appPool)
		return u, nil, err
	}
	var u *h1Upstream
	e, err := rt.p.tryEndpoints(rt.cluster, func(e *endpoint) error {
		var rtErr error
		u, rtErr = c.roundTripTo(e, e.h1)
		return rtErr
	}, nil)
	if err != nil {
		return nil, nil, err
	}
	return u, e, nil
}

// roundTripTo sends the request on an idle connection of the pool, or a new one, and reads the
// response head. When a kept-alive connection turns out closed before any byte of a response
// (the peer closed it while idle: a draining proxy, an app's keep-alive timeout), the request
// goes again on a new connection if net/http's transport would send it again: nothing of it was
// written, or it is idempotent, and its body can be sent again.
func (c *h1Conn) roundTripTo(e *endpoint, pool *h1Pool) (*h1Upstream, error) {
	for fresh := false; ; fresh = true {
		var u *h1Upstream
		if !fresh {
			u = pool.get()
		}
		if u == nil {
			var err error
			if u, err = c.dial(e, pool); err != nil {
				return nil, err
			}
		}
		err := c.send(u)
		if err == nil {
			err = c.awaitResponse(u)
		}
		if err == nil {
			return u, nil
		}
		u.close()
		if !c.retryable(u, err) {
			return nil, err
		}
		c.rt.p.log.V(1).Info("Sending a request again on a new connection", "direction", c.rt.dir.String(),
			"target", c.rt.name, "upstream", u.address, "error", err.Error())
	}
}

func (c *h1Conn) retryable(u *h1Upstream, err error) bool {
	if !u.reused {
		return false
	}
	var se *sendError
	var nr *noResponseError
	switch {
	case errors.As(err, &se):
		return true
	case errors.As(err, &nr):
		return c.req.idempotent()
	}
	return false
}

func (c *h1Conn) dial(e *endpoint, pool *h1Pool) (*h1Upstream, error) {
	rt := c.rt
	if e == nil {
		dialer := net.Dialer{Timeout: rt.p.opts.DialTimeout}
		conn, err := dialer.Dial("tcp", rt.appAddress)
		if err != nil {
			rt.stats.connectFailure.Inc()
			return nil, &connectError{address: rt.appAddress, err: err}
		}
		return newH1Upstream(conn, pool, rt.appAddress), nil
	}
	conn, err := rt.p.dialEndpoint(context.Background(), rt.cluster, e, e.tlsHTTP1)
	if err != nil {
		return nil, err
	}
	return newH1Upstream(conn, pool, e.Address), nil
}

// send writes the request head and, when it was read whole, the body; a streamed body is sent
// by a new copier.
func (c *h1Conn) send(u *h1Upstream) error {
	peer := ""
	if c.rt.dir == inbound && c.tracked != nil {
		peer = c.tracked.peer
	}
	writeRequestHead(u.bw, &c.req, u.address, peer)
	if c.stream.active {
		if err := u.bw.Flush(); err != nil {
			return &sendError{err: err}
		}
		return c.startCopier(u)
	}
	if len(c.body) > 0 {
		_, _ = u.bw.Write(c.body)
	}
	if err := u.bw.Flush(); err != nil {
		return &sendError{err: err}
	}
	return nil
}

// awaitResponse reads the response head, passing 1xx responses other than 100 on to HTTP/1.1
// clients (the 100 Continue a client waits for comes from the proxy as soon as it reads the body).
func (c *h1Conn) awaitResponse(u *h1Upstream) error {
	for interim := 0; ; interim++ {
		if _, err := u.br.Peek(1); err != nil {
			if interim == 0 {
				return &noResponseError{err: err}
			}
			return err
		}
		if err := readResponseHead(u.br, &c.res); err != nil {
			return err
		}
		switch status := c.res.status; {
		case status == http.StatusSwitchingProtocols:
			if !c.req.upgrade() {
				return errWrongUpgrade
			}
			return nil
		case status >= 200:
			return nil
		case interim == maxInterimResponses:
			return errTooManyInfo
		case status == http.StatusContinue || c.req.minor == 0:
			continue
		}
		c.writeStatusLine(&c.res)
		c.writeFields(&c.res, false)
		_, _ = c.bw.WriteString("\r\n")
		if err := c.bw.Flush(); err != nil {
			return &clientWriteError{err: err}
		}
	}
}

// Response framing towards the client.
const (
	framingNone    = iota // no body (HEAD, 204, 304)
	framingLength         // Content-Length
	framingChunked        // chunked from the upstream
	framingEOF            // until the upstream closes
)

// forwardResponse streams the response whose head is in c.res to the client. It returns false
// when it closed the client connection.
func (c *h1Conn) forwardResponse(u *h1Upstream, start time.Time) bool {
	req, res, rt := &c.req, &c.res, c.rt
	framing := framingEOF
	switch {
	case req.isMethod(http.MethodHead) || res.status == http.StatusNoContent || res.status == http.StatusNotModified:
		framing = framingNone
	case res.chunked:
		framing = framingChunked
	case res.contentLength >= 0:
		framing = framingLength
	}
	// A body without length goes to HTTP/1.1 clients chunked, to HTTP/1.0 ones up to the close.
	rechunk := (framing == framingChunked || framing == framingEOF) && req.minor >= 1
	closing := c.gen.draining.Load() || req.wantsClose() ||
		((framing == framingChunked || framing == framingEOF) && req.minor == 0) ||
		(c.stream.active && c.stream.current != nil && !c.stream.current.wait(copierGrace))

	c.writeStatusLine(res)
	c.writeFields(res, framing == framingNone || framing == framingLength)
	if rechunk {
		_, _ = c.bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if closing {
		_, _ = c.bw.WriteString("Connection: close\r\n")
	} else if req.minor == 0 {
		_, _ = c.bw.WriteString("Connection: keep-alive\r\n")
	}
	_, writeErr := c.bw.WriteString("\r\n")
	rt.stats.code(res.status).Inc()

	var readErr error
	if writeErr == nil {
		switch framing {
		case framingLength:
			readErr, writeErr = copyBody(c.bw, u.br, res.contentLength, false)
		case framingChunked:
			readErr, writeErr = copyChunked(c.bw, u.br, rechunk, &c.trailer)
		case framingEOF:
			if readErr, writeErr = copyBody(c.bw, u.br, -1, rechunk); readErr == nil && writeErr == nil && rechunk {
				_, writeErr = c.bw.WriteString("0\r\n\r\n")
			}
		}
	}
	if readErr == nil && writeErr == nil {
		writeErr = c.bw.Flush()
	}
	bodySent := c.finishStream(u)
	if readErr == nil && writeErr == nil && bodySent && framing != framingEOF && res.keepAlive() && u.br.Buffered() == 0 {
		u.pool.put(u)
	} else {
		u.close()
	}
	switch {
	case writeErr != nil:
		rt.stats.canceled.Inc()
		_ = c.conn.Close()
		return false
	case readErr != nil:
		rt.stats.upstreamErrors.Inc()
		rt.p.log.V(1).Info("Upstream response body failed", "direction", rt.dir.String(), "target", rt.name, "error", readErr.Error())
		// The client sees the response end early: a short body, or no last chunk.
		_ = c.conn.Close()
		return false
	}
	rt.stats.duration.Observe(time.Since(start).Seconds())
	if closing || !bodySent {
		c.closeGracefully()
		return false
	}
	return true
}

func (c *h1Conn) writeStatusLine(res *h1Head) {
	// AvailableBuffer: formatting in the writer's own buffer allocates nothing.
	line := append(c.bw.AvailableBuffer(), "HTTP/1.1 "...)
	line = strconv.AppendInt(line, int64(res.status), 10)
	line = append(line, ' ')
	_, _ = c.bw.Write(line)
	if res.reason.len() > 0 {
		_, _ = c.bw.Write(res.bytes(res.reason))
	} else {
		_, _ = c.bw.WriteString(http.StatusText(res.status))
	}
	_, _ = c.bw.WriteString("\r\n")
}

// writeFields writes the fields of a response that go on: not hop-by-hop, not named by its
// Connection field, and its Content-Length (once) only when keepLength.
func (c *h1Conn) writeFields(res *h1Head, keepLength bool) {
	sawLength := false
	for _, f := range res.fields {
		switch {
		case f.kind.hop():
			continue
		case f.kind == fieldContentLength:
			if !keepLength || sawLength {
				continue
			}
			sawLength = true
		case len(res.connNamed) > 0 && res.named(res.bytes(f.name)):
			continue
		}
		_, _ = c.bw.Write(res.buf[f.name.start:f.value.end])
		_, _ = c.bw.WriteString("\r\n")
	}
}

// switchProtocols completes an Upgrade (WebSocket): the 101 goes to the client with all its
// fields, then bytes are piped both ways until either side closes.
func (c *h1Conn) switchProtocols(u *h1Upstream) {
	rt := c.rt
	rt.stats.code(http.StatusSwitchingProtocols).Inc()
	if !c.finishStream(u) {
		u.close()
		_ = c.conn.Close()
		return
	}
	c.writeStatusLine(&c.res)
	for _, f := range c.res.fields {
		_, _ = c.bw.Write(c.res.buf[f.name.start:f.value.end])
		_, _ = c.bw.WriteString("\r\n")
	}
	_, _ = c.bw.WriteString("\r\n")
	if err := c.bw.Flush(); err != nil {
		u.close()
		_ = c.conn.Close()
		return
	}
	c.setState(http.StateHijacked)
	setKind(c.conn, kindUpgraded)
	_ = c.conn.SetReadDeadline(time.Time{})
	// Bytes that came after either head are in the readers.
	pipe(&bufferedConn{Conn: c.conn, r: c.br}, &bufferedConn{Conn: u.conn, r: u.br})
}

// fail answers a request that got no response: 503 without endpoints or when connecting
// failed, 502 otherwise, with net/http's path's messages. It returns false when it closed the
// connection.
func (c *h1Conn) fail(err error, start time.Time) bool {
	rt := c.rt
	var cw *clientWriteError
	if errors.As(err, &cw) {
		rt.stats.canceled.Inc()
		c.abandonStream()
		_ = c.conn.Close()
		return false
	}
	status, message := rt.upstreamFailed(err)
	bodyRead := c.finishStream(nil)
	closing := c.gen.draining.Load() || c.req.wantsClose() || !bodyRead
	c.writeErrorResponse(status, message, closing)
	werr := c.bw.Flush()
	rt.stats.code(status).Inc()
	rt.stats.duration.Observe(time.Since(start).Seconds())
	switch {
	case werr != nil:
		_ = c.conn.Close()
		return false
	case closing:
		c.closeGracefully()
		return false
	}
	return true
}

// writeErrorResponse writes an answer of the proxy's own.
func (c *h1Conn) writeErrorResponse(status int, message string, closing bool) {
	line := append(c.bw.AvailableBuffer(), "HTTP/1.1 "...)
	line = strconv.AppendInt(line, int64(status), 10)
	line = append(line, ' ')
	_, _ = c.bw.Write(line)
	_, _ = c.bw.WriteString(http.StatusText(status))
	_, _ = c.bw.WriteString("\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nDate: ")
	_, _ = c.bw.Write(time.Now().UTC().AppendFormat(c.bw.AvailableBuffer(), http.TimeFormat))
	_, _ = c.bw.WriteString("\r\nContent-Length: ")
	_, _ = c.bw.Write(strconv.AppendInt(c.bw.AvailableBuffer(), int64(len(message)), 10))
	if closing {
		_, _ = c.bw.WriteString("\r\nConnection: close")
	} else if c.req.minor == 0 {
		_, _ = c.bw.WriteString("\r\nConnection: keep-alive")
	}
	_, _ = c.bw.WriteString("\r\n\r\n")
	_, _ = c.bw.WriteString(message)
}

// closeGracefully flushes, closes the writing side and waits a little for the client to close
// its own (reading and dropping what it still sends), then closes.
func (c *h1Conn) closeGracefully() {
	if err := c.bw.Flush(); err == nil {
		if cw, ok := c.conn.(closeWriter); ok {
			_ = cw.CloseWrite()
		}
		_ = c.conn.SetReadDeadline(time.Now().Add(rstAvoidanceDelay))
		_, _ = io.CopyN(io.Discard, c.conn, maxDiscardBody)
	}
	_ = c.conn.Close()
}

// startStream prepares a streamed request body.
func (c *h1Conn) startStream() {
	s := &c.stream
	s.reader = bodyReader{br: c.br, chunked: c.req.chunked, left: max(c.req.contentLength, 0), trailer: &s.trailer}
	s.replay = newReplayBody(&s.reader)
	s.current = nil
}

// startCopier sends the body on u, from its start, from a goroutine of its own.
func (c *h1Conn) startCopier(u *h1Upstream) error {
	s := &c.stream
	body, err := s.replay.reader()
	if err != nil {
		return err
	}
	cp := &copier{finished: make(chan struct{})}
	s.current = cp
	chunked := c.req.chunked
	s.copiers.Add(1)
	go func() {
		defer s.copiers.Done()
		err := copyRequestBody(u.bw, body, chunked, &s.trailer)
		cp.err = err
		close(cp.finished)
	}()
	return nil
}

// copyRequestBody writes a body to an upstream connection, chunked again when chunked (with
// its trailer section).
func copyRequestBody(w *bufio.Writer, body io.Reader, chunked bool, trailer *h1Head) error {
	bufp := buffers.Get().(*[]byte)
	defer buffers.Put(bufp)
	buf := *bufp
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if chunked {
				writeChunkSize(w, int64(n))
			}
			_, _ = w.Write(buf[:n])
			if chunked {
				_, _ = w.WriteString("\r\n")
			}
			if ferr := w.Flush(); ferr != nil {
				return ferr
			}
		}
		if errors.Is(err, io.EOF) {
			if chunked {
				_, _ = w.WriteString("0\r\n")
				writeTrailer(w, trailer)
				_, _ = w.WriteString("\r\n")
			}
			return w.Flush()
		}
		if err != nil {
			return err
		}
	}
}

// finishStream ends a streamed body after the exchange: it reports whether the whole body was
// read from the client and sent, so that the client connection can carry another request. A
// copier still sending when the response is over (the upstream answered without reading it
// all) is stopped: u (nil when there is no response) is closed and the client's read is
// interrupted. A body no copier started is read and dropped, up to maxDiscardBody.
func (c *h1Conn) finishStream(u *h1Upstream) bool {
	s := &c.stream
	if !s.active {
		return true
	}
	s.active = false
	defer s.replay.finish()
	if s.current == nil {
		_ = c.conn.SetReadDeadline(time.Now().Add(c.rt.p.opts.HandshakeTimeout))
		n, err := io.Copy(io.Discard, io.LimitReader(&s.reader, maxDiscardBody+1))
		return err == nil && n <= maxDiscardBody && s.reader.done
	}
	if !s.current.wait(copierGrace) {
		if u != nil {
			u.close()
		}
		c.interruptCopiers()
		return false
	}
	s.copiers.Wait() // copiers of earlier attempts stop on their own now
	return s.current.err == nil && s.reader.done
}

// abandonStream stops the copiers of a request that ends without an answer.
func (c *h1Conn) abandonStream() {
	if c.stream.active && c.stream.current != nil {
		c.stream.active = false
		c.interruptCopiers()
		c.stream.replay.finish()
	}
}

func (c *h1Conn) interruptCopiers() {
	_ = c.conn.SetReadDeadline(time.Unix(1, 0))
	c.stream.copiers.Wait()
	_ = c.conn.SetReadDeadline(time.Time{})
}
