package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/meshlift/meshlift/internal/capture/origdst"
	outroutes "github.com/meshlift/meshlift/internal/outbound"
)

// Listeners of captured outbound connections (Options.CaptureOutbound): the pod's nftables
// rules redirect the app's TCP connections to OutboundCapturePort, on 127.0.0.1 for IPv4 and
// on ::1 for IPv6 (docs/traffic.md).
const (
	CaptureListener     = "outbound-capture"
	CaptureListenerIPv6 = "outbound-capture-ipv6"
	// OutboundCapturePort is capture.DefaultOutboundPort (the proxy links no nftables code).
	OutboundCapturePort = outroutes.CapturePort
)

// passthroughTarget names, in metrics, the captured connections to destinations outside the
// mesh (not a DNS label, so no cluster has that name).
const passthroughTarget = "_passthrough"

// errNotRedirected: a connection to the capture listener that capture did not redirect.
var errNotRedirected = errors.New("the connection was not redirected by capture")

// SetOutboundRoutes replaces the outbound routes (an outbound.Table from the control plane): captured
// connections accepted from now on are routed by it. Connections already open keep their path.
func (p *Proxy) SetOutboundRoutes(table *outroutes.Table) {
	p.routes.Store(table)
	p.metrics.outboundRoutes.Set(float64(table.Len()))
	p.log.V(1).Info("Applied outbound routes", "destinations", table.Len(), "clusters", len(table.Clusters()))
}

// serveCaptured serves a connection the app made to some address that capture redirected to
// the proxy: one to a destination of the outbound routes (a Service ClusterIP:port or a pod
// IP:port of a MeshService) is served as the explicit upstreams are, mTLS to a ready endpoint of
// that MeshService port with its SNI and its identity checked; one to anywhere else is piped to
// where it was going, unchanged. A connection made to the capture port itself is closed: the
// port only serves redirected connections.
func (p *Proxy) serveCaptured(c *trackedConn) {
	defer func() {
		if r := recover(); r != nil {
			p.log.Error(fmt.Errorf("panic: %v", r), "Connection handler panicked")
			_ = c.Close()
		}
	}()
	dst, err := originalDestination(c)
	if err != nil {
		p.metrics.captureRefused.Inc()
		p.log.V(1).Info("Refused a connection to the outbound capture port", "remote", c.RemoteAddr().String(), "reason", err.Error())
		_ = c.Close()
		return
	}
	route, ok := p.routes.Load().Lookup(dst)
	if !ok {
		p.passThrough(c, dst)
		return
	}
	t := p.capturedTarget(route)
	if !p.awaitEndpoints(t.cluster) {
		t.stats.noEndpoints.Inc()
		p.log.V(1).Info("Closing a captured connection: no endpoints yet", "cluster", t.name, "destination", dst.String())
		_ = c.Close()
		return
	}
	if route.Protocol == protocolTCP {
		p.pipeToUpstream(t, c)
		return
	}
	p.serveOutbound(c, t)
}

// originalDestination is where the app addressed c before capture redirected it.
func originalDestination(c *trackedConn) (netip.AddrPort, error) {
	dst, err := origdst.OriginalDst(c.Conn)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%w: %w", errNotRedirected, err)
	}
	local, ok := c.LocalAddr().(*net.TCPAddr)
	if !ok || local.AddrPort() == dst || netip.AddrPortFrom(local.AddrPort().Addr().Unmap(), local.AddrPort().Port()) == dst {
		return netip.AddrPort{}, errNotRedirected
	}
	return dst, nil
}

// passThrough pipes a captured connection to its original destination: it is not in the mesh.
// The proxy's own connections are not captured (its UID is excluded), so this does not loop.
func (p *Proxy) passThrough(c *trackedConn, dst netip.AddrPort) {
	p.passOnce.Do(func() { p.passStats = p.metrics.forTarget(outbound, passthroughTarget) })
	dial := p.passthroughDial
	if dial == nil {
		dialer := &net.Dialer{Timeout: p.opts.DialTimeout}
		dial = dialer.Dial
	}
	up, err := dial("tcp", dst.String())
	if err != nil {
		p.passStats.connectFailure.Inc()
		p.log.V(1).Info("Failed to connect to a destination outside the mesh", "destination", dst.String(), "error", err.Error())
		_ = c.Close()
		return
	}
	p.passStats.codes[0].Inc()
	setKind(c, kindTCP)
	pipe(c, up)
}

// capturedTarget is the target of a captured route: the explicit upstream's, when one has the
// same cluster, else one made on first use (with the cluster, if it got no endpoints yet).
func (p *Proxy) capturedTarget(r outroutes.Route) *target {
	p.capturedMu.Lock()
	defer p.capturedMu.Unlock()
	if t := p.captured[r.Cluster]; t != nil {
		return t
	}
	for _, t := range p.outbound {
		if t.name == r.Cluster {
			p.captured[r.Cluster] = t
			return t
		}
	}
	c := p.clusterNamed(r.Cluster, true)
	t := &target{dir: outbound, name: r.Cluster, cluster: c, stats: c.stats}
	t.route = &route{p: p, dir: outbound, name: r.Cluster, stats: c.stats, cluster: c, fastHTTP1: true}
	t.httpIndex = p.nextHTTP
	p.nextHTTP++
	p.captured[r.Cluster] = t
	return t
}

// clusterNamed returns the cluster of that name, making it when create is set and it does not
// exist.
func (p *Proxy) clusterNamed(name string, create bool) *cluster {
	p.clustersMu.RLock()
	c := p.clusters[name]
	p.clustersMu.RUnlock()
	if c != nil || !create {
		return c
	}
	p.clustersMu.Lock()
	defer p.clustersMu.Unlock()
	if c = p.clusters[name]; c == nil {
		c = p.newCluster(name)
		p.clusters[name] = c
		p.metrics.endpoints.WithLabelValues(name).Set(0)
	}
	return c
}

// awaitEndpoints waits, up to DialTimeout, until c got its first endpoints: a route can arrive
// just before the endpoints of a MeshService it names for the first time. False when they did
// not come.
func (p *Proxy) awaitEndpoints(c *cluster) bool {
	select {
	case <-c.synced:
		return true
	default:
	}
	timer := time.NewTimer(p.opts.DialTimeout)
	defer timer.Stop()
	select {
	case <-c.synced:
		return true
	case <-timer.C:
		return false
	}
}
