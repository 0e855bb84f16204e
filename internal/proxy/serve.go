package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/meshlift/meshlift/internal/capture/origdst"
	"github.com/meshlift/meshlift/internal/proxyconfig"
)

const protocolTCP = "TCP"

// target is where connections of a listener go: an inbound port (chosen by SNI) or an
// upstream (one outbound listener each).
type target struct {
	dir   direction
	name  string // inbound: the port name; outbound: the cluster (the upstream's SNI)
	stats *targetStats

	port       proxyconfig.Port // inbound
	appAddress string           // inbound
	cluster    *cluster         // outbound

	route     *route // nil for inbound TCP ports
	httpIndex int    // in generation.servers, when route is set
}

func (p *Proxy) serveConn(c *trackedConn, t *target) {
	defer func() {
		if r := recover(); r != nil {
			p.log.Error(fmt.Errorf("panic: %v", r), "Connection handler panicked", "stack", string(debug.Stack()))
			_ = c.Close()
		}
	}()
	if t == nil {
		p.serveInbound(c)
		return
	}
	p.serveOutbound(c, t)
}

// serveInbound: a TLS ClientHello is mTLS routed by SNI; anything else is plaintext, refused
// when mTLS is STRICT and, when PERMISSIVE, sent to the app port the client dialed when capture
// redirected the connection (plaintextTargetFor), else to the first declared port. A redirected
// PERMISSIVE connection to a TCP port that stays silent for ProtocolDetectionTimeout is piped
// as well (the server speaks first: SMTP, MySQL), as on outbound listeners. A redirected
// PERMISSIVE TLS connection whose ClientHello has no server name of this MeshService is piped
// to its app port as well, ClientHello included: the app serves TLS itself (passAppTLS).
func (p *Proxy) serveInbound(c *trackedConn) {
	deadline := time.Now().Add(p.opts.HandshakeTimeout)
	var plain *target
	var redirected bool
	firstByte, serverFirst := deadline, false
	if p.permissive {
		plain, redirected = p.plaintextTargetFor(c)
		if redirected && plain.route == nil {
			firstByte, serverFirst = time.Now().Add(p.opts.ProtocolDetectionTimeout), true
		}
	}
	if err := c.sniffFirstByte(c.Conn, firstByte); err != nil {
		if serverFirst && isTimeout(err) {
			p.pipeToApp(plain, c)
			return
		}
		_ = c.Close()
		return
	}
	if c.buffered()[0] == tlsHandshakeRecord {
		if redirected && p.passAppTLS(c, plain, deadline) {
			return
		}
		p.serveInboundTLS(c, deadline)
		return
	}
	if !p.permissive {
		p.metrics.plaintextRefused.Inc()
		p.log.V(1).Info("Refused a plaintext connection: mTLS is STRICT", "remote", c.RemoteAddr().String())
		_ = c.Close()
		return
	}
	if plain == nil {
		_ = c.Close()
		return
	}
	if plain.route == nil {
		p.pipeToApp(plain, c)
		return
	}
	proto, _ := c.sniff(c.Conn, deadline)
	c.gen.serveHTTP(plain, c, proto == protoHTTP2)
}

// undeclaredTarget names, in metrics, the captured plaintext connections to app ports the
// MeshService does not declare (not a DNS label, so no declared port has that name).
const undeclaredTarget = "_undeclared"

// plaintextTargetFor is where a PERMISSIVE plaintext connection goes. One that inbound capture
// redirected (its original destination port is not the port it was accepted on) goes to the
// app port it was addressed to: with that declared port's protocol, or piped as TCP when the
// MeshService does not declare it. One that dialed the inbound listener itself (or whose
// original destination cannot be read: no conntrack entry, so not redirected) goes to the
// first declared port, which has no SNI to say otherwise (nil when there is none).
func (p *Proxy) plaintextTargetFor(c *trackedConn) (t *target, redirected bool) {
	local, ok := c.LocalAddr().(*net.TCPAddr)
	if !ok {
		return p.plaintextTarget, false
	}
	dst, err := origdst.OriginalDst(c.Conn)
	if err != nil || int(dst.Port()) == local.Port {
		return p.plaintextTarget, false
	}
	port := int(dst.Port())
	if t := p.inboundNumbers[port]; t != nil {
		return t, true
	}
	p.undeclaredOnce.Do(func() { p.undeclared = p.metrics.forTarget(inbound, undeclaredTarget) })
	return &target{dir: inbound, name: undeclaredTarget, stats: p.undeclared,
		port:       proxyconfig.Port{Name: undeclaredTarget, Port: port, Protocol: protocolTCP},
		appAddress: net.JoinHostPort(p.opts.AppHost, strconv.Itoa(port))}, true
}

func (p *Proxy) serveInboundTLS(c *trackedConn, deadline time.Time) {
	conn := tls.Server(c, p.serverTLS())
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	err := conn.HandshakeContext(ctx)
	cancel()
	if err != nil {
		if errors.Is(err, errUnknownSNI) {
			p.metrics.unknownSNI.Inc()
		} else {
			p.metrics.handshakeFailures.WithLabelValues(inbound.String(), handshakeFailureReason(err)).Inc()
		}
		p.log.V(1).Info("Refused an inbound mTLS connection", "remote", c.RemoteAddr().String(), "error", err.Error())
		_ = conn.Close()
		return
	}
	state := conn.ConnectionState()
	port, ok := p.cfg.Route(state.ServerName, p.opts.Namespace)
	if !ok { // GetConfigForClient refused it already
		_ = conn.Close()
		return
	}
	t := p.inboundPorts[port.Name]
	// The handshake verified that the leaf carries exactly one SPIFFE ID of the trust domain.
	c.peer, _ = spiffeIDOf(state.PeerCertificates[0])
	p.log.V(1).Info("Accepted an inbound mTLS connection", "peer", c.peer, "port", port.Name, "alpn", state.NegotiatedProtocol)
	if t.route == nil {
		p.pipeToApp(t, conn)
		return
	}
	switch state.NegotiatedProtocol {
	case "h2":
		c.gen.serveHTTP(t, conn, true)
	case "http/1.1":
		c.gen.serveHTTP(t, conn, false)
	default:
		// No ALPN: a peer piping a TCP stream. Look at what it carries.
		inner := &prefixConn{Conn: conn}
		proto, _ := inner.sniff(conn, time.Now().Add(p.opts.HandshakeTimeout))
		c.gen.serveHTTP(t, inner, proto == protoHTTP2)
	}
}

// serveOutbound: HTTP/1 and h2c from the app are proxied per request; anything else, or
// nothing within ProtocolDetectionTimeout (a protocol where the server speaks first), is a TCP
// stream to one endpoint.
func (p *Proxy) serveOutbound(c *trackedConn, t *target) {
	proto, err := c.sniff(c.Conn, time.Now().Add(p.opts.ProtocolDetectionTimeout))
	switch proto {
	case protoHTTP1:
		c.gen.serveHTTP(t, c, false)
		return
	case protoHTTP2:
		c.gen.serveHTTP(t, c, true)
		return
	case protoUndecided:
		if len(c.buffered()) == 0 && !isTimeout(err) {
			_ = c.Close() // closed before saying anything
			return
		}
	}
	p.pipeToUpstream(t, c)
}

func (p *Proxy) pipeToApp(t *target, down net.Conn) {
	dialer := net.Dialer{Timeout: p.opts.DialTimeout}
	up, err := dialer.Dial("tcp", t.appAddress)
	if err != nil {
		t.stats.connectFailure.Inc()
		p.log.V(1).Info("Failed to connect to the app", "port", t.name, "error", err.Error())
		_ = down.Close()
		return
	}
	setKind(down, kindTCP)
	pipe(down, up)
}

func (p *Proxy) pipeToUpstream(t *target, down net.Conn) {
	up, e, err := p.dialCluster(context.Background(), t.cluster)
	if err != nil {
		if errors.Is(err, errNoEndpoints) {
			t.stats.noEndpoints.Inc()
		} else {
			t.stats.connectErrors.Inc()
		}
		p.log.V(1).Info("Closing a TCP connection: no upstream endpoint", "cluster", t.name, "error", err.Error())
		_ = down.Close()
		return
	}
	defer e.active.Add(-1)
	setKind(down, kindTCP)
	pipe(down, up)
}

// newAppTransport pools connections to one app port: HTTP/1.1, or h2c with prior knowledge.
func (p *Proxy) newAppTransport(t *target, h2c bool) *http.Transport {
	dialer := &net.Dialer{Timeout: p.opts.DialTimeout}
	transport := &http.Transport{
		DialContext: func(ctx context.Context, network, address string) (net.Conn, error) {
			conn, err := dialer.DialContext(ctx, network, address)
			if err != nil {
				t.stats.connectFailure.Inc()
				return nil, &connectError{address: address, err: err}
			}
			return conn, nil
		},
		MaxIdleConnsPerHost: maxIdleConnsPerHost,
		IdleConnTimeout:     p.opts.PoolIdleTimeout,
		DisableCompression:  true,
		// Response heads have a request head's bound (h1head.go), on this path as on the fast one.
		MaxResponseHeaderBytes: maxHeadBytes,
	}
	if h2c {
		transport.Protocols = new(http.Protocols)
		transport.Protocols.SetUnencryptedHTTP2(true)
	}
	return transport
}
