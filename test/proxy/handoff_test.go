package proxy_test

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/handoff"
	"github.com/meshlift/meshlift/internal/proxyconfig"
	"github.com/meshlift/meshlift/internal/testutil/gen"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

// loadDuration is how long each test's traffic runs; the handoff happens in its middle.
const loadDuration = 8 * time.Second

// TestHandoffUnderLoad hot-upgrades one proxy (the server side: inbound listener; the client
// side: outbound listener) from the old binary in slot 1 to the new binary in slot 2 while
// keep-alive, new-connection and h2c traffic runs: no request fails, no connection is refused.
func TestHandoffUnderLoad(t *testing.T) {
	for _, side := range []string{"server", "client"} {
		t.Run(side, func(t *testing.T) {
			m := newMesh(t)
			w := m.echo
			if side == "client" {
				w = m.client
			}
			old := w.running[1]
			loads := startLoads(t, m.target, loadDuration)
			time.Sleep(2 * time.Second)

			w.setActiveSlot(t, 2)
			started := time.Now()
			next := w.start(t, bin.proxyNew, 2)
			next.waitRole(t, "active")
			old.waitRole(t, "idle")
			t.Logf("the new process took over and the old one drained within %s", time.Since(started))

			for _, l := range loads {
				r := l.wait(t)
				if r.Failed != 0 || r.OK == 0 {
					t.Errorf("traffic failed during the handoff: %s", r)
				}
			}
			if n := next.metric(t, `meshlift_proxy_handoffs_total{result="ok",side="took-over"}`); n != 1 {
				t.Errorf("the new process counts %v successful takeovers, want 1", n)
			}
			if n := old.metric(t, `meshlift_proxy_handoffs_total{result="ok",side="handed-off"}`); n != 1 {
				t.Errorf("the old process counts %v successful handoffs, want 1", n)
			}
			// The new process carries the traffic now.
			after := startLoad(t, m.target, "keepalive", 100, 2*time.Second).wait(t)
			if after.Failed != 0 || after.OK == 0 {
				t.Errorf("traffic after the handoff: %s", after)
			}
			if !old.holds() {
				t.Errorf("the idle old process exited; it must stay to resume if the new one dies")
			}
		})
	}
}

// TestNewProcessKilledBeforeTakeover kills the new process after it received the listeners but
// before it sent TAKEOVER: the old process never stopped accepting, so nothing fails, and it
// still hands over to the next process that asks.
func TestNewProcessKilledBeforeTakeover(t *testing.T) {
	m := newMesh(t)
	old := m.echo.running[1]
	loads := startLoads(t, m.target, loadDuration)
	time.Sleep(2 * time.Second)

	m.echo.setActiveSlot(t, 2)
	doomed := m.echo.start(t, bin.proxyNew, 2, "MESHLIFT_DEBUG_TAKEOVER_DELAY=1h")
	doomed.waitRole(t, "waiting")
	doomed.kill(t)
	time.Sleep(time.Second)
	if role := old.role(); role != "active" {
		t.Fatalf("the old process is %q after the new one died before TAKEOVER, want active", role)
	}
	for _, l := range loads {
		if r := l.wait(t); r.Failed != 0 || r.OK == 0 {
			t.Errorf("traffic failed: %s", r)
		}
	}
	if n := old.metric(t, `meshlift_proxy_handoffs_total{result="failed",side="handed-off"}`); n != 1 {
		t.Errorf("the old process counts %v failed handoffs, want 1", n)
	}

	// The next attempt succeeds.
	next := m.echo.start(t, bin.proxyNew, 2)
	next.waitRole(t, "active")
	old.waitRole(t, "idle")
	if r := startLoad(t, m.target, "keepalive", 100, 2*time.Second).wait(t); r.Failed != 0 || r.OK == 0 {
		t.Errorf("traffic after the second handoff: %s", r)
	}
}

// TestNewProcessKilledAfterTakeover kills the new process once it owns the listeners and the old
// one is idle: the old process resumes accepting on the same sockets. No connection is refused
// (the listening sockets never closed); only requests the killed process was serving at that
// instant can fail, and traffic after the resume is clean.
func TestNewProcessKilledAfterTakeover(t *testing.T) {
	m := newMesh(t)
	old := m.echo.running[1]
	m.echo.setActiveSlot(t, 2)
	doomed := m.echo.start(t, bin.proxyNew, 2)
	doomed.waitRole(t, "active")
	old.waitRole(t, "idle")

	loads := startLoads(t, m.target, loadDuration)
	time.Sleep(3 * time.Second)
	doomed.kill(t)
	old.waitRole(t, "active")
	for _, l := range loads {
		r := l.wait(t)
		if r.Failures["connect_refused"] != 0 {
			t.Errorf("connections were refused while the old process resumed: %s", r)
		}
		// At most the requests in flight in the killed process (the load's concurrency).
		if r.Failed > 8 || r.OK == 0 {
			t.Errorf("more requests failed than were in flight when the process was killed: %s", r)
		}
	}
	if n := old.metric(t, `meshlift_proxy_handoffs_total{result="ok",side="resumed"}`); n != 1 {
		t.Errorf("the old process counts %v resumes, want 1", n)
	}
	for _, l := range startLoads(t, m.target, 2*time.Second) {
		if r := l.wait(t); r.Failed != 0 || r.OK == 0 {
			t.Errorf("traffic after the resume: %s", r)
		}
	}
}

// TestShutdownDrains stops a proxy with SIGTERM (the non-hot path: pod deletion) while a slow
// stream of keep-alive traffic runs through it: it stops accepting, finishes what it serves and
// exits 0 within its drain timeout.
func TestShutdownDrains(t *testing.T) {
	m := newMesh(t)
	p := m.echo.running[1]
	l := startLoad(t, m.target, "keepalive", 50, 3*time.Second)
	time.Sleep(time.Second)
	started := time.Now()
	p.stop(30 * time.Second)
	if p.err != nil {
		t.Errorf("the proxy exited with %v after SIGTERM, want 0", p.err)
	}
	if d := time.Since(started); d > 15*time.Second {
		t.Errorf("the proxy took %s to exit, more than its drain timeout (10s) allows", d)
	}
	r := l.wait(t)
	if r.OK == 0 {
		t.Errorf("no request got through before the shutdown: %s", r)
	}
	if r.Failures["bad_body"] != 0 {
		t.Errorf("answers were cut while draining: %s", r)
	}
}

// BenchmarkHandoff measures a hot upgrade of one proxy between real processes, as the rollout
// controller drives it: the process in the other slot is replaced (the idle one exits at once on
// SIGTERM), the active-slot annotation names that slot, and the new process starts; the time is
// from its start until it owns the listeners (role active: the certificate arrived and TAKEOVER
// was sent). Light keep-alive traffic runs throughout.
func BenchmarkHandoff(b *testing.B) {
	m := newMesh(b)
	traffic := startLoad(b, m.target, "keepalive", 50, time.Hour)
	binaries := map[int]string{1: bin.proxyOld, 2: bin.proxyNew}
	slot := 1
	var total time.Duration
	b.ResetTimer()
	for range b.N {
		next := 3 - slot
		if p := m.echo.running[next]; p != nil {
			p.stop(10 * time.Second)
		}
		m.echo.setActiveSlot(b, next)
		started := time.Now()
		p := m.echo.start(b, binaries[next], next)
		for p.role() != "active" {
			if !p.holds() {
				b.Fatalf("%s exited during the handoff: %v", p.name, p.err)
			}
			if time.Since(started) > timeout {
				b.Fatalf("%s did not take over within %s", p.name, timeout)
			}
			time.Sleep(5 * time.Millisecond)
		}
		total += time.Since(started)
		// The next round starts once the previous owner drained and idles.
		m.echo.running[slot].waitRole(b, "idle")
		slot = next
	}
	b.StopTimer()
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/handoff")
	_ = traffic
}

// TestHandoffSocketRefusesAnotherUID runs the proxy as a non-root user, as the injector does,
// and connects to its handoff socket from this process, which is root: an app container running
// as root, which the socket's 0600 mode does not stop. The proxy refuses it before HELLO (no
// listeners leave it), logs its uid and pid and counts it; the other slot, of the proxy's own
// uid, still takes over.
func TestHandoffSocketRefusesAnotherUID(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: it runs the proxy as another uid (syscall.Credential) and connects to it as root")
	}
	const proxyUID = 65534
	ns := env.Namespace(t, "proxy")
	appPort := freePort(t)
	ms := gen.MeshService("echo", gen.MeshServiceMeta(gen.SetNamespace(ns)))
	ms.Spec.Ports = []meshv1alpha1.MeshServicePort{{Name: "http", Port: int32(appPort), Protocol: meshv1alpha1.ProtocolHTTP}}
	if err := env.Client.Create(context.Background(), ms); err != nil {
		t.Fatal(err)
	}
	w := newWorkload(t, ms, "echo-0", freePort(t))
	w.runAs(t, proxyUID)
	old := w.start(t, bin.proxyOld, 1)
	old.waitRole(t, "active")
	socket := filepath.Join(w.dir, "handoff.sock")
	info, err := os.Stat(socket)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != handoff.SocketMode {
		t.Fatalf("the handoff socket has mode %v, want %v", info.Mode().Perm(), handoff.SocketMode)
	}

	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: socket, Net: "unix"})
	if err != nil {
		t.Skipf("root cannot connect to a socket of mode 0600 of another user here (no CAP_DAC_OVERRIDE?): %v", err)
	}
	c := handoff.NewConn(conn, 10*time.Second)
	_ = c.Send(handoff.Message{Type: handoff.TypeHello, Version: "9.9.9", Protocol: handoff.ProtocolVersion, Slot: 2})
	m, files, err := c.Receive()
	for _, f := range files {
		_ = f.Close()
	}
	_ = c.Close()
	if err == nil {
		t.Fatalf("a root peer received %s with %d sockets from a proxy of uid %d", m.Type, len(files), proxyUID)
	}
	testenv.Eventually(t, timeout, func(context.Context) (bool, string) {
		n := old.metric(t, `meshlift_proxy_handoff_peers_refused_total{side="serving"}`)
		return n == 1, fmt.Sprintf("refused peers counted: %v, want 1", n)
	})
	log := old.output.String()
	if !strings.Contains(log, "Refused a handoff peer of another UID") || !strings.Contains(log, `"peerUID":0`) ||
		!strings.Contains(log, fmt.Sprintf(`"peerPID":%d`, os.Getpid())) || !strings.Contains(log, fmt.Sprintf(`"ownUID":%d`, proxyUID)) {
		t.Fatalf("the proxy's log does not name the refused peer (uid 0, pid %d):\n%s", os.Getpid(), log)
	}
	if role := old.role(); role != "active" {
		t.Fatalf("the proxy is %q after refusing a peer, want active", role)
	}

	// The other slot, of the proxy's own uid, takes over as always.
	w.setActiveSlot(t, 2)
	next := w.start(t, bin.proxyNew, 2)
	next.waitRole(t, "active")
	old.waitRole(t, "idle")
}

// TestAppProbesAnswerAcrossAHandoff hot-upgrades the echo pod's proxy while kubelet-like probes
// (a new connection per request) hit its app probe listener: the listener is handed over with
// the others, so no probe is refused or fails, and the new process answers them afterwards.
func TestAppProbesAnswerAcrossAHandoff(t *testing.T) {
	m := newMesh(t)
	appURL, err := url.Parse(m.app)
	if err != nil {
		t.Fatal(err)
	}
	appPort, err := strconv.Atoi(appURL.Port())
	if err != nil {
		t.Fatal(err)
	}
	probes, err := proxyconfig.OriginalProbes{"app": {
		Readiness: &proxyconfig.AppProbe{HTTPGet: &proxyconfig.HTTPGetProbe{Port: appPort, Path: "/"}},
		Liveness:  &proxyconfig.AppProbe{TCPSocket: &proxyconfig.TCPSocketProbe{Port: appPort}},
	}}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	w := m.echo
	w.originalProbes = probes
	w.setActiveSlot(t, 1)
	readiness := fmt.Sprintf("http://127.0.0.1:%d%s", w.probePort, proxyconfig.AppProbePath("app", proxyconfig.ProbeReadiness))
	liveness := fmt.Sprintf("http://127.0.0.1:%d%s", w.probePort, proxyconfig.AppProbePath("app", proxyconfig.ProbeLiveness))
	for _, u := range []string{readiness, liveness} {
		if err := get(context.Background(), u); err != nil {
			t.Fatalf("the app probe before the handoff: %v", err)
		}
	}

	old := w.running[1]
	loads := []*load{
		// The probe listener answers "ok", not the echo server's JSON: any 2xx is a success.
		startLoad(t, readiness, "newconn", 100, loadDuration, "--check-body=false"),
		startLoad(t, liveness, "newconn", 100, loadDuration, "--check-body=false"),
	}
	time.Sleep(2 * time.Second)
	w.setActiveSlot(t, 2)
	next := w.start(t, bin.proxyNew, 2)
	next.waitRole(t, "active")
	old.waitRole(t, "idle")
	for _, l := range loads {
		if r := l.wait(t); r.Failed != 0 || r.OK == 0 {
			t.Errorf("app probes failed during the handoff: %s", r)
		}
	}
	// The old process no longer accepts: the new one answers.
	for _, u := range []string{readiness, liveness} {
		if err := get(context.Background(), u); err != nil {
			t.Errorf("the app probe after the handoff: %v", err)
		}
	}
	if !strings.Contains(next.output.String(), `"app-probes"`) {
		t.Errorf("the new process does not log accepting on the app probe listener:\n%s", next.output.String())
	}
}
