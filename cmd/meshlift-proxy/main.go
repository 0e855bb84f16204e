// Command meshlift-proxy is Meshlift's reference sidecar (ARCHITECTURE.md section 6): it
// terminates mTLS inbound, originates it outbound, gets its certificate and its upstreams'
// endpoints from the operator over one SDS+EDS stream, and hands its listening sockets to the
// next version without closing them (internal/handoff), so a hot upgrade refuses no connection
// and fails no request.
//
// Its arguments are the ones the injector renders (internal/sidecar.ProxyArgs, parsed by
// internal/proxyconfig) followed by the SidecarVersion's spec.args, which may set the flags below.
// Everything about the pod comes from the environment the injector sets (MESHLIFT_*).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/meshlift/meshlift/internal/buildinfo"
	"github.com/meshlift/meshlift/internal/handoff"
	"github.com/meshlift/meshlift/internal/identity"
	"github.com/meshlift/meshlift/internal/outbound"
	"github.com/meshlift/meshlift/internal/proxy"
	"github.com/meshlift/meshlift/internal/proxyadmin"
	"github.com/meshlift/meshlift/internal/proxyconfig"
	"github.com/meshlift/meshlift/internal/xdsclient"
)

// settings is everything the process is told, from arguments and environment.
type settings struct {
	config          proxyconfig.Config
	slot            int
	podName         string
	namespace       string
	serviceAccount  string
	trustDomain     string
	tokenFile       string
	caFile          string
	annotationsFile string
	handoffSocket   string
	adminPort       int
	// appProbePort is the app probe listener's port (proxyconfig.AppProbePort; 0: none).
	appProbePort int
	serverName   string

	drainTimeout time.Duration
	// drainMaxDuration is the drain budget after a takeover (the pod's
	// meshlift.io/drain-max-duration annotation overrides it at the moment of the handoff).
	drainMaxDuration time.Duration
	handoffTimeout   time.Duration
	loadBalancing    string
	logLevel         string
	// takeoverDelay holds the new process after it received the listeners and its certificate,
	// before it accepts on them and sends TAKEOVER. Only for tests that kill a process at that
	// moment (MESHLIFT_DEBUG_TAKEOVER_DELAY).
	takeoverDelay time.Duration
}

func main() {
	s, err := parseSettings(os.Args[1:], os.Getenv)
	if err != nil {
		fmt.Fprintf(os.Stderr, "meshlift-proxy: %v\n", err)
		os.Exit(2)
	}
	log := newLogger(s.logLevel).WithValues("version", buildinfo.Version, "slot", s.slot)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, s, log); err != nil {
		log.Error(err, "Proxy failed")
		os.Exit(1)
	}
}

func newLogger(level string) logr.Logger {
	cfg := zap.NewProductionConfig()
	cfg.Sampling = nil
	if l, err := zapcore.ParseLevel(level); err == nil {
		cfg.Level = zap.NewAtomicLevelAt(l)
	}
	z, err := cfg.Build()
	if err != nil {
		panic(err)
	}
	return zapr.NewLogger(z)
}

func parseSettings(args []string, getenv func(string) string) (settings, error) {
	cfg, err := proxyconfig.Parse(args)
	if err != nil {
		return settings{}, err
	}
	s := settings{
		config:          cfg,
		podName:         getenv("MESHLIFT_POD_NAME"),
		namespace:       getenv("MESHLIFT_POD_NAMESPACE"),
		serviceAccount:  getenv("MESHLIFT_SERVICE_ACCOUNT"),
		trustDomain:     getenv("MESHLIFT_TRUST_DOMAIN"),
		tokenFile:       getenv("MESHLIFT_TOKEN_FILE"),
		caFile:          getenv("MESHLIFT_CA_FILE"),
		annotationsFile: getenv("MESHLIFT_ANNOTATIONS_FILE"),
		handoffSocket:   getenv("MESHLIFT_HANDOFF_SOCKET"),
	}
	if v := getenv("MESHLIFT_SLOT"); v != "" {
		if s.slot, err = strconv.Atoi(v); err != nil || s.slot < 0 || s.slot > 2 {
			return settings{}, fmt.Errorf("MESHLIFT_SLOT must be 0, 1 or 2, not %q", v)
		}
	}
	s.adminPort = 15000 + max(s.slot, 1) - 1 // slot 1 :15000, slot 2 :15001, a single proxy :15000
	if v := getenv("MESHLIFT_ADMIN_PORT"); v != "" {
		if s.adminPort, err = strconv.Atoi(v); err != nil || s.adminPort < 0 || s.adminPort > 65535 {
			return settings{}, fmt.Errorf("MESHLIFT_ADMIN_PORT must be a port number, not %q", v)
		}
	}
	s.appProbePort = proxyconfig.AppProbePort
	if v := getenv("MESHLIFT_APP_PROBE_PORT"); v != "" {
		if s.appProbePort, err = strconv.Atoi(v); err != nil || s.appProbePort < 0 || s.appProbePort > 65535 {
			return settings{}, fmt.Errorf("MESHLIFT_APP_PROBE_PORT must be a port number (0: no app probe listener), not %q", v)
		}
	}
	if v := getenv("MESHLIFT_DEBUG_TAKEOVER_DELAY"); v != "" {
		if s.takeoverDelay, err = time.ParseDuration(v); err != nil {
			return settings{}, fmt.Errorf("MESHLIFT_DEBUG_TAKEOVER_DELAY: %w", err)
		}
	}
	if s.trustDomain == "" {
		s.trustDomain = identity.DefaultTrustDomain
	}
	if s.serviceAccount == "" {
		s.serviceAccount = "default"
	}
	for name, v := range map[string]string{
		"MESHLIFT_POD_NAME": s.podName, "MESHLIFT_POD_NAMESPACE": s.namespace, "MESHLIFT_TOKEN_FILE": s.tokenFile,
		"MESHLIFT_CA_FILE": s.caFile, "MESHLIFT_HANDOFF_SOCKET": s.handoffSocket,
	} {
		if v == "" {
			return settings{}, fmt.Errorf("%s is required (the injector sets it)", name)
		}
	}
	if s.slot > 0 && s.annotationsFile == "" {
		return settings{}, errors.New("MESHLIFT_ANNOTATIONS_FILE is required in a hot-upgrade slot (the injector sets it)")
	}
	// Flags the SidecarVersion's spec.args may set.
	fs := flag.NewFlagSet("meshlift-proxy", flag.ContinueOnError)
	fs.DurationVar(&s.drainTimeout, "drain-timeout", 20*time.Second, "How long in-flight work may take after a handoff or SIGTERM.")
	var drainMaxDuration string
	fs.StringVar(&drainMaxDuration, "drain-max-duration", proxyconfig.DefaultDrainMaxDuration.String(),
		"Drain budget: how long, after a takeover, connections that cannot move without loss (TCP, upgraded, HTTP/2 streams in flight) keep being served before they are cut; the pod's "+
			proxyconfig.DrainMaxDurationAnnotation+" annotation overrides it.")
	fs.DurationVar(&s.handoffTimeout, "handoff-timeout", 30*time.Second, "How long a new process waits for its certificate and endpoints before giving up a takeover.")
	fs.StringVar(&s.loadBalancing, "load-balancing", proxy.RoundRobin, "round-robin or least-request.")
	fs.StringVar(&s.logLevel, "log-level", "info", "debug, info, warn or error.")
	fs.StringVar(&s.serverName, "control-plane-server-name", "", "Name in the control plane's certificate (the host of --control-plane by default).")
	if err := fs.Parse(cfg.Extra); err != nil {
		return settings{}, fmt.Errorf("proxy flags: %w", err)
	}
	if s.drainMaxDuration, err = proxyconfig.ParseDrainMaxDuration(drainMaxDuration); err != nil {
		return settings{}, fmt.Errorf("--drain-max-duration: %w", err)
	}
	if fs.NArg() > 0 {
		return settings{}, fmt.Errorf("unexpected arguments %v", fs.Args())
	}
	if s.loadBalancing != proxy.RoundRobin && s.loadBalancing != proxy.LeastRequest {
		return settings{}, fmt.Errorf("--load-balancing must be %s or %s, not %q", proxy.RoundRobin, proxy.LeastRequest, s.loadBalancing)
	}
	return s, nil
}

// run wires the pieces and owns the listeners until ctx ends.
func run(ctx context.Context, s settings, log logr.Logger) error {
	state := proxyadmin.NewState(buildinfo.Version, s.slot)
	captureOutbound, err := capturesOutbound(s.annotationsFile)
	if err != nil {
		return err
	}
	p, err := proxy.New(s.config, proxy.Options{
		Namespace: s.namespace, TrustDomain: s.trustDomain, Logger: log.WithName("proxy"),
		DrainTimeout: s.drainTimeout, LoadBalancing: s.loadBalancing,
		AppProbePort: appProbePort(s.appProbePort), AnnotationsFile: s.annotationsFile,
		CaptureOutbound: captureOutbound,
	})
	if err != nil {
		return fmt.Errorf("configuring the proxy: %w", err)
	}
	defer func() { _ = p.Close() }()
	if err := state.Register(p.Collectors()...); err != nil {
		return fmt.Errorf("registering proxy metrics: %w", err)
	}

	clusters := make([]string, 0, len(s.config.Upstreams))
	for _, u := range s.config.Upstreams {
		clusters = append(clusters, u.SNI())
	}
	configured := make(chan struct{})
	handler := &xdsHandler{proxy: p, state: state, configured: configured, synced: len(clusters) == 0, log: log,
		needRoutes: captureOutbound, subscribed: map[string]bool{}}
	for _, name := range clusters {
		handler.subscribed[name] = true
	}
	xdsOpts := xdsclient.Options{
		Address: s.config.ControlPlane, ServerName: s.serverName, CAFile: s.caFile, TokenFile: s.tokenFile,
		PodName: s.podName, Namespace: s.namespace, MeshService: s.config.MeshService, Version: buildinfo.Version, Slot: s.slot,
		SPIFFEID: identity.SPIFFEID(s.trustDomain, s.namespace, s.serviceAccount), Clusters: clusters,
		Logger: log.WithName("xds"),
	}
	if captureOutbound {
		log.Info("Capturing outbound connections: asking the control plane for the outbound routes")
		xdsOpts.OnOutboundRoutes = handler.OutboundRoutes
	}
	xds, err := xdsclient.New(xdsOpts)
	if err != nil {
		return err
	}
	if err := state.Register(xds.Collectors()...); err != nil {
		return fmt.Errorf("registering control-plane metrics: %w", err)
	}
	xdsCtx, stopXDS := context.WithCancel(context.Background())
	defer stopXDS()
	go func() { _ = xds.Run(xdsCtx, handler) }()

	if s.adminPort > 0 {
		admin := &http.Server{Addr: ":" + strconv.Itoa(s.adminPort), Handler: state.Handler(), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := admin.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error(err, "Admin endpoint failed", "port", s.adminPort)
			}
		}()
		defer func() { _ = admin.Close() }()
	}

	state.SetHeldConnections(p.RetiringConnections)
	state.SetCutConnections(p.ConnectionsCutAtBudget)
	o := &owner{s: s, proxy: p, state: state, configured: configured, log: log, ownUID: handoff.OwnUID()}
	return o.run(ctx)
}

// capturesOutbound reads from the pod's annotations whether its outbound connections are
// captured (proxyconfig.CapturesOutbound). No annotations file: not captured.
func capturesOutbound(file string) (bool, error) {
	if file == "" {
		return false, nil
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return false, fmt.Errorf("reading the pod's annotations for its capture mode: %w", err)
	}
	annotations, err := proxyconfig.ParseAnnotations(data)
	if err != nil {
		return false, fmt.Errorf("reading the pod's annotations for its capture mode: %w", err)
	}
	return proxyconfig.CapturesOutbound(annotations), nil
}

// appProbePort maps the setting (0: none) to proxy.Options.AppProbePort (negative: none).
func appProbePort(port int) int {
	if port == 0 {
		return -1
	}
	return port
}

// xdsHandler applies the control plane's resources to the data path. configured closes once
// the proxy can serve: it has a certificate and, when it has upstreams, the endpoints of a whole
// EDS response (so a new process never answers "no endpoints" for an upstream that has some).
type xdsHandler struct {
	proxy      *proxy.Proxy
	state      *proxyadmin.State
	configured chan struct{}
	certified  bool
	synced     bool
	done       bool
	log        logr.Logger
	// needRoutes: the proxy captures outbound connections, and serves once it has the outbound
	// routes and the endpoints of every cluster they name (subscribed: the clusters the client
	// subscribed to so far).
	needRoutes bool
	routed     bool
	subscribed map[string]bool
}

// OutboundRoutes applies the outbound routes. A table that names a cluster not subscribed to
// yet makes the proxy wait for the next whole EDS response (which the client only reports
// once it holds that cluster) before it first serves.
func (h *xdsHandler) OutboundRoutes(table *outbound.Table) error {
	h.proxy.SetOutboundRoutes(table)
	for _, name := range table.Clusters() {
		if !h.subscribed[name] {
			h.subscribed[name] = true
			h.synced = false
		}
	}
	if !h.routed {
		h.routed = true
		h.log.Info("Applied the outbound routes", "destinations", table.Len(), "clusters", len(table.Clusters()))
	}
	if len(h.subscribed) == 0 {
		h.synced = true // nothing to wait for: no upstream, no route
	}
	h.checkConfigured()
	return nil
}

func (h *xdsHandler) Certificate(c *xdsclient.Certificate) error {
	if err := h.proxy.SetCertificateKey(c.ChainPEM, c.Key); err != nil {
		return err
	}
	h.log.Info("Applied a certificate", "notAfter", c.Leaf.NotAfter, "serial", c.Leaf.SerialNumber.String())
	if !h.certified {
		h.certified = true
		h.state.SetCertificate(true)
	}
	h.checkConfigured()
	return nil
}

// EndpointsSynced is called after each EDS response was applied whole.
func (h *xdsHandler) EndpointsSynced() {
	h.synced = true
	h.checkConfigured()
}

func (h *xdsHandler) checkConfigured() {
	if !h.done && h.certified && h.synced && (h.routed || !h.needRoutes) {
		h.done = true
		close(h.configured)
	}
}

func (h *xdsHandler) TrustBundle(bundle []byte) error {
	if err := h.proxy.SetTrustBundle(bundle); err != nil {
		return err
	}
	h.log.Info("Applied a trust bundle", "fingerprint", identity.BundleFingerprint(bundle))
	return nil
}

func (h *xdsHandler) Endpoints(a xdsclient.Assignment) error {
	eps := make([]proxy.Endpoint, len(a.Endpoints))
	for i, e := range a.Endpoints {
		eps[i] = proxy.Endpoint{Address: e.Address, Identity: e.Identity}
	}
	if err := h.proxy.SetEndpoints(a.Cluster, eps); err != nil {
		return err
	}
	h.log.V(1).Info("Applied endpoints", "cluster", a.Cluster, "endpoints", len(eps))
	return nil
}
