package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"
)

// connKind is what an accepted connection turned out to carry. It decides whether a drain can
// end the connection without loss (HTTP/1 at a response boundary) or must let it run (the rest).
type connKind uint32

const (
	// kindOther: not classified yet (TLS handshake, protocol detection).
	kindOther connKind = iota
	kindHTTP1
	kindHTTP2
	kindTCP
	kindUpgraded
	numKinds
)

var kindNames = [numKinds]string{kindOther: "other", kindHTTP1: "http1", kindHTTP2: "http2", kindTCP: "tcp",
	kindUpgraded: "upgraded"}

func (k connKind) String() string { return kindNames[k] }

// movable reports whether a drain ends connections of this kind without loss on its own: an
// HTTP/1 connection closes after its next response (or when idle), and a connection not
// classified yet is either one soon or is refused. TCP streams, upgraded connections and HTTP/2
// connections still open after their GOAWAY (streams in flight) cannot be ended by the proxy
// without cutting what they carry.
func (k connKind) movable() bool { return k == kindOther || k == kindHTTP1 }

// setKind records what c (or the accepted connection under it) carries.
func setKind(c net.Conn, kind connKind) {
	if tc := trackedOf(c); tc != nil {
		tc.kind.Store(uint32(kind))
	}
}

// Reasons a drain cuts a connection (meshlift_proxy_connections_cut_total).
const (
	// CutReasonDrainBudget: a retiring proxy reached its drain budget (Retire).
	CutReasonDrainBudget = "drain_budget"
	// CutReasonDrainTimeout: a drain that stops the process reached its timeout (Drain).
	CutReasonDrainTimeout = "drain_timeout"
)

// ErrDrainBudget is wrapped by Retire's error when the budget ended with connections open.
var ErrDrainBudget = errors.New("the drain budget ended with connections open")

// ConnectionCounts are connections by kind: "other", "http1", "http2", "tcp", "upgraded".
type ConnectionCounts map[string]int

// Total is the number of connections.
func (c ConnectionCounts) Total() int {
	n := 0
	for _, v := range c {
		n += v
	}
	return n
}

// heldConnections counts the connections of generations no longer accepting.
type heldConnections [numKinds]int

func (h heldConnections) total() int {
	n := 0
	for _, v := range h {
		n += v
	}
	return n
}

func (h heldConnections) movable() int {
	n := 0
	for k, v := range h {
		if connKind(k).movable() {
			n += v
		}
	}
	return n
}

func (h heldConnections) counts() ConnectionCounts {
	out := ConnectionCounts{}
	for k, v := range h {
		if v > 0 {
			out[kindNames[k]] = v
		}
	}
	return out
}

// ConnectionsCutAtBudget is how many connections Retire cut at the end of a drain budget since
// the proxy started.
func (p *Proxy) ConnectionsCutAtBudget() int { return int(p.cutAtBudget.Load()) }

// RetiringConnections is how many connections the proxy still serves for generations it no
// longer accepts for (draining or retiring), as of the last step of Drain or Retire.
func (p *Proxy) RetiringConnections() int { return int(p.held.Load()) }

// detach stops accepting and takes every generation out of service for a drain; nil when
// accepting resumed in between (nothing to drain).
func (p *Proxy) detach() []*generation {
	p.StopAccepting()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.accepting {
		return nil
	}
	p.gen = nil
	gens := make([]*generation, 0, len(p.gens))
	for g := range p.gens {
		gens = append(gens, g)
	}
	return gens
}

// step makes the connections of gens finish where they can (generation.drainStep), publishes
// how many are left by kind and returns that.
func (p *Proxy) step(gens []*generation) heldConnections {
	var held heldConnections
	for _, g := range gens {
		g.drainStep(p.opts.DrainIdleTimeout)
		g.mu.Lock()
		for c := range g.conns {
			held[c.kind.Load()]++
		}
		g.mu.Unlock()
	}
	p.publishHeld(held)
	return held
}

func (p *Proxy) publishHeld(held heldConnections) {
	for k, v := range held {
		p.metrics.retiring[k].Set(float64(v))
	}
	p.held.Store(int64(held.total()))
}

// endGenerations closes gens (and whatever connections they still have) and forgets them.
func (p *Proxy) endGenerations(gens []*generation) {
	p.mu.Lock()
	for _, g := range gens {
		delete(p.gens, g)
	}
	p.mu.Unlock()
	for _, g := range gens {
		g.close()
	}
	p.publishHeld(heldConnections{})
}

// cut closes every connection gens still have, logs which clients were cut (one line per
// connection up to MaxCutLogs, then a summary) and counts them by reason and kind. It returns
// how many it cut.
func (p *Proxy) cut(gens []*generation, reason string) int {
	now := time.Now()
	var conns []*trackedConn
	for _, g := range gens {
		g.mu.Lock()
		for c := range g.conns {
			conns = append(conns, c)
		}
		g.mu.Unlock()
	}
	var byKind heldConnections
	for i, c := range conns {
		kind := connKind(c.kind.Load())
		byKind[kind]++
		p.metrics.cut(reason, kind).Inc()
		if i < p.opts.MaxCutLogs {
			p.log.Info("Cutting a connection", "reason", reason, "remote", c.RemoteAddr().String(),
				"listener", c.listener, "direction", c.dir.String(), "kind", kind.String(),
				"age", now.Sub(c.accepted).Round(time.Millisecond).String())
		}
	}
	p.endGenerations(gens)
	if len(conns) > 0 {
		p.log.Info("Cut connections", "reason", reason, "connections", len(conns), "byKind", byKind.counts(),
			"notLoggedOneByOne", max(0, len(conns)-p.opts.MaxCutLogs))
	}
	return len(conns)
}

// Drain finishes the connections accepted so far, after stopping the accept loops (see
// StopAccepting), for a process that is about to exit: HTTP/1 responses carry "Connection:
// close" and HTTP/1 connections idle for DrainIdleTimeout close, HTTP/2 connections get a
// GOAWAY, in-flight requests complete, TCP streams run until they end. It returns nil when no
// connection is left; when ctx ends first (after DrainTimeout when ctx has no deadline), it cuts
// the rest (reason drain_timeout, see cut) and says how many. It drains the connections a Retire
// that was stopped left running too. ResumeAccepting may run during or after a Drain: new
// connections get new servers.
func (p *Proxy) Drain(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.opts.DrainTimeout)
		defer cancel()
	}
	gens := p.detach()
	if gens == nil {
		return nil
	}
	start := time.Now()
	ticker := time.NewTicker(drainTick)
	defer ticker.Stop()
	held := p.step(gens)
	p.log.Info("Draining connections", "connections", held.total(), "byKind", held.counts())
	for {
		if held.total() == 0 {
			p.endGenerations(gens)
			p.log.Info("Drained connections", "duration", time.Since(start).String())
			return nil
		}
		select {
		case <-ctx.Done():
			cut := p.cut(gens, CutReasonDrainTimeout)
			p.log.Info("Drain timed out: cut the remaining connections", "cut", cut, "duration", time.Since(start).String())
			return fmt.Errorf("drain ended with %d connections open, closed them: %w", cut, ctx.Err())
		case <-ticker.C:
		}
		held = p.step(gens)
	}
}

// retireTick is how often Retire looks at its connections once only those that cannot move are
// left (drainTick before).
const retireTick = 250 * time.Millisecond

// RetireOptions are the bounds of a Retire.
type RetireOptions struct {
	// DrainTimeout is how long Retire waits for the connections that end at a request boundary
	// (HTTP/1) before it calls Drained anyway; those keep running too, until their response ends
	// or the budget does.
	DrainTimeout time.Duration
	// MaxDuration is the drain budget: from the start of Retire, how long connections may keep
	// running before they are cut (reason drain_budget).
	MaxDuration time.Duration
	// Drained is called once (from Retire's goroutine) when only connections that cannot be
	// ended without loss are left (TCP, upgraded, HTTP/2 with streams in flight), or at
	// DrainTimeout, with what is left.
	Drained func(left ConnectionCounts)
}

// Retire is the old process's side of a takeover: it stops accepting and lets every connection
// it has run to its end, within the drain budget. HTTP/1 connections are closed at their next
// response boundary (or when idle) and HTTP/2 connections get a GOAWAY at once, so their
// clients move to the new process without loss; TCP streams, upgraded connections and HTTP/2
// streams in flight are served until they end. It returns nil once no connection is left. At
// the budget's end it cuts the rest, logs which clients were cut and counts them (see cut), and
// returns an error wrapping ErrDrainBudget. When ctx ends first (the new process died and this
// one resumes), it returns ctx's error and leaves the connections running: the proxy serves them
// on, and a later Drain or Retire takes them in.
func (p *Proxy) Retire(ctx context.Context, opts RetireOptions) error {
	drained := func(left ConnectionCounts) {
		if opts.Drained != nil {
			opts.Drained(left)
			opts.Drained = nil
		}
	}
	gens := p.detach()
	if gens == nil {
		drained(ConnectionCounts{})
		return nil
	}
	start := time.Now()
	budget := time.NewTimer(opts.MaxDuration)
	defer budget.Stop()
	drainBy := time.NewTimer(opts.DrainTimeout)
	defer drainBy.Stop()
	ticker := time.NewTicker(drainTick)
	defer ticker.Stop()
	held := p.step(gens)
	p.log.Info("Retiring: serving the connections accepted so far until they end or the drain budget does",
		"connections", held.total(), "byKind", held.counts(), "drainBudget", opts.MaxDuration.String())
	slow := false
	for {
		if held.total() == 0 {
			drained(ConnectionCounts{})
			p.endGenerations(gens)
			p.log.Info("Retired: every connection ended", "duration", time.Since(start).String())
			return nil
		}
		if held.movable() == 0 && opts.Drained != nil {
			drained(held.counts())
		}
		if opts.Drained == nil && !slow {
			slow = true
			ticker.Reset(retireTick)
		}
		select {
		case <-ctx.Done():
			p.publishHeld(heldConnections{})
			p.log.Info("Stopped retiring: the connections left are served on", "connections", held.total(),
				"byKind", held.counts())
			return ctx.Err()
		case <-drainBy.C:
			if opts.Drained != nil {
				p.log.Info("Drain timeout reached with HTTP/1 responses in flight; they keep running within the drain budget",
					"byKind", held.counts())
				drained(held.counts())
			}
		case <-budget.C:
			cut := p.cut(gens, CutReasonDrainBudget)
			p.cutAtBudget.Add(int64(cut))
			p.log.Info("Drain budget ended: cut the remaining connections", "cut", cut,
				"drainBudget", opts.MaxDuration.String())
			return fmt.Errorf("cut %d connections: %w", cut, ErrDrainBudget)
		case <-ticker.C:
		}
		held = p.step(gens)
	}
}
