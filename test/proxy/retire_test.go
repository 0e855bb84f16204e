package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/proxyconfig"
	"github.com/meshlift/meshlift/internal/sidecar"
	"github.com/meshlift/meshlift/internal/testutil/gen"
	"github.com/meshlift/meshlift/internal/testutil/latency"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

// streamMesh is a mesh for long-lived connections: the echo pod's app (in this test process)
// echoes lines on port "stream" (TCP) and, after an HTTP/1.1 Upgrade, on port "ws" (HTTP); the
// client pod's proxy has a localhost listener for each.
type streamMesh struct {
	echo, client *workload
	// streamAddr and wsAddr are the client proxy's outbound listeners.
	streamAddr, wsAddr string
}

// newStreamMesh starts both pods' proxies in slot 1 from the old binary, the echo proxy with
// echoArgs added to its arguments.
func newStreamMesh(t testing.TB, echoArgs ...string) *streamMesh {
	t.Helper()
	ns := env.Namespace(t, "proxy")
	streamPort, wsPort := startLineEcho(t), startUpgradeEcho(t)
	streamLocal, wsLocal := freePort(t), freePort(t)
	echoMS := gen.MeshService("echo", gen.MeshServiceMeta(gen.SetNamespace(ns)))
	echoMS.Spec.Ports = []meshv1alpha1.MeshServicePort{
		{Name: "stream", Port: int32(streamPort), Protocol: meshv1alpha1.ProtocolTCP},
		{Name: "ws", Port: int32(wsPort), Protocol: meshv1alpha1.ProtocolHTTP},
	}
	clientMS := gen.MeshService("client", gen.MeshServiceMeta(gen.SetNamespace(ns)))
	clientMS.Spec.Ports = nil
	clientMS.Spec.Upstreams = []meshv1alpha1.Upstream{
		{MeshService: "echo", Port: "stream", LocalPort: int32(streamLocal)},
		{MeshService: "echo", Port: "ws", LocalPort: int32(wsLocal)},
	}
	for _, ms := range []*meshv1alpha1.MeshService{echoMS, clientMS} {
		if err := env.Client.Create(context.Background(), ms); err != nil {
			t.Fatal(err)
		}
	}
	m := &streamMesh{
		echo:       newWorkload(t, echoMS, "echo-0", sidecar.InboundPort),
		client:     newWorkload(t, clientMS, "client-0", freePort(t)),
		streamAddr: fmt.Sprintf("127.0.0.1:%d", streamLocal),
		wsAddr:     fmt.Sprintf("127.0.0.1:%d", wsLocal),
	}
	m.echo.args = append(m.echo.args, echoArgs...)
	m.echo.start(t, bin.proxyOld, 1)
	m.client.start(t, bin.proxyOld, 1)
	m.echo.running[1].waitRole(t, "active")
	m.client.running[1].waitRole(t, "active")
	// The client proxy has the echo endpoint once a stream gets through.
	testenv.Eventually(t, timeout, func(context.Context) (bool, string) {
		s, err := dialStream(m.streamAddr)
		if err != nil {
			return false, err.Error()
		}
		defer func() { _ = s.conn.Close() }()
		if err := s.echo("ready?"); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	return m
}

// startLineEcho is the app of port "stream": it echoes what it reads.
func startLineEcho(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = c.Close() }()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

// startUpgradeEcho is the app of port "ws": it answers "Upgrade: echo" with 101 and then echoes
// what it reads, as a WebSocket server keeps its connection after the handshake.
func startUpgradeEcho(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "want Upgrade: echo", http.StatusBadRequest)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer func() { _ = conn.Close() }()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		if brw.Flush() != nil {
			return
		}
		buf := make([]byte, 4096)
		for {
			n, err := brw.Read(buf)
			if n > 0 {
				if _, werr := conn.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	})}
	go func() { _ = server.Serve(l) }()
	t.Cleanup(func() { _ = server.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

// lineStream is a long-lived connection through the client proxy that echoes lines.
type lineStream struct {
	conn   net.Conn
	reader *bufio.Reader
	kind   string
}

func dialStream(address string) (*lineStream, error) {
	conn, err := net.DialTimeout("tcp", address, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &lineStream{conn: conn, reader: bufio.NewReader(conn), kind: "tcp"}, nil
}

func dialUpgraded(address string) (*lineStream, error) {
	s, err := dialStream(address)
	if err != nil {
		return nil, err
	}
	s.kind = "upgraded"
	_ = s.conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(s.conn, "GET /ws HTTP/1.1\r\nHost: echo\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"); err != nil {
		_ = s.conn.Close()
		return nil, err
	}
	res, err := http.ReadResponse(s.reader, nil)
	if err != nil {
		_ = s.conn.Close()
		return nil, fmt.Errorf("upgrading: %w", err)
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		_ = s.conn.Close()
		return nil, fmt.Errorf("upgrading: %s", res.Status)
	}
	return s, nil
}

// echo sends a line and reads it back.
func (s *lineStream) echo(line string) error {
	if err := s.conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return err
	}
	if _, err := io.WriteString(s.conn, line+"\n"); err != nil {
		return fmt.Errorf("writing: %w", err)
	}
	got, err := s.reader.ReadString('\n')
	if err != nil {
		return fmt.Errorf("reading: %w", err)
	}
	if got != line+"\n" {
		return fmt.Errorf("echoed %q, want %q", got, line)
	}
	return nil
}

// openStreams opens tcp TCP streams and upgraded upgraded connections through the client proxy;
// each echoed one line.
func (m *streamMesh) openStreams(t testing.TB, tcp, upgraded int) []*lineStream {
	t.Helper()
	streams := make([]*lineStream, 0, tcp+upgraded)
	for i := range tcp + upgraded {
		var s *lineStream
		var err error
		if i < tcp {
			s, err = dialStream(m.streamAddr)
		} else {
			s, err = dialUpgraded(m.wsAddr)
		}
		if err == nil {
			err = s.echo("open " + strconv.Itoa(i))
		}
		if err != nil {
			t.Fatalf("opening stream %d: %v", i, err)
		}
		streams = append(streams, s)
	}
	t.Cleanup(func() {
		for _, s := range streams {
			_ = s.conn.Close()
		}
	})
	return streams
}

// echoing sends a line on every stream about every 10 ms until stopped, and remembers which
// streams broke.
type echoing struct {
	stop    chan struct{}
	wg      sync.WaitGroup
	echoes  atomic.Int64
	mu      sync.Mutex
	broken  map[*lineStream]error
	streams []*lineStream
}

func startEchoing(streams []*lineStream) *echoing {
	e := &echoing{stop: make(chan struct{}), broken: map[*lineStream]error{}, streams: streams}
	for i, s := range streams {
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			ticker := time.NewTicker(10 * time.Millisecond)
			defer ticker.Stop()
			for n := 0; ; n++ {
				if err := s.echo(fmt.Sprintf("stream %d line %d", i, n)); err != nil {
					e.mu.Lock()
					e.broken[s] = err
					e.mu.Unlock()
					return
				}
				e.echoes.Add(1)
				select {
				case <-e.stop:
					return
				case <-ticker.C:
				}
			}
		}()
	}
	return e
}

// halt stops the echoes and returns the broken streams.
func (e *echoing) halt() map[*lineStream]error {
	close(e.stop)
	e.wg.Wait()
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.broken
}

// brokenCount is how many streams broke so far.
func (e *echoing) brokenCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.broken)
}

// setAnnotations writes the downward-API annotations file with the active slot and extra
// annotations, as the kubelet would after the rollout patched the pod.
func (w *workload) setAnnotations(t testing.TB, slot int, extra map[string]string) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "%s=%q\n%s=%q\n", meshv1alpha1.AnnotationActiveSlot, strconv.Itoa(slot),
		meshv1alpha1.AnnotationMeshService, w.pod.Annotations[meshv1alpha1.AnnotationMeshService])
	for k, v := range extra {
		fmt.Fprintf(&b, "%s=%q\n", k, v)
	}
	w.writeFile(t, "annotations", []byte(b.String()))
}

// hotUpgrade starts the new binary in slot 2 of w and waits until it took over and the old
// process retires.
func hotUpgrade(t testing.TB, w *workload, annotations map[string]string) (old, next *proxyProcess) {
	t.Helper()
	old = w.running[1]
	w.setAnnotations(t, 2, annotations)
	next = w.start(t, bin.proxyNew, 2)
	next.waitRole(t, "active")
	old.waitRole(t, "retiring")
	return old, next
}

// waitRetiring waits until p reports tcp TCP streams and upgraded upgraded connections held.
func waitRetiring(t testing.TB, p *proxyProcess, tcp, upgraded int) {
	t.Helper()
	testenv.Eventually(t, timeout, func(context.Context) (bool, string) {
		gotTCP := p.metric(t, `meshlift_proxy_retiring_connections{kind="tcp"}`)
		gotUpgraded := p.metric(t, `meshlift_proxy_retiring_connections{kind="upgraded"}`)
		return int(gotTCP) == tcp && int(gotUpgraded) == upgraded,
			fmt.Sprintf("%s retires %v TCP streams and %v upgraded connections, want %d and %d", p.name, gotTCP, gotUpgraded, tcp, upgraded)
	})
}

func (p *proxyProcess) ready(t testing.TB) string {
	t.Helper()
	res, err := http.Get(p.admin + "/ready")
	if err != nil {
		t.Fatalf("/ready of %s: %v", p.name, err)
	}
	defer func() { _ = res.Body.Close() }()
	body, _ := io.ReadAll(res.Body)
	return fmt.Sprintf("%d %s", res.StatusCode, strings.TrimSpace(string(body)))
}

// cutLines are the log lines in which p reports a connection it cut for reason.
func (p *proxyProcess) cutLines(reason string) []string {
	var lines []string
	for line := range strings.SplitSeq(p.output.String(), "\n") {
		if strings.Contains(line, `"msg":"Cutting a connection"`) && strings.Contains(line, `"reason":"`+reason+`"`) {
			lines = append(lines, line)
		}
	}
	return lines
}

const (
	longLivedTCP      = 100
	longLivedUpgraded = 20
)

// TestLongLivedConnectionsSurviveHandoffs keeps 100 TCP streams and 20 upgraded (WebSocket
// style) connections echoing a line every 10 ms through the client and the server proxy while
// first the client side, then the server side is hot-upgraded: each old process retires with
// every stream and serves it on, none breaks, new connections go to the new processes, and the
// old processes go idle once the streams end.
func TestLongLivedConnectionsSurviveHandoffs(t *testing.T) {
	m := newStreamMesh(t)
	streams := m.openStreams(t, longLivedTCP, longLivedUpgraded)
	run := startEchoing(streams)
	var olds []*proxyProcess
	for _, w := range []*workload{m.client, m.echo} {
		before := run.echoes.Load()
		testenv.Eventually(t, timeout, func(context.Context) (bool, string) {
			return run.echoes.Load() > before+int64(len(streams)), "the streams echo"
		})
		old, next := hotUpgrade(t, w, nil)
		olds = append(olds, old)
		waitRetiring(t, old, longLivedTCP, longLivedUpgraded)
		if body, want := old.ready(t), fmt.Sprintf("200 ready: retiring: %d connections", len(streams)); body != want {
			t.Errorf("/ready of the retiring %s = %q, want %q", old.name, body, want)
		}
		// A new connection goes to the new process.
		accepted := next.metric(t, "meshlift_proxy_connections_total")
		fresh := m.openStreams(t, 1, 1)
		for _, s := range fresh {
			_ = s.conn.Close()
		}
		if got := next.metric(t, "meshlift_proxy_connections_total"); got < accepted+2 {
			t.Errorf("the new %s accepted %v new connections, want at least 2", next.name, got-accepted)
		}
		if n := run.brokenCount(); n != 0 {
			t.Fatalf("%d streams broke during the handoff of %s", n, w.name)
		}
	}
	// Both old processes retire at once now; the streams go on.
	before := run.echoes.Load()
	testenv.Eventually(t, timeout, func(context.Context) (bool, string) {
		return run.echoes.Load() > before+int64(10*len(streams)), "the streams echo through both retiring processes"
	})
	broken := run.halt()
	for s, err := range broken {
		t.Errorf("a %s stream broke: %v", s.kind, err)
	}
	t.Logf("%d streams, %d echoes, %d broken", len(streams), run.echoes.Load(), len(broken))
	for _, s := range streams {
		_ = s.conn.Close()
	}
	for _, old := range olds {
		old.waitRole(t, "idle")
		if n := old.metric(t, "meshlift_proxy_connections_cut_total"); n != 0 {
			t.Errorf("%s cut %v connections, want none", old.name, n)
		}
		if !old.holds() {
			t.Errorf("%s exited; it must stay idle to resume if the new process dies", old.name)
		}
	}
}

// TestDrainBudgetCutsAndReports gives the old processes a drain budget of 2 s (the client pod
// through its meshlift.io/drain-max-duration annotation, the echo pod through
// --drain-max-duration), shorter than the streams live: every stream is cut when the budget
// ends, and each cut is logged with its reason and counted, as many as broke.
func TestDrainBudgetCutsAndReports(t *testing.T) {
	m := newStreamMesh(t, "--drain-max-duration=2s")
	for _, w := range []*workload{m.client, m.echo} {
		streams := m.openStreams(t, longLivedTCP, longLivedUpgraded)
		run := startEchoing(streams)
		var annotations map[string]string
		if w == m.client {
			annotations = map[string]string{proxyconfig.DrainMaxDurationAnnotation: "2s"}
		}
		old, _ := hotUpgrade(t, w, annotations)
		old.waitRole(t, "idle") // the budget ended
		testenv.Eventually(t, timeout, func(context.Context) (bool, string) {
			n := run.brokenCount()
			return n == len(streams), fmt.Sprintf("%d of %d streams broke", n, len(streams))
		})
		broken := run.halt()

		cutTCP := old.metric(t, `meshlift_proxy_connections_cut_total{kind="tcp",reason="drain_budget"}`)
		cutUpgraded := old.metric(t, `meshlift_proxy_connections_cut_total{kind="upgraded",reason="drain_budget"}`)
		lines := old.cutLines("drain_budget")
		t.Logf("%s: %d streams broke, %v TCP and %v upgraded connections counted as cut, %d log lines", w.name,
			len(broken), cutTCP, cutUpgraded, len(lines))
		if int(cutTCP) != longLivedTCP || int(cutUpgraded) != longLivedUpgraded {
			t.Errorf("%s counts %v TCP and %v upgraded connections cut for drain_budget, want %d and %d",
				old.name, cutTCP, cutUpgraded, longLivedTCP, longLivedUpgraded)
		}
		if len(lines) != len(broken) {
			t.Errorf("%s logged %d cuts for drain_budget, and %d streams broke", old.name, len(lines), len(broken))
		}
		if w == m.client {
			// The client proxy's peers are the streams themselves: each is named.
			logged := strings.Join(lines, "\n")
			for _, s := range streams {
				if !strings.Contains(logged, `"remote":"`+s.conn.LocalAddr().String()+`"`) {
					t.Errorf("no log line names the cut %s stream from %s", s.kind, s.conn.LocalAddr())
				}
			}
		}
		for _, line := range lines[:min(len(lines), 1)] {
			for _, key := range []string{`"listener":`, `"kind":`, `"age":`, `"direction":`} {
				if !strings.Contains(line, key) {
					t.Errorf("the cut log line lacks %s: %s", key, line)
				}
			}
		}
		if body, want := old.ready(t), fmt.Sprintf("200 ready: idle; cut %d connections at the drain budget", len(streams)); body != want {
			t.Errorf("/ready of %s = %q, want %q", old.name, body, want)
		}
		if summary := strings.Count(old.output.String(), `"msg":"Cut connections"`); summary != 1 {
			t.Errorf("%s logged %d summaries of cut connections, want 1", old.name, summary)
		}
	}
}

// TestNewProcessKilledWhileRetiring kills the new process while the old one retires with
// long-lived streams: the old process resumes accepting, serves its streams on (none breaks, none
// is cut later) and new connections.
func TestNewProcessKilledWhileRetiring(t *testing.T) {
	m := newStreamMesh(t, "--drain-max-duration=3s")
	streams := m.openStreams(t, 10, 2)
	run := startEchoing(streams)
	old, next := hotUpgrade(t, m.echo, nil)
	waitRetiring(t, old, 10, 2)
	next.kill(t)
	old.waitRole(t, "active")
	if n := old.metric(t, `meshlift_proxy_handoffs_total{result="ok",side="resumed"}`); n != 1 {
		t.Errorf("the old process counts %v resumes, want 1", n)
	}
	// Past the budget the resumed process still serves the streams: it no longer retires.
	time.Sleep(4 * time.Second)
	fresh := m.openStreams(t, 1, 1)
	for _, s := range fresh {
		if err := s.echo("after the resume"); err != nil {
			t.Errorf("a new %s stream through the resumed process: %v", s.kind, err)
		}
	}
	broken := run.halt()
	for s, err := range broken {
		t.Errorf("a %s stream broke: %v", s.kind, err)
	}
	if n := old.metric(t, "meshlift_proxy_connections_cut_total"); n != 0 {
		t.Errorf("the resumed process cut %v connections, want none", n)
	}
	if n := old.metric(t, "meshlift_proxy_retiring_connections"); n != 0 {
		t.Errorf("the resumed process reports %v retiring connections, want 0", n)
	}
}

// BenchmarkRetiringMemory measures the resident memory of a pod's two proxy processes while the
// old one retires with 1,000 idle long-lived TCP streams (the server side was hot-upgraded), and
// that of the single proxy before. Each iteration echoes a line on every stream.
func BenchmarkRetiringMemory(b *testing.B) {
	const idle = 1000
	m := newStreamMesh(b)
	streams := m.openStreams(b, idle, 0)
	before, _, err := latency.ResidentMB(m.echo.running[1].cmd.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
	old, next := hotUpgrade(b, m.echo, nil)
	waitRetiring(b, old, idle, 0)
	b.ResetTimer()
	for range b.N {
		for _, s := range streams {
			if err := s.echo("still there"); err != nil {
				b.Fatalf("a stream broke while the old process retires: %v", err)
			}
		}
	}
	b.StopTimer()
	oldRSS, oldPeak, err := latency.ResidentMB(old.cmd.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
	nextRSS, _, err := latency.ResidentMB(next.cmd.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(before, "before-proxy-RSS-MB")
	b.ReportMetric(oldRSS, "retiring-proxy-RSS-MB")
	b.ReportMetric(oldPeak, "retiring-proxy-peak-RSS-MB")
	b.ReportMetric(nextRSS, "new-proxy-RSS-MB")
	b.ReportMetric(oldRSS+nextRSS, "pod-proxies-RSS-MB")
	b.ReportMetric(float64(idle), "connections")
}
