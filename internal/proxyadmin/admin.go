// Package proxyadmin is meshlift-proxy's admin endpoint, one per slot (slot 1 :15000, slot 2
// :15001; a single proxy :15000): /ready (the container's readiness probe), /healthz and /stats
// (Prometheus text). /ready means "healthy in my role" (ARCHITECTURE.md section 6), so "the new
// slot's container became ready" means "the takeover happened" and the pod stays Ready.
//
// The port listens on every address of the pod because the kubelet probes it at the pod IP, but
// only /ready and /healthz answer there: /stats and every other path answer 403 unless the peer
// is on the pod's loopback (the proxy's own containers, or kubectl port-forward, which connects
// from inside the pod). What a proxy serves, to whom and how it fails is not for other pods.
package proxyadmin

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Role is what the process does with the listeners.
type Role string

// Roles, in the order a process goes through them.
const (
	// RoleStarting: no listeners yet (binding, or connecting to the handoff socket).
	RoleStarting Role = "starting"
	// RoleWaiting: holds the listeners from a handoff but has not sent TAKEOVER yet.
	RoleWaiting Role = "waiting"
	// RoleActive: accepts on the listeners.
	RoleActive Role = "active"
	// RoleDraining: handed the listeners over and finishes in-flight work.
	RoleDraining Role = "draining"
	// RoleRetiring: handed off and drained what could move; still serves connections that cannot
	// be ended without loss (TCP streams, upgraded connections, HTTP/2 streams in flight) until
	// they end or the drain budget does. Resumes accepting if the new process dies.
	RoleRetiring Role = "retiring"
	// RoleIdle: handed off and drained; resumes accepting if the new process dies.
	RoleIdle Role = "idle"
)

var roles = []Role{RoleStarting, RoleWaiting, RoleActive, RoleDraining, RoleRetiring, RoleIdle}

// State is the admin view of one proxy process.
type State struct {
	mu             sync.Mutex
	role           Role
	hasCertificate bool
	// held counts the connections a draining or retiring process still serves (nil: unknown).
	held func() int
	// cut counts the connections cut at the end of a drain budget (nil: unknown).
	cut func() int

	registry  *prometheus.Registry
	roleGauge *prometheus.GaugeVec
	ready     prometheus.Gauge
	refused   prometheus.Counter
}

// NewState returns the state of a starting process with its metrics registered in a registry of
// its own; the data path adds its metrics with Register.
func NewState(version string, slot int) *State {
	s := &State{role: RoleStarting, registry: prometheus.NewRegistry()}
	s.roleGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "meshlift_proxy_role", Help: "1 for the role the proxy is in."}, []string{"role"})
	s.ready = prometheus.NewGauge(prometheus.GaugeOpts{Name: "meshlift_proxy_ready", Help: "1 when /ready answers 200."})
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "meshlift_proxy_info", Help: "The proxy's version and slot."}, []string{"version", "slot"})
	info.WithLabelValues(version, fmt.Sprint(slot)).Set(1)
	s.refused = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "meshlift_proxy_admin_refused_total",
		Help: "Admin requests refused because they came from outside the pod's loopback for a path other than /ready and /healthz.",
	})
	s.registry.MustRegister(s.roleGauge, s.ready, info, s.refused)
	s.update()
	return s
}

// Register adds collectors (request counters, handshake failures, ...) to /stats.
func (s *State) Register(collectors ...prometheus.Collector) error {
	for _, c := range collectors {
		if err := s.registry.Register(c); err != nil {
			return fmt.Errorf("failed to register a proxy metric: %w", err)
		}
	}
	return nil
}

// SetRole records a role change.
func (s *State) SetRole(role Role) {
	s.mu.Lock()
	s.role = role
	s.mu.Unlock()
	s.update()
}

// Role is the process's current role.
func (s *State) Role() Role {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.role
}

// SetHeldConnections gives the count of connections a draining or retiring process still
// serves, for /ready's body ("retiring: 120 connections").
func (s *State) SetHeldConnections(held func() int) {
	s.mu.Lock()
	s.held = held
	s.mu.Unlock()
}

// SetCutConnections gives the count of connections cut at the end of a drain budget, for the
// body of /ready of an idle process ("idle; cut 120 connections at the drain budget").
func (s *State) SetCutConnections(cut func() int) {
	s.mu.Lock()
	s.cut = cut
	s.mu.Unlock()
}

// SetCertificate records whether the proxy holds a workload certificate.
func (s *State) SetCertificate(has bool) {
	s.mu.Lock()
	s.hasCertificate = has
	s.mu.Unlock()
	s.update()
}

// Ready says whether the process is healthy in its role, and why not.
func (s *State) Ready() (bool, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.role {
	case RoleActive:
		if !s.hasCertificate {
			return false, "active but without a workload certificate yet"
		}
		return true, "active"
	case RoleDraining, RoleRetiring:
		// The takeover happened: this slot did its part.
		if s.held == nil {
			return true, string(s.role)
		}
		return true, fmt.Sprintf("%s: %d connections", s.role, s.held())
	case RoleIdle:
		if s.cut != nil {
			if n := s.cut(); n > 0 {
				return true, fmt.Sprintf("%s; cut %d connections at the drain budget", s.role, n)
			}
		}
		return true, string(s.role)
	case RoleWaiting:
		return false, "waiting to take over the listeners"
	default:
		return false, "starting"
	}
}

func (s *State) update() {
	s.mu.Lock()
	role := s.role
	s.mu.Unlock()
	for _, r := range roles {
		value := 0.0
		if r == role {
			value = 1
		}
		s.roleGauge.WithLabelValues(string(r)).Set(value)
	}
	if ready, _ := s.Ready(); ready {
		s.ready.Set(1)
	} else {
		s.ready.Set(0)
	}
}

// MayServe decides whether a request for path from remote may be answered: /ready and /healthz
// (the kubelet's probes, from the node) for anyone, everything else only for a peer on the
// loopback. The path is compared exactly, as the request carries it: "/ready/../stats" is not
// /ready, and is refused to a remote peer before any redirect could reveal anything.
func MayServe(path string, remote netip.Addr) bool {
	if path == "/ready" || path == "/healthz" {
		return true
	}
	return remote.Unmap().IsLoopback()
}

// remoteAddr is the peer of a request; the zero Addr (never loopback) when it cannot be read.
func remoteAddr(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return addr
}

// Handler serves /ready and /healthz to anyone, /stats to the pod's loopback only (MayServe).
func (s *State) Handler() http.Handler {
	mux := s.routes()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !MayServe(r.URL.Path, remoteAddr(r)) {
			s.refused.Inc()
			http.Error(w, "meshlift-proxy: only /ready and /healthz are served outside the pod; use localhost (kubectl port-forward)", http.StatusForbidden)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func (s *State) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		ready, why := s.Ready()
		if !ready {
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready:", why)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("GET /stats", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}))
	return mux
}

// Report is what a proxy's /ready says about it, as ParseReady reads it.
type Report struct {
	// Ready is whether /ready answered 200.
	Ready bool
	// Role is the role the body names ("" when a body that is not ready names none).
	Role Role
	// Connections is how many connections a draining or retiring process still serves (-1
	// when the body does not say).
	Connections int
	// Cut is how many connections an idle process cut at the end of its drain budget.
	Cut int
}

// MaxReadyBody bounds what ParseReady reads: /ready's body is one short line.
const MaxReadyBody = 1024

// ParseReady reads the answer of /ready: its status code and body, as Handler writes them
// ("ready: retiring: 12 connections", "ready: idle; cut 3 connections at the drain budget",
// "not ready: starting"). The body comes from the network (the rollout reads it from the pod's
// IP), so anything it does not recognise is an error, never a guess.
func ParseReady(status int, body string) (Report, error) {
	if len(body) > MaxReadyBody {
		return Report{}, fmt.Errorf("the /ready body is longer than %d bytes", MaxReadyBody)
	}
	line := strings.TrimSuffix(body, "\n")
	switch status {
	case http.StatusServiceUnavailable:
		if !strings.HasPrefix(line, "not ready: ") {
			return Report{}, fmt.Errorf("unexpected /ready body %q", truncate(line))
		}
		return Report{Connections: -1}, nil
	case http.StatusOK:
	default:
		return Report{}, fmt.Errorf("/ready answered %d", status)
	}
	rest, ok := strings.CutPrefix(line, "ready: ")
	if !ok {
		return Report{}, fmt.Errorf("unexpected /ready body %q", truncate(line))
	}
	report := Report{Ready: true, Connections: -1}
	role, detail, hasDetail := strings.Cut(rest, ": ")
	if !hasDetail {
		role, detail, hasDetail = strings.Cut(rest, "; ")
	}
	report.Role = Role(role)
	if !slices.Contains(roles, report.Role) {
		return Report{}, fmt.Errorf("unknown role in /ready body %q", truncate(line))
	}
	if !hasDetail {
		if report.Role == RoleIdle {
			report.Connections = 0
		}
		return report, nil
	}
	var n int
	switch report.Role {
	case RoleDraining, RoleRetiring:
		if _, err := fmt.Sscanf(detail, "%d connections", &n); err != nil || n < 0 || detail != fmt.Sprintf("%d connections", n) {
			return Report{}, fmt.Errorf("unexpected /ready body %q", truncate(line))
		}
		report.Connections = n
	case RoleIdle:
		if _, err := fmt.Sscanf(detail, "cut %d connections at the drain budget", &n); err != nil || n < 0 ||
			detail != fmt.Sprintf("cut %d connections at the drain budget", n) {
			return Report{}, fmt.Errorf("unexpected /ready body %q", truncate(line))
		}
		report.Connections, report.Cut = 0, n
	default:
		return Report{}, fmt.Errorf("unexpected /ready body %q", truncate(line))
	}
	return report, nil
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
