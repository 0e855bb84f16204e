package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshlift/meshlift/internal/buildinfo"
	"github.com/meshlift/meshlift/internal/handoff"
	"github.com/meshlift/meshlift/internal/proxy"
	"github.com/meshlift/meshlift/internal/proxyadmin"
	"github.com/meshlift/meshlift/internal/proxyconfig"
)

// owner decides who holds the listening sockets (ARCHITECTURE.md section 6): it waits until the
// pod's active-slot annotation names this slot, takes the sockets over from the process that
// answers on the handoff socket (or binds them fresh when none does), then offers them to the
// next version and goes idle, ready to resume if that one dies.
type owner struct {
	s     settings
	proxy *proxy.Proxy
	state *proxyadmin.State
	// configured closes once the proxy has a certificate and its upstreams' endpoints.
	configured <-chan struct{}
	log        logr.Logger

	listeners map[string]net.Listener
	// predecessor stays open for the life of the process: the idle old process learns from its
	// closing that this one died and resumes accepting.
	predecessor *handoff.Conn
	// successor is the connection to the process that took the listeners over, while retiring
	// or idle.
	successor *handoff.Conn
	// retiring is the Retire that runs after a handoff until its connections end.
	retiring *retirement
	// ownUID is the UID a handoff peer must have (handoff.OwnUID()).
	ownUID uint32

	handoffs        *prometheus.CounterVec
	handoffDuration *prometheus.HistogramVec
	refusedPeers    *prometheus.CounterVec
}

// Sides of a refused handoff peer (meshlift_proxy_handoff_peers_refused_total).
const (
	// sideServing: the process that holds the listeners refused a process that connected.
	sideServing = "serving"
	// sideConnecting: the process that connected refused the one listening on the socket.
	sideConnecting = "connecting"
)

func (o *owner) registerMetrics() error {
	o.handoffs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshlift_proxy_handoffs_total", Help: "Listener handoffs by side (took-over, handed-off, resumed) and result.",
	}, []string{"side", "result"})
	o.handoffDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "meshlift_proxy_handoff_duration_seconds", Help: "Time from HELLO to DRAINED, by side.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
	}, []string{"side"})
	o.refusedPeers = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshlift_proxy_handoff_peers_refused_total",
		Help: "Processes of another UID refused on the handoff socket, by side (serving: one connected; connecting: one listened).",
	}, []string{"side"})
	if err := o.state.Register(o.handoffs, o.handoffDuration, o.refusedPeers); err != nil {
		return fmt.Errorf("registering handoff metrics: %w", err)
	}
	return nil
}

// refusedPeer records a handoff peer of another UID.
func (o *owner) refusedPeer(side string, peer handoff.PeerCredentials, err error) {
	o.refusedPeers.WithLabelValues(side).Inc()
	o.log.Error(err, "Refused a handoff peer of another UID", "side", side, "peerUID", peer.UID, "peerGID", peer.GID,
		"peerPID", peer.PID, "ownUID", o.ownUID, "socket", o.s.handoffSocket)
}

func (o *owner) run(ctx context.Context) error {
	if err := o.registerMetrics(); err != nil {
		return err
	}
	if err := o.waitMayOwn(ctx); err != nil {
		return nil //nolint:nilerr // stopped before owning anything: nothing to drain
	}
	if err := o.acquire(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer func() {
		if o.predecessor != nil {
			_ = o.predecessor.Close()
		}
	}()
	if o.s.slot == 0 {
		<-ctx.Done()
	} else if err := o.serveHandoffs(ctx); err != nil {
		return err
	}
	return o.shutdown()
}

// waitMayOwn returns once this slot may own the listeners, or with ctx's error.
func (o *owner) waitMayOwn(ctx context.Context) error {
	logged := false
	for {
		if o.mayOwn() {
			return nil
		}
		if !logged {
			o.log.Info("Waiting until the pod's active-slot annotation names this slot", "file", o.s.annotationsFile)
			logged = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (o *owner) mayOwn() bool {
	if o.s.slot == 0 {
		return true
	}
	data, err := os.ReadFile(o.s.annotationsFile)
	if err != nil {
		return false
	}
	annotations, err := proxyconfig.ParseAnnotations(data)
	if err != nil {
		o.log.Error(err, "Cannot read the pod's annotations", "file", o.s.annotationsFile)
		return false
	}
	return proxyconfig.MayOwnListeners(o.s.slot, annotations)
}

// acquire takes the listeners over from a running owner or binds them, and starts serving once
// the proxy is configured (certificate and endpoints).
func (o *owner) acquire(ctx context.Context) error {
	if o.s.slot > 0 {
		// Configuration first, then the handoff: the running proxy keeps serving for as long as
		// the control plane takes (it may be restarting), and the takeover that follows is quick.
		// The rollout's progress deadline, not this process, decides when that is too long.
		if err := o.waitConfigured(ctx); err != nil {
			return err
		}
		conn, peer, err := handoff.Dial(o.s.handoffSocket, o.ownUID)
		switch {
		case err == nil:
			return o.takeOver(ctx, handoff.NewConn(conn, o.s.drainTimeout+10*time.Second))
		case errors.Is(err, handoff.ErrPeerRefused):
			// Not the other slot: binding fresh could take the ports from the real owner, and
			// waiting hides the problem. Failing makes it visible (the container restarts).
			o.refusedPeer(sideConnecting, peer, err)
			return fmt.Errorf("the process on the handoff socket is not this pod's other proxy slot: %w", err)
		}
		o.log.Info("No process answers on the handoff socket; binding the listeners", "socket", o.s.handoffSocket, "reason", err.Error())
	}
	var listeners map[string]net.Listener
	for {
		var err error
		if listeners, err = o.proxy.Bind(); err == nil {
			break
		}
		o.log.Error(err, "Cannot bind the listeners; retrying")
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	o.state.SetRole(proxyadmin.RoleWaiting)
	select {
	case <-ctx.Done():
		closeListeners(listeners)
		return ctx.Err()
	case <-o.configured:
	}
	if err := o.proxy.Start(listeners); err != nil {
		closeListeners(listeners)
		return fmt.Errorf("starting the listeners: %w", err)
	}
	o.listeners = listeners
	o.state.SetRole(proxyadmin.RoleActive)
	o.log.Info("Serving on freshly bound listeners", "listeners", len(listeners))
	return nil
}

// waitConfigured waits until the proxy has a certificate and its endpoints, or ctx ends.
func (o *owner) waitConfigured(ctx context.Context) error {
	select {
	case <-o.configured:
		return nil
	default:
	}
	o.log.Info("Waiting for a certificate and endpoints from the control plane before taking over")
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-o.configured:
		return nil
	}
}

// takeOver is the new process's side of the handoff.
func (o *owner) takeOver(ctx context.Context, conn *handoff.Conn) error {
	started := time.Now()
	listeners, err := handoff.Request(conn, buildinfo.Version, o.s.slot)
	if err != nil {
		_ = conn.Close()
		o.handoffs.WithLabelValues("took-over", "failed").Inc()
		return fmt.Errorf("requesting the listeners from the running proxy: %w", err)
	}
	o.bindMissing(listeners)
	o.state.SetRole(proxyadmin.RoleWaiting)
	o.log.Info("Received the listeners; waiting for a certificate and endpoints before taking over", "listeners", len(listeners))
	giveUp := func(reason string) {
		_ = conn.Send(handoff.Message{Type: handoff.TypeError, Reason: reason})
		_ = conn.Close()
		closeListeners(listeners)
		o.handoffs.WithLabelValues("took-over", "failed").Inc()
	}
	select {
	case <-ctx.Done():
		giveUp("the new process is stopping")
		return ctx.Err()
	case <-time.After(o.s.handoffTimeout):
		giveUp("no certificate and endpoints within the handoff timeout")
		return fmt.Errorf("no certificate and endpoints from the control plane within %s; the running proxy keeps the listeners", o.s.handoffTimeout)
	case <-o.configured:
	}
	if o.s.takeoverDelay > 0 {
		o.log.Info("Holding the listeners without accepting before TAKEOVER (MESHLIFT_DEBUG_TAKEOVER_DELAY)", "delay", o.s.takeoverDelay.String())
		time.Sleep(o.s.takeoverDelay)
	}
	if err := o.proxy.Start(listeners); err != nil {
		giveUp("cannot serve on the listeners")
		return fmt.Errorf("starting the listeners: %w", err)
	}
	o.listeners = listeners
	o.predecessor = conn
	o.state.SetRole(proxyadmin.RoleActive)
	if err := handoff.Takeover(conn); err != nil {
		// The old process stops accepting when it reads TAKEOVER; if it died instead, the
		// sockets are ours all the same.
		o.log.Error(err, "The old process did not confirm its drain; serving anyway")
		o.handoffs.WithLabelValues("took-over", "unconfirmed").Inc()
	} else {
		o.handoffs.WithLabelValues("took-over", "ok").Inc()
	}
	o.handoffDuration.WithLabelValues("took-over").Observe(time.Since(started).Seconds())
	o.log.Info("Took over the listeners", "duration", time.Since(started).String())
	return nil
}

// bindMissing binds the listeners this version has and the running proxy did not send (an older
// version without the app probe listener, or one that could not bind it), adding them to
// listeners. A listener that cannot be bound is logged and left out: the ones received carry
// the traffic, and failing the takeover for it would keep the older process for good.
func (o *owner) bindMissing(listeners map[string]net.Listener) {
	for _, name := range o.proxy.ListenerNames() {
		if _, ok := listeners[name]; ok {
			continue
		}
		bound, err := o.proxy.Bind(name)
		if err != nil {
			o.log.Error(err, "Cannot bind a listener the running proxy did not hand over; serving without it", "listener", name)
			continue
		}
		if l, ok := bound[name]; ok {
			o.log.Info("Bound a listener the running proxy did not hand over", "listener", name)
			listeners[name] = l
		}
	}
}

// serveHandoffs answers on the handoff socket until ctx ends: it gives the listeners to a new
// process, drains, idles while that process lives, and resumes if it dies.
func (o *owner) serveHandoffs(ctx context.Context) error {
	for {
		l, err := handoff.Listen(o.s.handoffSocket)
		if err != nil {
			return err
		}
		handedOff, err := o.acceptHandoff(ctx, l)
		_ = l.Close()
		if err != nil || !handedOff {
			return err
		}
		// Idle: the new process serves. Wait until it dies (resume) or we are stopped.
		if err := o.predecessorOf(ctx); err != nil {
			return nil //nolint:nilerr // stopped while idle
		}
	}
}

// acceptHandoff serves the socket until one handoff succeeded (true) or ctx ends (false).
func (o *owner) acceptHandoff(ctx context.Context, l *net.UnixListener) (bool, error) {
	stop := context.AfterFunc(ctx, func() { _ = l.Close() })
	defer stop()
	for {
		conn, err := l.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return false, nil
			}
			return false, fmt.Errorf("accepting on the handoff socket: %w", err)
		}
		if peer, err := handoff.Authorize(conn, o.ownUID); err != nil {
			if errors.Is(err, handoff.ErrPeerRefused) {
				o.refusedPeer(sideServing, peer, err)
			} else {
				o.log.Error(err, "Cannot check a handoff peer; closing its connection")
			}
			_ = conn.Close() // nothing sent: a refused peer learns nothing
			continue
		}
		if o.offer(handoff.NewConn(conn, o.s.handoffTimeout+o.s.drainTimeout)) {
			return true, nil
		}
	}
}

// offer gives the listeners to the peer; true when it took them over and this process drained.
func (o *owner) offer(conn *handoff.Conn) bool {
	started := time.Now()
	named := make([]handoff.NamedListener, 0, len(o.listeners))
	for name, l := range o.listeners {
		tcp, ok := l.(*net.TCPListener)
		if !ok {
			o.log.Error(nil, "Listener is not TCP; cannot hand it off", "listener", name)
			_ = conn.Close()
			return false
		}
		named = append(named, handoff.NamedListener{Name: name, Listener: tcp})
	}
	hello, err := handoff.Offer(conn, o.s.slot, named)
	if err != nil {
		o.log.Error(err, "Handoff did not happen; keeping the listeners")
		o.handoffs.WithLabelValues("handed-off", "failed").Inc()
		_ = conn.Close()
		return false
	}
	log := o.log.WithValues("peerVersion", hello.Version, "peerSlot", hello.Slot)
	budget := o.drainBudget(log)
	log.Info("The new process took over; draining, then retiring", "drainBudget", budget.String())
	o.proxy.StopAccepting()
	o.state.SetRole(proxyadmin.RoleDraining)
	o.successor = conn
	ctx, cancel := context.WithCancel(context.Background())
	r := &retirement{cancel: cancel, done: make(chan struct{})}
	o.retiring = r
	go func() {
		defer close(r.done)
		err := o.proxy.Retire(ctx, proxy.RetireOptions{
			DrainTimeout: o.s.drainTimeout,
			MaxDuration:  budget,
			Drained: func(left proxy.ConnectionCounts) {
				if err := handoff.Drained(conn); err != nil {
					log.Error(err, "Cannot report DRAINED")
				}
				o.handoffs.WithLabelValues("handed-off", "ok").Inc()
				o.handoffDuration.WithLabelValues("handed-off").Observe(time.Since(started).Seconds())
				if left.Total() == 0 {
					return // Retire returns at once
				}
				o.state.SetRole(proxyadmin.RoleRetiring)
				log.Info("Drained what could move; retiring with connections that cannot move without loss",
					"connections", left.Total(), "byKind", left, "drainBudget", budget.String())
			},
		})
		switch {
		case ctx.Err() != nil:
			return // resuming or stopping: whoever stopped us sets the role
		case errors.Is(err, proxy.ErrDrainBudget):
			log.Info("Drain budget ended; idle until the new process exits", "error", err.Error(),
				"duration", time.Since(started).String())
		default:
			log.Info("Retired; idle until the new process exits", "duration", time.Since(started).String())
		}
		o.state.SetRole(proxyadmin.RoleIdle)
	}()
	return true
}

// retirement is a Retire running after a handoff.
type retirement struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// stopRetiring stops a running Retire, leaving its connections served, and waits for it; false
// when none was running (or it had ended).
func (o *owner) stopRetiring() bool {
	r := o.retiring
	o.retiring = nil
	if r == nil {
		return false
	}
	select {
	case <-r.done:
		return false
	default:
	}
	r.cancel()
	<-r.done
	return true
}

// drainBudget is the budget of the Retire after a handoff: the pod's
// meshlift.io/drain-max-duration annotation when it has a valid one (read now, so the rollout
// can set it on a running pod), else --drain-max-duration.
func (o *owner) drainBudget(log logr.Logger) time.Duration {
	if o.s.annotationsFile == "" {
		return o.s.drainMaxDuration
	}
	data, err := os.ReadFile(o.s.annotationsFile)
	if err != nil {
		log.Error(err, "Cannot read the pod's annotations; using the default drain budget", "file", o.s.annotationsFile)
		return o.s.drainMaxDuration
	}
	annotations, err := proxyconfig.ParseAnnotations(data)
	if err != nil {
		log.Error(err, "Cannot read the pod's annotations; using the default drain budget", "file", o.s.annotationsFile)
		return o.s.drainMaxDuration
	}
	budget, ok, err := proxyconfig.DrainMaxDuration(annotations)
	if err != nil {
		log.Error(err, "Ignoring the pod's drain budget annotation", "annotation", proxyconfig.DrainMaxDurationAnnotation)
	}
	if !ok {
		return o.s.drainMaxDuration
	}
	return budget
}

// predecessorOf waits while retiring or idle; it returns nil after resuming because the
// successor died, or ctx's error.
func (o *owner) predecessorOf(ctx context.Context) error {
	conn := o.successor
	o.successor = nil
	defer func() { _ = conn.Close() }()
	if err := conn.WaitPeerGone(ctx); err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	if o.stopRetiring() {
		o.log.Info("The new process is gone while this one retires; serving the retiring connections on")
	}
	o.log.Info("The new process is gone; resuming on the listeners")
	if err := o.proxy.ResumeAccepting(); err != nil {
		o.handoffs.WithLabelValues("resumed", "failed").Inc()
		return fmt.Errorf("resuming on the listeners: %w", err)
	}
	o.state.SetRole(proxyadmin.RoleActive)
	o.handoffs.WithLabelValues("resumed", "ok").Inc()
	return nil
}

// shutdown is the non-hot path (SIGTERM): stop accepting, drain, exit. An idle process has
// nothing to drain.
func (o *owner) shutdown() error {
	// A retiring process being stopped (pod deletion) drains what it still serves like any other.
	o.stopRetiring()
	if o.state.Role() == proxyadmin.RoleIdle {
		o.log.Info("Stopping while idle")
		return nil
	}
	o.log.Info("Stopping: draining", "timeout", o.s.drainTimeout.String())
	o.state.SetRole(proxyadmin.RoleDraining)
	o.proxy.StopAccepting()
	ctx, cancel := context.WithTimeout(context.Background(), o.s.drainTimeout)
	defer cancel()
	if err := o.proxy.Drain(ctx); err != nil {
		o.log.Info("Drain timed out; closing what is left", "error", err.Error())
	}
	closeListeners(o.listeners)
	return nil
}

func closeListeners(ls map[string]net.Listener) {
	for _, l := range ls {
		_ = l.Close()
	}
}
