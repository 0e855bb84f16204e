package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshlift/meshlift/internal/identity"
)

// Endpoint is one address of an upstream cluster and the identity its certificate must carry
// (from EDS: the pod IP and inbound port, and the SPIFFE ID of its service account).
type Endpoint struct {
	Address  string // ip:port
	Identity string // SPIFFE ID
}

// Load-balancing policies (Options.LoadBalancing).
const (
	RoundRobin   = "round-robin"
	LeastRequest = "least-request"
)

// Ejection after failed connects: 1s after the first failure, doubling to 30s.
const (
	minEjection = time.Second
	maxEjection = 30 * time.Second
)

var errNoEndpoints = errors.New("no endpoints")

// connectError is a failure to connect (dial or mTLS handshake) to an endpoint before anything
// was sent, so the request may go to another one.
type connectError struct {
	address string
	err     error
}

func (e *connectError) Error() string { return "connect to " + e.address + ": " + e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

func isConnectError(err error) bool {
	var ce *connectError
	return errors.As(err, &ce)
}

// endpoint is an Endpoint with its state: the TLS configurations (its own session cache), the
// requests in flight (least-request) and the ejection after failed connects.
type endpoint struct {
	Endpoint
	tlsHTTP  *tls.Config // ALPN h2, http/1.1
	tlsHTTP1 *tls.Config // ALPN http/1.1
	tlsTCP   *tls.Config // no ALPN: the upstream pipes or sniffs the bytes
	// h1 pools the fast path's HTTP/1.1 connections to the endpoint.
	h1 *h1Pool

	active       atomic.Int64
	failures     atomic.Int32
	ejectedUntil atomic.Int64 // Unix nanoseconds; 0 when not ejected
}

func (e *endpoint) failed() {
	n := e.failures.Add(1)
	ejection := maxEjection
	if n < 6 {
		ejection = min(minEjection<<(n-1), maxEjection)
	}
	e.ejectedUntil.Store(time.Now().Add(ejection).UnixNano())
}

func (e *endpoint) succeeded() {
	if e.failures.Load() != 0 {
		e.failures.Store(0)
		e.ejectedUntil.Store(0)
	}
}

func (e *endpoint) ejected() bool {
	until := e.ejectedUntil.Load()
	return until != 0 && time.Now().UnixNano() < until
}

type endpointSet struct {
	list      []*endpoint
	byAddress map[string]*endpoint
}

// cluster is an upstream: <port-name>.<meshservice>.<namespace>, its endpoints and its
// connection pools.
type cluster struct {
	name      string
	policy    string
	stats     *targetStats
	endpoints atomic.Pointer[endpointSet]
	next      atomic.Uint64
	// synced is closed when the cluster gets its first endpoints (SetEndpoints).
	synced   chan struct{}
	syncOnce sync.Once

	// http carries requests of local HTTP/2 clients (ALPN h2, falling back to HTTP/1.1); those
	// of HTTP/1 clients take the fast path, over the endpoints' h1 pools.
	http *http.Transport
}

func (p *Proxy) newCluster(name string) *cluster {
	c := &cluster{name: name, policy: p.opts.LoadBalancing, stats: p.metrics.forTarget(outbound, name), synced: make(chan struct{})}
	c.endpoints.Store(&endpointSet{})
	c.http = p.newUpstreamTransport(c, func(e *endpoint) *tls.Config { return e.tlsHTTP })
	c.http.ForceAttemptHTTP2 = true
	return c
}

// newUpstreamTransport pools connections per endpoint: requests carry the endpoint's address as
// their URL host, and the dial finds the endpoint (and the identity to verify) by it.
func (p *Proxy) newUpstreamTransport(c *cluster, config func(*endpoint) *tls.Config) *http.Transport {
	return &http.Transport{
		DialTLSContext: func(ctx context.Context, _, address string) (net.Conn, error) {
			e := c.endpoints.Load().byAddress[address]
			if e == nil {
				return nil, &connectError{address: address, err: errors.New("endpoint was removed")}
			}
			return p.dialEndpoint(ctx, c, e, config(e))
		},
		MaxIdleConnsPerHost: maxIdleConnsPerHost,
		IdleConnTimeout:     p.opts.PoolIdleTimeout,
		DisableCompression:  true,
		// Response heads have a request head's bound (h1head.go), on this path as on the fast one.
		MaxResponseHeaderBytes: maxHeadBytes,
	}
}

// SetEndpoints replaces the endpoints of an upstream cluster (its SNI,
// <port-name>.<meshservice>.<namespace>). Requests and connections that start afterwards use
// them; endpoints that stay keep their pooled connections, sessions and state.
func (p *Proxy) SetEndpoints(clusterName string, eps []Endpoint) error {
	c := p.clusterNamed(clusterName, p.opts.CaptureOutbound)
	if c == nil {
		return fmt.Errorf("cluster %q is not an upstream of this proxy", clusterName)
	}
	old := c.endpoints.Load()
	set := &endpointSet{list: make([]*endpoint, 0, len(eps)), byAddress: make(map[string]*endpoint, len(eps))}
	for _, ep := range eps {
		if err := validateEndpoint(ep); err != nil {
			return fmt.Errorf("cluster %s: %w", clusterName, err)
		}
		if prev, ok := set.byAddress[ep.Address]; ok {
			if prev.Identity != ep.Identity {
				return fmt.Errorf("cluster %s: endpoint %s is given twice with different identities", clusterName, ep.Address)
			}
			continue
		}
		e := old.byAddress[ep.Address]
		if e == nil || e.Identity != ep.Identity {
			e = p.newEndpoint(c, ep)
		}
		set.list = append(set.list, e)
		set.byAddress[ep.Address] = e
	}
	c.endpoints.Store(set)
	c.syncOnce.Do(func() { close(c.synced) })
	p.metrics.endpoints.WithLabelValues(clusterName).Set(float64(len(set.list)))
	p.log.V(1).Info("Applied endpoints", "cluster", clusterName, "endpoints", len(set.list))
	return nil
}

func validateEndpoint(ep Endpoint) error {
	if _, err := netip.ParseAddrPort(ep.Address); err != nil {
		return fmt.Errorf("endpoint address %q is not ip:port: %w", ep.Address, err)
	}
	if _, err := identity.ParseSPIFFEID(ep.Identity); err != nil {
		return fmt.Errorf("endpoint %s: %w", ep.Address, err)
	}
	return nil
}

func (p *Proxy) newEndpoint(c *cluster, ep Endpoint) *endpoint {
	e := &endpoint{Endpoint: ep, h1: newH1Pool(p.opts.PoolIdleTimeout)}
	identity := ep.Identity
	base := &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: c.name,
		// The server name is an SNI, not a DNS SAN: verifyServer checks the chain against the
		// trust bundle and the SPIFFE ID against the endpoint's identity instead.
		InsecureSkipVerify:   true, //nolint:gosec // verified by VerifyConnection
		VerifyConnection:     func(cs tls.ConnectionState) error { return p.verifyServer(cs, identity) },
		GetClientCertificate: p.clientCertificate,
		ClientSessionCache:   &sessionCache{trust: &p.trust},
	}
	e.tlsTCP = base
	e.tlsHTTP = base.Clone()
	e.tlsHTTP.NextProtos = []string{"h2", "http/1.1"}
	e.tlsHTTP1 = base.Clone()
	e.tlsHTTP1.NextProtos = []string{"http/1.1"}
	return e
}

// pick chooses an endpoint for a new request or connection, skipping those already tried and,
// while others are left, those ejected after failed connects. nil when none is left.
func (c *cluster) pick(tried []*endpoint) *endpoint {
	list := c.endpoints.Load().list
	n := len(list)
	if n == 0 {
		return nil
	}
	usable := func(e *endpoint) bool { return !contains(tried, e) && !e.ejected() }
	if c.policy == LeastRequest && n > 1 {
		// Power of two choices: the less loaded of two random endpoints.
		i := rand.IntN(n)
		j := rand.IntN(n - 1)
		if j >= i {
			j++
		}
		a, b := list[i], list[j]
		switch ua, ub := usable(a), usable(b); {
		case ua && ub:
			if b.active.Load() < a.active.Load() {
				return b
			}
			return a
		case ua:
			return a
		case ub:
			return b
		}
	}
	start := int(c.next.Add(1) % uint64(n))
	var ejected *endpoint
	for k := range n {
		e := list[(start+k)%n]
		if contains(tried, e) {
			continue
		}
		if e.ejected() {
			if ejected == nil {
				ejected = e
			}
			continue
		}
		return e
	}
	// Everything left is ejected: try one anyway rather than fail without trying.
	return ejected
}

func contains(list []*endpoint, e *endpoint) bool {
	for _, x := range list {
		if x == e {
			return true
		}
	}
	return false
}

// dialEndpoint connects to an endpoint with mTLS, counting failures and ejecting the endpoint
// after them.
func (p *Proxy) dialEndpoint(ctx context.Context, c *cluster, e *endpoint, config *tls.Config) (*tls.Conn, error) {
	if p.cert.Load() == nil {
		p.metrics.handshakeFailures.WithLabelValues(outbound.String(), "no_certificate").Inc()
		return nil, &connectError{address: e.Address, err: errNoCertificate}
	}
	if p.trust.Load() == nil {
		p.metrics.handshakeFailures.WithLabelValues(outbound.String(), "no_trust_bundle").Inc()
		return nil, &connectError{address: e.Address, err: errNoTrustBundle}
	}
	caller := ctx
	ctx, cancel := context.WithTimeout(ctx, p.opts.DialTimeout+p.opts.HandshakeTimeout)
	defer cancel()
	dialer := net.Dialer{Timeout: p.opts.DialTimeout}
	raw, err := dialer.DialContext(ctx, "tcp", e.Address)
	if err != nil {
		if caller.Err() != nil { // the client went away: not the endpoint's fault
			return nil, &connectError{address: e.Address, err: err}
		}
		e.failed()
		c.stats.connectFailure.Inc()
		return nil, &connectError{address: e.Address, err: err}
	}
	conn := tls.Client(raw, config)
	if err := conn.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		if caller.Err() != nil {
			return nil, &connectError{address: e.Address, err: err}
		}
		e.failed()
		c.stats.connectFailure.Inc()
		p.metrics.handshakeFailures.WithLabelValues(outbound.String(), handshakeFailureReason(err)).Inc()
		p.log.V(1).Info("mTLS handshake with an upstream endpoint failed", "cluster", c.name, "endpoint", e.Address, "error", err.Error())
		return nil, &connectError{address: e.Address, err: err}
	}
	e.succeeded()
	return conn, nil
}

// tryEndpoints calls try with endpoints of c, each one not tried before, until one succeeds: it
// goes on to another endpoint only after a connect error (nothing reached the endpoint), when
// again (if not nil) allows it, and for up to MaxConnectAttempts attempts. When every endpoint
// was tried and attempts are left (a MeshService with one or two ready pods), it waits
// connectRetryDelay times the attempt and tries them again: a connect that fails while a server
// proxy hands its listeners over or restarts fails for a moment only, and nothing was sent. The
// endpoint that succeeded counts one more request in flight (least-request) until the caller
// ends it with e.active.Add(-1).
func (p *Proxy) tryEndpoints(c *cluster, try func(e *endpoint) error, again func() bool) (*endpoint, error) {
	var tried [maxConnectAttempts]*endpoint
	n := 0 // endpoints tried since the last pause
	err := errNoEndpoints
	for attempt := range p.opts.MaxConnectAttempts {
		e := c.pick(tried[:n])
		if e == nil && n > 0 {
			time.Sleep(time.Duration(attempt) * connectRetryDelay)
			n = 0
			e = c.pick(nil)
		}
		if e == nil {
			break
		}
		e.active.Add(1)
		if err = try(e); err == nil {
			return e, nil
		}
		e.active.Add(-1)
		if !isConnectError(err) || (again != nil && !again()) {
			break
		}
		tried[n] = e
		n++
	}
	return nil, err
}

// connectRetryDelay is the pause before the endpoints of a cluster are tried again, times the
// attempt (100 ms, then 200 ms with the default three attempts).
const connectRetryDelay = 100 * time.Millisecond

// dialCluster connects to an endpoint of c for a TCP stream, trying up to MaxConnectAttempts
// endpoints. The endpoint counts the stream in flight until the caller ends it.
func (p *Proxy) dialCluster(ctx context.Context, c *cluster) (*tls.Conn, *endpoint, error) {
	var conn *tls.Conn
	e, err := p.tryEndpoints(c, func(e *endpoint) error {
		var dialErr error
		conn, dialErr = p.dialEndpoint(ctx, c, e, e.tlsTCP)
		return dialErr
	}, nil)
	return conn, e, err
}
