package proxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	outroutes "github.com/meshlift/meshlift/internal/outbound"
	"github.com/meshlift/meshlift/internal/proxyconfig"
)

// InboundListener is the name of the inbound listener.
const InboundListener = "inbound"

// AppProbesListener is the name of the listener for the app's rewritten kubelet probes
// (probes.go): plain HTTP on Options.AppProbePort, every address.
const AppProbesListener = "app-probes"

// OutboundListener is the name of the outbound listener of the upstream on localPort.
func OutboundListener(localPort int) string { return "outbound:" + strconv.Itoa(localPort) }

// maxConnectAttempts bounds Options.MaxConnectAttempts.
const maxConnectAttempts = 8

// drainTick is how often Drain sends GOAWAY to HTTP/2 connections handed over late and closes
// HTTP/1 connections idle for DrainIdleTimeout.
const drainTick = 50 * time.Millisecond

// Options tune the data path. Zero values take the defaults.
type Options struct {
	// Namespace is the pod's namespace (the last label of the SNIs it serves). Required.
	Namespace string
	// TrustDomain of the SPIFFE IDs; "cluster.local" by default.
	TrustDomain string
	Logger      logr.Logger
	// DialTimeout bounds a TCP connect to the app or an endpoint (5s).
	DialTimeout time.Duration
	// HandshakeTimeout bounds an mTLS handshake and the first bytes of an inbound connection (10s).
	HandshakeTimeout time.Duration
	// ProtocolDetectionTimeout is how long an outbound connection may stay silent before it is
	// taken for a protocol where the server speaks first, and piped as TCP (200ms).
	ProtocolDetectionTimeout time.Duration
	// IdleTimeout closes keep-alive connections from clients (the app, other proxies) that stay
	// idle (120s: longer than common client pools keep them, Go's 90s for one, so clients close
	// them first).
	IdleTimeout time.Duration
	// PoolIdleTimeout closes pooled connections to the app and to upstream endpoints that stay
	// idle (4s). It is shorter than what the other side waits before closing them itself (the
	// other proxy's DrainIdleTimeout, common app keep-alive timeouts such as Node.js's 5s), so the
	// proxy never sends a request on a connection the other side is closing.
	PoolIdleTimeout time.Duration
	// DrainTimeout bounds Drain when its context has no deadline (30s).
	DrainTimeout time.Duration
	// MaxCutLogs is how many cut connections a cut logs one by one; the rest are only counted
	// in its summary line (1000).
	MaxCutLogs int
	// DrainIdleTimeout is how long, during a drain, an HTTP/1 keep-alive connection may stay idle
	// before it is closed; a request it carries before then is answered with "Connection: close"
	// (5s, longer than PoolIdleTimeout; negative: close idle connections at once). Closing an idle
	// connection races with a request the client may be sending on it, which then fails unless
	// the client retries it; a client that uses the connection gets an answer, and other proxies
	// close their idle connections first.
	DrainIdleTimeout time.Duration
	// LoadBalancing is RoundRobin (default) or LeastRequest.
	LoadBalancing string
	// MaxConnectAttempts is how many endpoints a request or TCP connection tries when connecting
	// fails (3, at most 8).
	MaxConnectAttempts int
	// AppHost is where the app listens (127.0.0.1).
	AppHost string
	// AppProbePort is the port of AppProbesListener (proxyconfig.AppProbePort, 15020); negative:
	// no such listener.
	AppProbePort int
	// AnnotationsFile is the pod's downward-API annotations file, where the app's original
	// probes are (proxyconfig.OriginalProbesAnnotation). Without it every probe is unknown (404).
	AnnotationsFile string
	// CaptureOutbound adds the listeners of captured outbound connections (CaptureListener,
	// CaptureListenerIPv6, on OutboundCapturePort), routed by SetOutboundRoutes (capture.go).
	CaptureOutbound bool
}

func (o Options) withDefaults() (Options, error) {
	setDuration := func(d *time.Duration, def time.Duration) {
		if *d <= 0 {
			*d = def
		}
	}
	setDuration(&o.DialTimeout, 5*time.Second)
	setDuration(&o.HandshakeTimeout, 10*time.Second)
	setDuration(&o.ProtocolDetectionTimeout, 200*time.Millisecond)
	setDuration(&o.IdleTimeout, 120*time.Second)
	setDuration(&o.PoolIdleTimeout, 4*time.Second)
	setDuration(&o.DrainTimeout, 30*time.Second)
	if o.MaxCutLogs <= 0 {
		o.MaxCutLogs = 1000
	}
	if o.DrainIdleTimeout == 0 {
		o.DrainIdleTimeout = 5 * time.Second
	} else if o.DrainIdleTimeout < 0 {
		o.DrainIdleTimeout = 0
	}
	if o.TrustDomain == "" {
		o.TrustDomain = "cluster.local"
	}
	if o.LoadBalancing == "" {
		o.LoadBalancing = RoundRobin
	}
	if o.MaxConnectAttempts == 0 {
		o.MaxConnectAttempts = 3
	}
	if o.AppHost == "" {
		o.AppHost = "127.0.0.1"
	}
	if o.AppProbePort == 0 {
		o.AppProbePort = proxyconfig.AppProbePort
	}
	switch {
	case o.Namespace == "":
		return o, errors.New("the pod's namespace is required")
	case o.LoadBalancing != RoundRobin && o.LoadBalancing != LeastRequest:
		return o, fmt.Errorf("load balancing %q is not %s or %s", o.LoadBalancing, RoundRobin, LeastRequest)
	case o.MaxConnectAttempts < 1 || o.MaxConnectAttempts > maxConnectAttempts:
		return o, fmt.Errorf("max connect attempts %d is not from 1 to %d", o.MaxConnectAttempts, maxConnectAttempts)
	case o.AppProbePort > 65535:
		return o, fmt.Errorf("app probe port %d is not a port number (1 to 65535, or negative for none)", o.AppProbePort)
	}
	return o, nil
}

// Proxy is the data path of one meshlift-proxy process.
type Proxy struct {
	cfg          proxyconfig.Config
	opts         Options
	log          logr.Logger
	metrics      *metrics
	permissive   bool
	httpErrorLog *log.Logger

	cert          atomic.Pointer[workloadCertificate]
	trustMu       sync.Mutex
	trust         atomic.Pointer[trustState]
	noTrustServer *tls.Config

	listenerNames   []string
	inboundPorts    map[string]*target // by port name
	inboundNumbers  map[int]*target    // by port number, for captured connections
	plaintextTarget *target
	undeclaredOnce  sync.Once
	undeclared      *targetStats       // captured plaintext to ports the MeshService does not declare
	probes          *appProbes         // nil without AppProbesListener
	outbound        map[string]*target // by listener name
	httpTargets     []*target

	// clusters are the upstreams' and, with CaptureOutbound, those of the outbound routes that
	// got endpoints or a connection (created then).
	clustersMu sync.RWMutex
	clusters   map[string]*cluster

	routes     atomic.Pointer[outroutes.Table] // the outbound routes (CaptureOutbound)
	capturedMu sync.Mutex
	captured   map[string]*target // a captured route's target, by cluster
	nextHTTP   int                // the httpIndex of the next captured target
	passOnce   sync.Once
	passStats  *targetStats // captured connections to destinations outside the mesh
	// passthroughDial, when set, dials destinations outside the mesh (tests: from the pod's
	// network namespace, where the proxy's goroutines are not).
	passthroughDial func(network, address string) (net.Conn, error)

	mu        sync.Mutex // serializes Start, StopAccepting, ResumeAccepting, Drain's takeover and Close
	started   bool
	closed    bool
	accepting bool
	listeners []*listener
	gen       *generation              // serves connections accepted from now on
	gens      map[*generation]struct{} // every generation not closed yet (draining ones)

	// held is how many connections the proxy still serves in generations it no longer accepts
	// for (RetiringConnections).
	held atomic.Int64
	// cutAtBudget counts the connections Retire cut at a drain budget's end.
	cutAtBudget atomic.Int64
}

// listener is a listening socket the proxy accepts on.
type listener struct {
	name    string
	ln      net.Listener
	dl      interface{ SetDeadline(time.Time) error }
	target  *target // nil for the inbound, app probe and capture listeners
	probes  bool    // AppProbesListener
	capture bool    // CaptureListener or CaptureListenerIPv6
	stop    chan struct{}
	done    chan struct{}

	wakeMu sync.Mutex
	wakes  []net.Conn // connections made to wake an accept blocked in the kernel
}

// New builds the data path for cfg. It serves nothing until Start; it needs a certificate
// (SetCertificate) and a trust bundle (SetTrustBundle) for mTLS, and endpoints (SetEndpoints) for
// its upstreams.
func New(cfg proxyconfig.Config, opts Options) (*Proxy, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("invalid proxy options: %w", err)
	}
	p := &Proxy{
		cfg:            cfg,
		opts:           opts,
		log:            opts.Logger,
		metrics:        newMetrics(),
		permissive:     cfg.MTLSMode == "PERMISSIVE",
		inboundPorts:   map[string]*target{},
		inboundNumbers: map[int]*target{},
		outbound:       map[string]*target{},
		clusters:       map[string]*cluster{},
		captured:       map[string]*target{},
		gens:           map[*generation]struct{}{},
	}
	p.httpErrorLog = log.New(httpLogWriter{log: p.log.V(1)}, "", 0)
	p.noTrustServer = &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			if _, ok := p.cfg.Route(hello.ServerName, p.opts.Namespace); !ok {
				return nil, errUnknownSNI
			}
			return nil, errNoTrustBundle
		},
	}
	p.metrics.certificateExpiry.Set(0)

	p.listenerNames = append(p.listenerNames, InboundListener)
	for _, port := range cfg.Ports {
		t := &target{dir: inbound, name: port.Name, port: port,
			appAddress: net.JoinHostPort(opts.AppHost, strconv.Itoa(port.Port)),
			stats:      p.metrics.forTarget(inbound, port.Name)}
		if port.Protocol != protocolTCP {
			rt := &route{p: p, dir: inbound, name: port.Name, stats: t.stats, appAddress: t.appAddress}
			rt.app1 = p.newAppTransport(t, false)
			rt.app = rt.app1
			if port.Protocol == "HTTP2" || port.Protocol == "GRPC" {
				rt.app = p.newAppTransport(t, true)
			} else {
				rt.fastHTTP1, rt.appPool = true, newH1Pool(opts.PoolIdleTimeout)
			}
			p.addHTTPTarget(t, rt)
		}
		p.inboundPorts[port.Name] = t
		if _, ok := p.inboundNumbers[port.Port]; !ok {
			p.inboundNumbers[port.Port] = t
		}
		if p.plaintextTarget == nil {
			p.plaintextTarget = t
		}
	}
	for _, u := range cfg.Upstreams {
		name := OutboundListener(u.LocalPort)
		if _, ok := p.outbound[name]; ok {
			return nil, fmt.Errorf("invalid proxy configuration: two upstreams on local port %d", u.LocalPort)
		}
		sni := u.SNI()
		c := p.clusters[sni]
		if c == nil {
			c = p.newCluster(sni)
			p.clusters[sni] = c
			p.metrics.endpoints.WithLabelValues(sni).Set(0)
		}
		t := &target{dir: outbound, name: sni, cluster: c, stats: c.stats}
		p.addHTTPTarget(t, &route{p: p, dir: outbound, name: sni, stats: c.stats, cluster: c, fastHTTP1: true})
		p.outbound[name] = t
		p.listenerNames = append(p.listenerNames, name)
	}
	if opts.AppProbePort > 0 {
		p.probes = p.newAppProbes()
		p.listenerNames = append(p.listenerNames, AppProbesListener)
	}
	if opts.CaptureOutbound {
		p.listenerNames = append(p.listenerNames, CaptureListener, CaptureListenerIPv6)
	}
	p.nextHTTP = len(p.httpTargets)
	return p, nil
}

func (p *Proxy) addHTTPTarget(t *target, rt *route) {
	t.route = rt
	t.httpIndex = len(p.httpTargets)
	p.httpTargets = append(p.httpTargets, t)
}

// Collectors are the data path's metrics, for the admin endpoint's /stats.
func (p *Proxy) Collectors() []prometheus.Collector { return p.metrics.collectors() }

// ListenerNames are the listeners the configuration asks for: InboundListener, then
// OutboundListener(port) per upstream, in the configuration's order, then AppProbesListener
// (unless Options.AppProbePort is negative), then CaptureListener and CaptureListenerIPv6 (with
// Options.CaptureOutbound).
func (p *Proxy) ListenerNames() []string { return slices.Clone(p.listenerNames) }

// ListenAddress is where Bind listens for a listener: the inbound port and the app probe port
// on every address (IPv4 and IPv6), an outbound port on 127.0.0.1 only, the captured outbound
// port on 127.0.0.1 and on ::1 (where capture redirects the app's IPv4 and IPv6 connections).
func (p *Proxy) ListenAddress(name string) (string, error) {
	if name == InboundListener {
		return net.JoinHostPort("", strconv.Itoa(p.cfg.InboundPort)), nil
	}
	if name == AppProbesListener && p.probes != nil {
		return net.JoinHostPort("", strconv.Itoa(p.opts.AppProbePort)), nil
	}
	if _, ok := p.outbound[name]; ok {
		return net.JoinHostPort("127.0.0.1", strings.TrimPrefix(name, "outbound:")), nil
	}
	if p.opts.CaptureOutbound {
		switch name {
		case CaptureListener:
			return net.JoinHostPort("127.0.0.1", strconv.Itoa(OutboundCapturePort)), nil
		case CaptureListenerIPv6:
			return net.JoinHostPort("::1", strconv.Itoa(OutboundCapturePort)), nil
		}
	}
	return "", fmt.Errorf("listener %q is not in the configuration", name)
}

// Bind opens the named listeners (all of ListenerNames when none is named), for a process that
// received none in a handoff. On error it closes what it opened. AppProbesListener is optional:
// when its port is taken (a proxy run where something else has 15020) Bind logs the error and
// returns the others without it, so the data path still starts; the app's rewritten probes then
// fail, which the pod's events show.
func (p *Proxy) Bind(names ...string) (map[string]net.Listener, error) {
	if len(names) == 0 {
		names = p.listenerNames
	}
	bound := make(map[string]net.Listener, len(names))
	for _, name := range names {
		address, err := p.ListenAddress(name)
		if err == nil {
			var l net.Listener
			if l, err = net.Listen("tcp", address); err == nil {
				bound[name] = l
				continue
			}
			if name == AppProbesListener {
				p.log.Error(err, "Cannot bind the app probe listener; serving without it (the app's rewritten probes fail until a proxy binds it)",
					"listener", name, "address", address)
				continue
			}
			if name == CaptureListenerIPv6 {
				// A pod without IPv6 (no ::1) has no IPv6 connections to capture either.
				p.log.Info("Not capturing IPv6 outbound connections: cannot bind ::1", "listener", name, "address", address, "reason", err.Error())
				continue
			}
		}
		for _, l := range bound {
			_ = l.Close()
		}
		return nil, fmt.Errorf("failed to bind listener %s: %w", name, err)
	}
	return bound, nil
}

// Start accepts on the given listeners, by name (see ListenerNames; a subset is allowed). The
// proxy owns them from now on: Close closes them. Each must be a TCP listener (it is stopped with
// a deadline, not closed), and outbound listeners must be on a loopback address: they take
// plaintext and call upstreams with this workload's identity.
func (p *Proxy) Start(listeners map[string]net.Listener) error {
	if len(listeners) == 0 {
		return errors.New("no listener to start")
	}
	var ls []*listener
	for _, name := range p.listenerNames {
		ln, ok := listeners[name]
		if !ok {
			continue
		}
		dl, ok := ln.(interface{ SetDeadline(time.Time) error })
		if !ok {
			return fmt.Errorf("listener %s is a %T, which cannot stop accepting without closing", name, ln)
		}
		l := &listener{name: name, ln: ln, dl: dl, probes: name == AppProbesListener,
			capture: name == CaptureListener || name == CaptureListenerIPv6}
		if name != InboundListener && !l.probes {
			l.target = p.outbound[name]
			addr, ok := ln.Addr().(*net.TCPAddr)
			if !ok || !addr.IP.IsLoopback() {
				return fmt.Errorf("outbound listener %s is on %s, not on a loopback address", name, ln.Addr())
			}
		}
		ls = append(ls, l)
	}
	for name := range listeners {
		if !slices.Contains(p.listenerNames, name) {
			return fmt.Errorf("listener %q is not in the configuration", name)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.closed:
		return errors.New("proxy is closed")
	case p.started:
		return errors.New("proxy is already started")
	}
	p.started = true
	p.listeners = ls
	if p.probes != nil {
		p.probes.start()
	}
	p.resumeLocked()
	names := make([]string, len(ls))
	for i, l := range ls {
		names[i] = l.name
	}
	p.log.Info("Accepting connections", "listeners", names)
	return nil
}

// Listeners are the listeners the proxy was started with, by name (for a handoff).
func (p *Proxy) Listeners() map[string]net.Listener {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]net.Listener, len(p.listeners))
	for _, l := range p.listeners {
		out[l.name] = l.ln
	}
	return out
}

// StopAccepting stops the accept loops without closing the listening sockets: connections
// keep queuing in the kernel and another process holding copies of the sockets accepts them.
// Connections already accepted are served on. It returns once no loop accepts any more.
func (p *Proxy) StopAccepting() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.accepting {
		return
	}
	p.accepting = false
	past := time.Unix(1, 0)
	for _, l := range p.listeners {
		close(l.stop)
		setNonblocking(l.ln)
		if err := l.dl.SetDeadline(past); err != nil {
			p.log.Error(err, "Failed to interrupt an accept loop", "listener", l.name)
		}
	}
	for _, l := range p.listeners {
		p.waitAcceptLoop(l)
	}
	p.log.Info("Stopped accepting connections")
}

// stuckAcceptWait is how long StopAccepting waits for an accept loop before it takes it for
// blocked in the kernel.
const stuckAcceptWait = 100 * time.Millisecond

// waitAcceptLoop waits for an accept loop to see its deadline. A deadline only interrupts an
// accept waiting in the poller: if the socket was made blocking (os.File.Fd on any copy of it, in
// any process, does that to the socket they share), accept waits in the kernel until a
// connection comes. Then the proxy makes one itself, which the loop recognizes and closes (or
// another process accepts, and sees closed).
func (p *Proxy) waitAcceptLoop(l *listener) {
	timer := time.NewTimer(stuckAcceptWait)
	defer timer.Stop()
	for {
		select {
		case <-l.done:
			l.wakeMu.Lock()
			for _, c := range l.wakes {
				_ = c.Close()
			}
			l.wakes = nil
			l.wakeMu.Unlock()
			return
		case <-timer.C:
			p.log.Info("An accept loop is blocked in the kernel: waking it with a connection", "listener", l.name)
			setNonblocking(l.ln)
			if c, err := net.DialTimeout("tcp", wakeAddress(l.ln.Addr()), time.Second); err == nil {
				l.wakeMu.Lock()
				l.wakes = append(l.wakes, c)
				l.wakeMu.Unlock()
			} else {
				p.log.Error(err, "Failed to wake a blocked accept loop", "listener", l.name)
			}
			timer.Reset(stuckAcceptWait)
		}
	}
}

// isWake reports whether c is a connection waitAcceptLoop made.
func (l *listener) isWake(c net.Conn) bool {
	l.wakeMu.Lock()
	defer l.wakeMu.Unlock()
	for _, w := range l.wakes {
		if w.LocalAddr().String() == c.RemoteAddr().String() {
			return true
		}
	}
	return false
}

// wakeAddress is where to connect to reach a listener: its address, or loopback for a listener
// on every address.
func wakeAddress(addr net.Addr) string {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return addr.String()
	}
	ip := tcp.IP
	if ip == nil || ip.IsUnspecified() {
		ip = net.IPv6loopback
		if tcp.IP == nil || tcp.IP.To4() != nil {
			ip = net.IPv4(127, 0, 0, 1)
		}
	}
	return net.JoinHostPort(ip.String(), strconv.Itoa(tcp.Port))
}

// setNonblocking makes a listening socket non-blocking again, so that accept waits in the poller
// where deadlines reach it.
func setNonblocking(ln net.Listener) {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	_ = raw.Control(func(fd uintptr) { _ = syscall.SetNonblock(int(fd), true) })
}

// ResumeAccepting accepts again on the same listeners (after StopAccepting, with or without a
// Drain in between).
func (p *Proxy) ResumeAccepting() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.closed:
		return errors.New("proxy is closed")
	case !p.started:
		return errors.New("proxy is not started")
	case p.accepting:
		return nil
	}
	p.resumeLocked()
	p.log.Info("Resumed accepting connections")
	return nil
}

func (p *Proxy) resumeLocked() {
	if p.gen == nil {
		p.gen = p.newGeneration()
		p.gens[p.gen] = struct{}{}
	}
	for _, l := range p.listeners {
		setNonblocking(l.ln)
		if err := l.dl.SetDeadline(time.Time{}); err != nil {
			p.log.Error(err, "Failed to clear the accept deadline", "listener", l.name)
		}
		l.stop, l.done = make(chan struct{}), make(chan struct{})
		go p.accept(p.gen, l, l.stop, l.done)
	}
	p.accepting = true
}

func (p *Proxy) accept(g *generation, l *listener, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	dir := inbound
	if l.target != nil || l.capture {
		dir = outbound
	}
	var delay time.Duration
	for {
		raw, err := l.ln.Accept()
		if err != nil {
			select {
			case <-stop:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				p.log.Info("Listener closed: no longer accepting on it", "listener", l.name)
				return
			}
			if isTimeout(err) { // a deadline we did not set
				_ = l.dl.SetDeadline(time.Time{})
				continue
			}
			// Out of file descriptors and the like: back off as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			p.log.Error(err, "Failed to accept a connection, retrying", "listener", l.name, "delay", delay)
			select {
			case <-stop:
				return
			case <-time.After(delay):
			}
			continue
		}
		delay = 0
		select {
		case <-stop:
			if l.isWake(raw) {
				_ = raw.Close()
				continue // the next accept sees the deadline
			}
		default:
		}
		if l.probes {
			// Probe connections are not tracked in a generation: each carries one short
			// request (no keep-alive), answered by this process even after it handed off.
			p.probes.serve(raw)
			continue
		}
		if c := g.track(raw, dir, l.name); c != nil {
			if l.capture {
				go p.serveCaptured(c)
			} else {
				go p.serveConn(c, l.target)
			}
		}
	}
}

// Close stops accepting, closes the listeners (this process's copies of the sockets) and every
// connection, and releases the pools.
func (p *Proxy) Close() error {
	p.StopAccepting()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	gens := make([]*generation, 0, len(p.gens))
	for g := range p.gens {
		gens = append(gens, g)
	}
	p.gens = map[*generation]struct{}{}
	p.gen = nil
	listeners := p.listeners
	p.mu.Unlock()

	var errs []error
	for _, l := range listeners {
		if err := l.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, fmt.Errorf("failed to close listener %s: %w", l.name, err))
		}
	}
	for _, g := range gens {
		g.close()
	}
	if p.probes != nil {
		p.probes.close()
	}
	p.capturedMu.Lock()
	targets := slices.Clone(p.httpTargets)
	for _, t := range p.captured {
		if !slices.Contains(targets, t) {
			targets = append(targets, t)
		}
	}
	p.capturedMu.Unlock()
	for _, t := range targets {
		if rt := t.route; rt.cluster != nil {
			rt.cluster.http.CloseIdleConnections()
			for _, e := range rt.cluster.endpoints.Load().list {
				e.h1.closeIdle()
			}
		} else {
			rt.app.CloseIdleConnections()
			rt.app1.CloseIdleConnections()
			if rt.appPool != nil {
				rt.appPool.closeIdle()
			}
		}
	}
	return errors.Join(errs...)
}

// httpLogWriter sends net/http's server log lines (TLS and protocol errors of clients) to logr.
type httpLogWriter struct{ log logr.Logger }

func (w httpLogWriter) Write(b []byte) (int, error) {
	w.log.Info("HTTP server error", "message", strings.TrimSpace(string(b)))
	return len(b), nil
}
