package proxy

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/meshlift/meshlift/internal/proxyconfig"
)

// probeFixture is a proxy with only its app probe listener, on 127.0.0.1, reading the original
// probes from an annotations file the test writes as the kubelet would.
type probeFixture struct {
	t     *testing.T
	file  string
	url   string
	proxy *Proxy
}

func newProbeFixture(t *testing.T) *probeFixture {
	t.Helper()
	file := filepath.Join(t.TempDir(), "annotations")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := proxyconfig.Config{MeshService: serverService, ControlPlane: "control-plane:15012", InboundPort: 15006, MTLSMode: "STRICT"}
	p := newFixture(t).newProxy(cfg, Options{AnnotationsFile: file}, serverService)
	l, _ := listenLocal(t)
	if err := p.Start(map[string]net.Listener{AppProbesListener: l}); err != nil {
		t.Fatal(err)
	}
	return &probeFixture{t: t, file: file, url: "http://" + l.Addr().String(), proxy: p}
}

// setProbes writes the original probes annotation (with another annotation around it) the way
// the kubelet's atomic writer does.
func (f *probeFixture) setProbes(probes proxyconfig.OriginalProbes) {
	f.t.Helper()
	value, err := probes.Encode()
	if err != nil {
		f.t.Fatal(err)
	}
	f.setRaw(value)
}

func (f *probeFixture) setRaw(value string) {
	f.t.Helper()
	data := fmt.Sprintf("meshlift.io/active-slot=%q\n%s=%s\n", "1", proxyconfig.OriginalProbesAnnotation, strconv.Quote(value))
	tmp := f.file + ".tmp"
	if err := os.WriteFile(tmp, []byte(data), 0o600); err != nil {
		f.t.Fatal(err)
	}
	if err := os.Rename(tmp, f.file); err != nil {
		f.t.Fatal(err)
	}
}

// get asks the probe listener for path, as the kubelet does (no keep-alive).
func (f *probeFixture) get(path string) (int, string) {
	f.t.Helper()
	req, err := http.NewRequest(http.MethodGet, f.url+path, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("User-Agent", "kube-probe/1.33")
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	res, err := client.Do(req)
	if err != nil {
		f.t.Fatalf("GET %s: %v", path, err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(body)
}

// probeApp is an HTTP app on 127.0.0.1 whose paths answer with a status, and that records the
// last request it got.
type probeApp struct {
	mu   sync.Mutex
	last *http.Request
}

func (a *probeApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.last = r
	a.mu.Unlock()
	switch r.URL.Path {
	case "/ok":
		_, _ = io.WriteString(w, "fine")
	case "/redirect":
		http.Redirect(w, r, "http://elsewhere.example/", http.StatusFound)
	case "/fail":
		http.Error(w, "broken", http.StatusInternalServerError)
	case "/not-found":
		http.NotFound(w, r)
	case "/hang":
		<-r.Context().Done()
	}
}

func (a *probeApp) lastRequest() *http.Request {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last
}

func httpProbe(port int, path string) *proxyconfig.AppProbe {
	return &proxyconfig.AppProbe{HTTPGet: &proxyconfig.HTTPGetProbe{Port: port, Path: path}}
}

func TestAppProbesRunTheOriginalProbes(t *testing.T) {
	app := &probeApp{}
	appPort := startHTTPApp(t, app, false)
	tlsApp := httptest.NewTLSServer(app) // self-signed: the kubelet does not verify probes
	t.Cleanup(tlsApp.Close)
	tlsPort := tlsApp.Listener.Addr().(*net.TCPAddr).Port
	tcpPort := startTCPApp(t, "")
	closed, closedPort := listenLocal(t)
	_ = closed.Close()

	f := newProbeFixture(t)
	f.setProbes(proxyconfig.OriginalProbes{
		"web": {
			Liveness:  httpProbe(appPort, "/ok"),
			Readiness: httpProbe(appPort, "/fail"),
			Startup:   &proxyconfig.AppProbe{TCPSocket: &proxyconfig.TCPSocketProbe{Port: tcpPort}},
		},
		"redirects": {Liveness: httpProbe(appPort, "/redirect"), Readiness: httpProbe(appPort, "/not-found")},
		"secure":    {Liveness: &proxyconfig.AppProbe{HTTPGet: &proxyconfig.HTTPGetProbe{Port: tlsPort, Path: "/ok", Scheme: "HTTPS"}}},
		"gone": {
			Liveness:  &proxyconfig.AppProbe{TCPSocket: &proxyconfig.TCPSocketProbe{Port: closedPort}},
			Readiness: httpProbe(closedPort, "/ok"),
		},
		"slow":  {Liveness: httpProbe(appPort, "/hang")},
		"empty": {},
	})

	tests := []struct {
		name       string
		path       string
		wantStatus int
		wantBody   string
	}{
		{"an httpGet probe the app answers with 200 succeeds", proxyconfig.AppProbePath("web", "liveness"), 200, "ok"},
		{"an httpGet probe the app answers with 500 fails", proxyconfig.AppProbePath("web", "readiness"), 503, "answered 500"},
		{"an httpGet probe the app answers with 404 fails", proxyconfig.AppProbePath("redirects", "readiness"), 503, "answered 404"},
		{"a redirect is a success and is not followed", proxyconfig.AppProbePath("redirects", "liveness"), 200, "ok"},
		{"an HTTPS probe does not verify the app's certificate", proxyconfig.AppProbePath("secure", "liveness"), 200, "ok"},
		{"a tcpSocket probe to a listening port succeeds", proxyconfig.AppProbePath("web", "startup"), 200, "ok"},
		{"a tcpSocket probe to a closed port fails", proxyconfig.AppProbePath("gone", "liveness"), 503, "connection refused"},
		{"an httpGet probe to a closed port fails", proxyconfig.AppProbePath("gone", "readiness"), 503, "connection refused"},
		{"an httpGet probe the app does not answer within the timeout fails", proxyconfig.AppProbePath("slow", "liveness"), 503, "timed out"},
		{"a container without that probe is not found", proxyconfig.AppProbePath("empty", "liveness"), 404, "no liveness probe for container empty"},
		{"an unknown container is not found", proxyconfig.AppProbePath("other", "readiness"), 404, "no readiness probe for container other"},
		{"an unknown kind is not found", "/app-health/web/ready", 404, "not an app probe path"},
		{"another path is not found", "/stats", 404, "not an app probe path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := f.get(tt.path)
			if status != tt.wantStatus || !strings.Contains(body, tt.wantBody) {
				t.Errorf("GET %s = %d %q, want %d with %q", tt.path, status, body, tt.wantStatus, tt.wantBody)
			}
		})
	}
}

func TestAppProbesSendTheProbesHostAndHeaders(t *testing.T) {
	app := &probeApp{}
	appPort := startHTTPApp(t, app, false)
	f := newProbeFixture(t)
	f.setProbes(proxyconfig.OriginalProbes{"web": {Liveness: &proxyconfig.AppProbe{HTTPGet: &proxyconfig.HTTPGetProbe{
		Port: appPort, Path: "/ok?deep=1", Host: "web.example",
		Headers: []proxyconfig.HTTPHeader{{Name: "X-Probe", Value: "a"}, {Name: "X-Probe", Value: "b"}, {Name: "Accept", Value: "text/plain"}},
	}}}})
	if status, body := f.get(proxyconfig.AppProbePath("web", "liveness")); status != http.StatusOK {
		t.Fatalf("probe = %d %q, want 200", status, body)
	}
	r := app.lastRequest()
	if r == nil {
		t.Fatal("the app got no request")
	}
	checks := []struct{ what, got, want string }{
		{"method", r.Method, http.MethodGet},
		{"path", r.URL.RequestURI(), "/ok?deep=1"},
		{"Host", r.Host, "web.example"},
		{"X-Probe", strings.Join(r.Header.Values("X-Probe"), ","), "a,b"},
		{"Accept", strings.Join(r.Header.Values("Accept"), ","), "text/plain"},
		{"User-Agent (the kubelet's)", r.Header.Get("User-Agent"), "kube-probe/1.33"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("the app got %s %q, want %q", c.what, c.got, c.want)
		}
	}

	// A Host among the headers is the Host header too, as for the kubelet.
	f.setProbes(proxyconfig.OriginalProbes{"web": {Liveness: &proxyconfig.AppProbe{HTTPGet: &proxyconfig.HTTPGetProbe{
		Port: appPort, Path: "/ok", Headers: []proxyconfig.HTTPHeader{{Name: "host", Value: "other.example"}},
	}}}})
	if status, body := f.get(proxyconfig.AppProbePath("web", "liveness")); status != http.StatusOK {
		t.Fatalf("probe = %d %q, want 200", status, body)
	}
	if got := app.lastRequest().Host; got != "other.example" {
		t.Errorf("the app got Host %q, want other.example", got)
	}
}

func TestAppProbesReadTheAnnotationsFileAtEachRequest(t *testing.T) {
	app := &probeApp{}
	appPort := startHTTPApp(t, app, false)
	f := newProbeFixture(t)
	path := proxyconfig.AppProbePath("web", "readiness")

	if status, _ := f.get(path); status != http.StatusNotFound {
		t.Errorf("before the annotation exists: %d, want 404", status)
	}
	f.setProbes(proxyconfig.OriginalProbes{"web": {Readiness: httpProbe(appPort, "/fail")}})
	if status, _ := f.get(path); status != http.StatusServiceUnavailable {
		t.Errorf("with a probe the app fails: %d, want 503", status)
	}
	f.setProbes(proxyconfig.OriginalProbes{"web": {Readiness: httpProbe(appPort, "/ok")}})
	if status, _ := f.get(path); status != http.StatusOK {
		t.Errorf("after the annotation changed to a probe the app passes: %d, want 200", status)
	}
	f.setRaw(`{"web":{"readiness":{"exec":{}}}}`)
	if status, body := f.get(path); status != http.StatusInternalServerError || !strings.Contains(body, proxyconfig.OriginalProbesAnnotation) {
		t.Errorf("with an annotation that is not the injector's: %d %q, want 500 naming the annotation", status, body)
	}
	if err := os.Remove(f.file); err != nil {
		t.Fatal(err)
	}
	if status, body := f.get(path); status != http.StatusInternalServerError || !strings.Contains(body, "annotations file") {
		t.Errorf("without the annotations file: %d %q, want 500 about the file", status, body)
	}
}

func TestAppProbesAnswerOnlyGET(t *testing.T) {
	app := &probeApp{}
	appPort := startHTTPApp(t, app, false)
	f := newProbeFixture(t)
	f.setProbes(proxyconfig.OriginalProbes{"web": {Liveness: httpProbe(appPort, "/ok")}})
	res, err := http.Post(f.url+proxyconfig.AppProbePath("web", "liveness"), "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close()
	if res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST = %d, want 405", res.StatusCode)
	}
	if app.lastRequest() != nil {
		t.Errorf("a refused POST ran the probe")
	}
}

func TestAppProbeListenerIsOptional(t *testing.T) {
	cfg := proxyconfig.Config{MeshService: serverService, ControlPlane: "control-plane:15012", InboundPort: 15006, MTLSMode: "STRICT"}
	f := newFixture(t)

	t.Run("it is a listener of the configuration, on every address", func(t *testing.T) {
		p := f.newProxy(cfg, Options{AppProbePort: 15999}, serverService)
		if names := p.ListenerNames(); names[len(names)-1] != AppProbesListener {
			t.Errorf("ListenerNames = %v, want %s last", names, AppProbesListener)
		}
		if address, err := p.ListenAddress(AppProbesListener); err != nil || address != ":15999" {
			t.Errorf("ListenAddress = %q, %v; want :15999", address, err)
		}
	})
	t.Run("a negative port leaves it out", func(t *testing.T) {
		p := f.newProxy(cfg, Options{AppProbePort: -1}, serverService)
		for _, name := range p.ListenerNames() {
			if name == AppProbesListener {
				t.Errorf("ListenerNames = %v, want no %s", p.ListenerNames(), AppProbesListener)
			}
		}
		if _, err := p.ListenAddress(AppProbesListener); err == nil {
			t.Errorf("ListenAddress of the missing listener succeeded")
		}
	})
	t.Run("Bind goes on without it when its port is taken", func(t *testing.T) {
		taken, err := net.Listen("tcp", ":0")
		if err != nil {
			t.Fatal(err)
		}
		defer taken.Close()
		free, freePort := listenLocal(t)
		_ = free.Close()
		cfg := cfg
		cfg.InboundPort = freePort
		p := f.newProxy(cfg, Options{AppProbePort: taken.Addr().(*net.TCPAddr).Port}, serverService)
		bound, err := p.Bind()
		if err != nil {
			t.Fatalf("Bind with the probe port taken: %v", err)
		}
		defer closeAll(bound)
		if _, ok := bound[AppProbesListener]; ok || bound[InboundListener] == nil {
			t.Errorf("Bind returned %v, want the inbound listener and no probe listener", bound)
		}
	})
}

func closeAll(listeners map[string]net.Listener) {
	for _, l := range listeners {
		_ = l.Close()
	}
}
