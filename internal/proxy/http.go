package proxy

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"strings"
	"sync/atomic"
	"time"
)

// maxIdleConnsPerHost bounds the idle connections a pool keeps to one app port or one endpoint.
const maxIdleConnsPerHost = 128

// route proxies the HTTP requests of one target: an inbound port to the app on localhost, or an
// outbound listener to the endpoints of its upstream cluster. It removes the hop-by-hop headers and
// any PeerIdentityHeader a client sent, and adds PeerIdentityHeader to inbound requests over mTLS.
type route struct {
	p     *Proxy
	dir   direction
	name  string
	stats *targetStats

	// fastHTTP1: HTTP/1 clients are served by the fast path (h1serve.go) rather than the
	// http.Server: on every outbound route and inbound HTTP port.
	fastHTTP1 bool

	// Inbound: the app's address and pools (HTTP/1.1 for HTTP ports, h2c for HTTP2 and GRPC
	// ports; app1 is HTTP/1.1 for Upgrade requests; appPool is the fast path's).
	appAddress string
	app        *http.Transport
	app1       *http.Transport
	appPool    *h1Pool

	// Outbound: the upstream cluster.
	cluster *cluster

	// failLogged is when a failed request was last logged at info (Unix nanoseconds), and
	// failUnlogged how many failed since: at most one line per second per route.
	failLogged   atomic.Int64
	failUnlogged atomic.Int64
}

var (
	textPlain       = []string{"text/plain; charset=utf-8"}
	noSniff         = []string{"nosniff"}
	connectionClose = []string{"close"}
)

// closeIfDraining makes the server close an HTTP/1 connection after this response when its
// generation drains (HTTP/2 connections get a GOAWAY instead).
func closeIfDraining(header http.Header, r *http.Request, g *generation) {
	if r.ProtoMajor == 1 && g.draining.Load() {
		header["Connection"] = connectionClose
	}
}

// serve proxies one request of a connection of generation g.
func (rt *route) serve(w http.ResponseWriter, r *http.Request, g *generation) {
	start := time.Now()
	upgrade := r.ProtoMajor == 1 && isUpgrade(r.Header)
	out := r.WithContext(r.Context()) // a shallow copy the transport may keep
	u := *r.URL
	u.User = nil
	out.URL = &u
	out.RequestURI = ""
	out.Close = false
	out.Header = forwardedHeader(r.Header, upgrade)
	setPeerIdentity(out.Header, r.Context(), rt.dir)

	var res *http.Response
	var e *endpoint
	var err error
	if rt.cluster == nil {
		u.Scheme, u.Host = "http", rt.appAddress
		transport := rt.app
		if upgrade {
			transport = rt.app1
		}
		res, err = transport.RoundTrip(out)
	} else {
		u.Scheme = "https"
		// Only HTTP/2 clients (gRPC, streams) come here, and get HTTP/2 upstream: HTTP/1 clients
		// take the fast path, over HTTP/1.1.
		transport := rt.cluster.http
		var body *replayBody
		if out.Body != nil && out.Body != http.NoBody {
			body = newReplayBody(out.Body)
			defer body.finish()
			out.GetBody = body.reader
		}
		res, e, err = rt.roundTripCluster(transport, out, body)
	}
	if err != nil {
		rt.fail(w, r, err, start, g)
		return
	}
	if e != nil {
		defer e.active.Add(-1)
	}
	if upgrade && res.StatusCode == http.StatusSwitchingProtocols {
		rt.switchProtocols(w, r, res, start, g)
		return
	}
	rt.writeResponse(w, r, res, start, g)
}

// roundTripCluster sends out to an endpoint of the cluster, and to another one when connecting
// to the first failed, up to MaxConnectAttempts endpoints, as long as the client is there and the
// body can be sent again.
func (rt *route) roundTripCluster(transport *http.Transport, out *http.Request, body *replayBody) (*http.Response, *endpoint, error) {
	var res *http.Response
	e, err := rt.p.tryEndpoints(rt.cluster, func(e *endpoint) error {
		if body != nil {
			reader, err := body.reader()
			if err != nil {
				return err
			}
			out.Body = reader
		}
		out.URL.Host = e.Address
		var err error
		res, err = transport.RoundTrip(out)
		return err
	}, func() bool {
		return out.Context().Err() == nil && (body == nil || body.replayable())
	})
	if err != nil {
		return nil, nil, err
	}
	return res, e, nil
}

func (rt *route) writeResponse(w http.ResponseWriter, r *http.Request, res *http.Response, start time.Time, g *generation) {
	header := w.Header()
	closeIfDraining(header, r, g)
	for k, vv := range res.Header {
		if !isHopHeader(k) {
			header[k] = vv
		}
	}
	if _, ok := res.Header["Content-Type"]; !ok {
		header["Content-Type"] = nil // no type sniffed by the server: the upstream sent none
	}
	w.WriteHeader(res.StatusCode)
	rt.stats.code(res.StatusCode).Inc()
	// Streams (no length: gRPC, server-sent events, chunked) are flushed as they come; over
	// HTTP/2 the headers first, as a bidirectional stream's client may wait for them before it
	// sends more.
	stream := res.ContentLength < 0
	if stream && r.ProtoMajor == 2 {
		_ = http.NewResponseController(w).Flush()
	}
	readErr, writeErr := copyResponseBody(w, res.Body, stream)
	_ = res.Body.Close()
	switch {
	case writeErr != nil || (readErr != nil && r.Context().Err() != nil):
		rt.stats.canceled.Inc()
		return
	case readErr != nil:
		rt.stats.upstreamErrors.Inc()
		rt.p.log.V(1).Info("Upstream response body failed", "direction", rt.dir.String(), "target", rt.name, "error", readErr.Error())
		// Tell the client the response is incomplete: the server resets the stream or closes
		// the connection.
		panic(http.ErrAbortHandler)
	}
	// Trailers (gRPC status) arrive with the end of the body; the server sends headers
	// prefixed with TrailerPrefix as trailers.
	for k, vv := range res.Trailer {
		header[http.TrailerPrefix+k] = vv
	}
	rt.stats.duration.Observe(time.Since(start).Seconds())
}

// copyResponseBody copies body to w with a pooled buffer, flushing after each write when flush.
func copyResponseBody(w http.ResponseWriter, body io.Reader, flush bool) (readErr, writeErr error) {
	bufp := buffers.Get().(*[]byte)
	defer buffers.Put(bufp)
	buf := *bufp
	var flusher http.Flusher
	if flush {
		flusher, _ = w.(http.Flusher)
	}
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return nil, werr
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		if err == io.EOF {
			return nil, nil
		}
		if err != nil {
			return err, nil
		}
	}
}

// upstreamFailed counts and logs a request that got no response from upstream, and returns the
// proxy's own answer: 503 when there was no endpoint or none could be connected to, else 502.
func (rt *route) upstreamFailed(err error) (status int, message string) {
	status, message = http.StatusBadGateway, "meshlift-proxy: upstream failed\n"
	switch {
	case errors.Is(err, errNoEndpoints):
		status, message = http.StatusServiceUnavailable, "meshlift-proxy: no endpoints\n"
		rt.stats.noEndpoints.Inc()
	case isConnectError(err):
		status, message = http.StatusServiceUnavailable, "meshlift-proxy: upstream connect failed\n"
		rt.stats.connectErrors.Inc()
	case isResponseHeadTooLarge(err):
		message = "meshlift-proxy: upstream response head too large\n"
		rt.stats.headTooLarge.Inc()
		// Not V(1): an upstream that sends such heads is broken or hostile, and says so once per request.
		rt.p.log.Info("Refusing an upstream response head over the limits", "direction", rt.dir.String(), "target", rt.name,
			"maxBytes", maxHeadBytes, "maxFields", maxHeadFields, "error", err.Error())
		return status, message
	default:
		rt.stats.upstreamErrors.Inc()
	}
	if now, last := time.Now().UnixNano(), rt.failLogged.Load(); now-last >= int64(time.Second) && rt.failLogged.CompareAndSwap(last, now) {
		// The proxy's own 502s and 503s are what a user debugging failed requests looks for:
		// at info, one line per second per route with the count of those not logged.
		rt.p.log.Info("Request failed", "direction", rt.dir.String(), "target", rt.name, "status", status, "error", err.Error(),
			"alsoFailedSinceLastLine", rt.failUnlogged.Swap(0))
	} else {
		rt.failUnlogged.Add(1)
		rt.p.log.V(1).Info("Request failed", "direction", rt.dir.String(), "target", rt.name, "status", status, "error", err.Error())
	}
	return status, message
}

// isResponseHeadTooLarge recognises a response head over the limits: from the fast path's
// reader, or from net/http's transport (MaxResponseHeaderBytes), whose errors are not exported
// and are recognised by their text (TestResponseHeadLimits pins them for each path).
func isResponseHeadTooLarge(err error) bool {
	if errors.Is(err, errResponseHeadTooLarge) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "server response headers exceeded") || strings.Contains(msg, "response header list larger than")
}

func (rt *route) fail(w http.ResponseWriter, r *http.Request, err error, start time.Time, g *generation) {
	if r.Context().Err() != nil {
		rt.stats.canceled.Inc()
		return
	}
	status, message := rt.upstreamFailed(err)
	header := w.Header()
	closeIfDraining(header, r, g)
	header["Content-Type"] = textPlain
	header["X-Content-Type-Options"] = noSniff
	w.WriteHeader(status)
	_, _ = io.WriteString(w, message)
	rt.stats.code(status).Inc()
	rt.stats.duration.Observe(time.Since(start).Seconds())
}

// switchProtocols completes an Upgrade (WebSocket): it answers 101 on the hijacked client
// connection and pipes bytes both ways until either side closes.
func (rt *route) switchProtocols(w http.ResponseWriter, r *http.Request, res *http.Response, start time.Time, g *generation) {
	upstream, ok := res.Body.(io.ReadWriteCloser)
	if !ok {
		_ = res.Body.Close()
		rt.fail(w, r, errors.New("101 response without a writable body"), start, g)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		_ = upstream.Close()
		rt.fail(w, r, err, start, g)
		return
	}
	rt.stats.code(res.StatusCode).Inc()
	_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	_ = res.Header.Write(brw)
	_, _ = brw.WriteString("\r\n")
	if err := brw.Flush(); err != nil {
		_ = conn.Close()
		_ = upstream.Close()
		return
	}
	setKind(conn, kindUpgraded)
	// The client may have sent bytes after its request; they are in brw.Reader.
	pipe(&bufferedConn{Conn: conn, r: brw.Reader}, upstream)
}

type bufferedConn struct {
	net.Conn
	r io.Reader
}

func (c *bufferedConn) Read(b []byte) (int, error) { return c.r.Read(b) }

func (c *bufferedConn) CloseWrite() error {
	if cw, ok := c.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return nil
}

// forwardedHeader is the header to send on: without hop-by-hop fields (those of RFC 9110 section
// 7.6.1 and those named by Connection), keeping "TE: trailers" (gRPC) and, for an Upgrade, the
// upgrade itself. Without a hop-by-hop field the request's own map is used, not a copy.
// User-Agent is set to nil when absent so that the transport does not add Go's.
func forwardedHeader(h http.Header, upgrade bool) http.Header {
	clean := true
	for k, vv := range h {
		if isHopHeader(k) && (k != "Te" || !onlyTrailers(vv)) {
			clean = false
			break
		}
	}
	if clean {
		if _, ok := h["User-Agent"]; !ok {
			h["User-Agent"] = nil
		}
		return h
	}
	out := make(http.Header, len(h))
	for k, vv := range h {
		if !isHopHeader(k) {
			out[k] = vv
		}
	}
	for _, v := range h["Connection"] {
		for token := range strings.SplitSeq(v, ",") {
			if token = textproto.TrimString(token); token != "" {
				delete(out, http.CanonicalHeaderKey(token))
			}
		}
	}
	if hasToken(h["Te"], "trailers") {
		out["Te"] = []string{"trailers"}
	}
	if upgrade {
		out["Connection"] = []string{"Upgrade"}
		out["Upgrade"] = h["Upgrade"]
	}
	if _, ok := out["User-Agent"]; !ok {
		out["User-Agent"] = nil
	}
	return out
}

func isHopHeader(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

func onlyTrailers(vv []string) bool {
	return len(vv) == 1 && strings.EqualFold(textproto.TrimString(vv[0]), "trailers")
}

func isUpgrade(h http.Header) bool {
	return len(h["Upgrade"]) > 0 && hasToken(h["Connection"], "upgrade")
}

// hasToken reports whether a comma-separated header holds token (case-insensitive).
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(textproto.TrimString(t), token) {
				return true
			}
		}
	}
	return false
}
