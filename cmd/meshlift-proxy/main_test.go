package main

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/meshlift/meshlift/internal/outbound"
	"github.com/meshlift/meshlift/internal/proxy"
	"github.com/meshlift/meshlift/internal/proxyconfig"
)

func environment(overrides map[string]string) func(string) string {
	base := map[string]string{
		"MESHLIFT_SLOT":             "2",
		"MESHLIFT_POD_NAME":         "web-0",
		"MESHLIFT_POD_NAMESPACE":    "shop",
		"MESHLIFT_SERVICE_ACCOUNT":  "web",
		"MESHLIFT_TOKEN_FILE":       "/var/run/secrets/meshlift/token",
		"MESHLIFT_CA_FILE":          "/var/run/secrets/meshlift/ca.crt",
		"MESHLIFT_ANNOTATIONS_FILE": "/etc/meshlift/podinfo/annotations",
		"MESHLIFT_HANDOFF_SOCKET":   "/var/run/meshlift/handoff.sock",
	}
	for k, v := range overrides {
		base[k] = v
	}
	return func(name string) string { return base[name] }
}

var injectorArgs = []string{
	"--meshservice=web", "--control-plane=meshlift-control-plane.meshlift-system.svc:15012",
	"--inbound-port=15006", "--mtls-mode=STRICT", "--port=http:8080:HTTP",
}

func TestParseSettings(t *testing.T) {
	s, err := parseSettings(append(injectorArgs, "--drain-timeout=7s", "--load-balancing=least-request"), environment(nil))
	if err != nil {
		t.Fatal(err)
	}
	if s.slot != 2 || s.adminPort != 15001 {
		t.Errorf("slot %d admin port %d, want slot 2 on :15001", s.slot, s.adminPort)
	}
	if s.drainTimeout != 7*time.Second || s.loadBalancing != "least-request" || s.handoffTimeout != 30*time.Second {
		t.Errorf("flags not applied: %+v", s)
	}
	if s.drainMaxDuration != 10*time.Minute {
		t.Errorf("drain budget %s by default, want 10m", s.drainMaxDuration)
	}
	if budget, err := parseSettings(append(injectorArgs, "--drain-max-duration=90s"), environment(nil)); err != nil || budget.drainMaxDuration != 90*time.Second {
		t.Errorf("--drain-max-duration=90s gives %s, %v", budget.drainMaxDuration, err)
	}
	if s.appProbePort != 15020 || appProbePort(s.appProbePort) != 15020 {
		t.Errorf("app probe port %d by default, want 15020", s.appProbePort)
	}
	if off, err := parseSettings(injectorArgs, environment(map[string]string{"MESHLIFT_APP_PROBE_PORT": "0"})); err != nil || appProbePort(off.appProbePort) >= 0 {
		t.Errorf("MESHLIFT_APP_PROBE_PORT=0 gives port %d for the proxy, %v; want none (negative)", appProbePort(off.appProbePort), err)
	}
	if s.trustDomain != "cluster.local" || s.config.MeshService != "web" || s.config.InboundPort != 15006 {
		t.Errorf("defaults or injector arguments not applied: %+v", s)
	}

	single, err := parseSettings(injectorArgs, environment(map[string]string{"MESHLIFT_SLOT": "", "MESHLIFT_ANNOTATIONS_FILE": ""}))
	if err != nil {
		t.Fatal(err)
	}
	if single.slot != 0 || single.adminPort != 15000 {
		t.Errorf("a single proxy is slot %d on :%d, want slot 0 on :15000", single.slot, single.adminPort)
	}
}

func TestParseSettingsRefuses(t *testing.T) {
	for name, tc := range map[string]struct {
		args []string
		env  map[string]string
		want string
	}{
		"bad slot":            {env: map[string]string{"MESHLIFT_SLOT": "3"}, want: "MESHLIFT_SLOT must be 0, 1 or 2"},
		"no token":            {env: map[string]string{"MESHLIFT_TOKEN_FILE": ""}, want: "MESHLIFT_TOKEN_FILE is required"},
		"no annotations":      {env: map[string]string{"MESHLIFT_ANNOTATIONS_FILE": ""}, want: "MESHLIFT_ANNOTATIONS_FILE is required"},
		"bad admin port":      {env: map[string]string{"MESHLIFT_ADMIN_PORT": "http"}, want: "MESHLIFT_ADMIN_PORT must be a port number"},
		"bad app probe port":  {env: map[string]string{"MESHLIFT_APP_PROBE_PORT": "70000"}, want: "MESHLIFT_APP_PROBE_PORT must be a port number"},
		"unknown flag":        {args: []string{"--colour=blue"}, want: "proxy flags"},
		"stray argument":      {args: []string{"extra"}, want: "unexpected arguments"},
		"bad load balancing":  {args: []string{"--load-balancing=random"}, want: "--load-balancing must be"},
		"bad injector values": {args: []string{"--inbound-port=0"}, want: "--inbound-port"},
		"no drain budget":     {args: []string{"--drain-max-duration=0s"}, want: "--drain-max-duration"},
		"bad drain budget":    {args: []string{"--drain-max-duration=forever"}, want: "--drain-max-duration"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := parseSettings(append(append([]string{}, injectorArgs...), tc.args...), environment(tc.env))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestDrainBudgetComesFromThePodsAnnotationAtTheHandoff(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "annotations")
	o := &owner{s: settings{annotationsFile: file, drainMaxDuration: 10 * time.Minute}}
	for _, tc := range []struct {
		name, content string
		want          time.Duration
	}{
		{"no annotation: the flag", `meshlift.io/active-slot="2"` + "\n", 10 * time.Minute},
		{"the annotation overrides the flag", `meshlift.io/active-slot="2"` + "\n" + `meshlift.io/drain-max-duration="45m"` + "\n", 45 * time.Minute},
		{"an invalid annotation is ignored", `meshlift.io/drain-max-duration="soon"` + "\n", 10 * time.Minute},
		{"an unreadable file: the flag", "not an annotations file\n", 10 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(file, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if got := o.drainBudget(logr.Discard()); got != tc.want {
				t.Errorf("drainBudget() = %s, want %s", got, tc.want)
			}
		})
	}
}

// outboundTable is a table routing one ClusterIP:port to each cluster.
func outboundTable(t *testing.T, clusters ...string) *outbound.Table {
	t.Helper()
	var chains []outbound.Chain
	for i, c := range clusters {
		chains = append(chains, outbound.Chain{Route: outbound.Route{Cluster: c, Protocol: "HTTP"}, Port: 80,
			Addrs: []netip.Addr{netip.AddrFrom4([4]byte{10, 96, 0, byte(i + 1)})}})
	}
	listener, _, err := outbound.Build(chains)
	if err != nil {
		t.Fatal(err)
	}
	table, err := outbound.FromListener(listener)
	if err != nil {
		t.Fatal(err)
	}
	return table
}

func TestACapturingProxyServesOnceItHasTheRoutesAndTheirEndpoints(t *testing.T) {
	p, err := proxy.New(proxyconfig.Config{MeshService: "web", InboundPort: 15006, MTLSMode: "STRICT"},
		proxy.Options{Namespace: "shop", CaptureOutbound: true, AppProbePort: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	configured := make(chan struct{})
	h := &xdsHandler{proxy: p, configured: configured, synced: true, certified: true, needRoutes: true,
		subscribed: map[string]bool{}, log: logr.Discard()}
	isConfigured := func() bool {
		select {
		case <-configured:
			return true
		default:
			return false
		}
	}
	h.checkConfigured()
	if isConfigured() {
		t.Fatal("configured before the outbound routes came")
	}
	if err := h.OutboundRoutes(outboundTable(t, "http.api.shop")); err != nil {
		t.Fatal(err)
	}
	if isConfigured() {
		t.Fatal("configured before the endpoints of the routes' cluster came")
	}
	h.EndpointsSynced()
	if !isConfigured() {
		t.Fatal("not configured with the routes and their endpoints")
	}

	// Routes without clusters: nothing to wait for.
	configured = make(chan struct{})
	h = &xdsHandler{proxy: p, configured: configured, synced: true, certified: true, needRoutes: true,
		subscribed: map[string]bool{}, log: logr.Discard()}
	if err := h.OutboundRoutes(outboundTable(t)); err != nil {
		t.Fatal(err)
	}
	if !isConfigured() {
		t.Fatal("empty routes left the proxy waiting")
	}
}
