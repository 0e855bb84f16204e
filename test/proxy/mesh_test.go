package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/controlplane/caller"
	"github.com/meshlift/meshlift/internal/proxyconfig"
	"github.com/meshlift/meshlift/internal/sidecar"
	"github.com/meshlift/meshlift/internal/testutil/gen"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

// mesh is one test's workloads: the echo MeshService (one pod, its app and its proxy on the
// inbound port sidecar.InboundPort) and the client MeshService (one pod whose proxy has a
// localhost listener for echo). Both proxies start in slot 1 from the old binary.
type mesh struct {
	ns     string
	echo   *workload
	client *workload
	// target is the URL the app of the client pod calls: the client proxy's outbound listener.
	target string
	// app is the URL of the echo app itself, for a direct baseline.
	app string
}

// workload is a pod's object and the files the kubelet would give its proxies.
type workload struct {
	name string
	pod  *corev1.Pod
	// dir holds token, ca.crt, annotations and handoff.sock.
	dir  string
	args []string
	// running are the proxy processes started for the pod, by slot.
	running map[int]*proxyProcess
	// uid, when set, is the user the pod's proxies run as (runAs); root otherwise.
	uid *uint32
	// probePort is the proxies' app probe listener (MESHLIFT_APP_PROBE_PORT): a free port per
	// pod, since the test's pods share the host's network.
	probePort int
	// originalProbes, when set, is written as the pod's meshlift.io/original-probes annotation.
	originalProbes string
}

// runAs makes the pod's proxies run as uid, as the injector's securityContext does: its files
// and directory (where the proxy binds the handoff socket) become that user's.
func (w *workload) runAs(t testing.TB, uid uint32) {
	t.Helper()
	w.uid = &uid
	entries, err := os.ReadDir(w.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := os.Chown(filepath.Join(w.dir, e.Name()), int(uid), int(uid)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(w.dir, int(uid), int(uid)); err != nil {
		t.Fatal(err)
	}
}

func newMesh(t testing.TB) *mesh {
	t.Helper()
	ns := env.Namespace(t, "proxy")
	appPort, clientInbound, outbound := freePort(t), freePort(t), freePort(t)
	echoMS := gen.MeshService("echo", gen.MeshServiceMeta(gen.SetNamespace(ns)))
	echoMS.Spec.Ports = []meshv1alpha1.MeshServicePort{{Name: "http", Port: int32(appPort), Protocol: meshv1alpha1.ProtocolHTTP}}
	clientMS := gen.MeshService("client", gen.MeshServiceMeta(gen.SetNamespace(ns)))
	clientMS.Spec.Ports = nil
	clientMS.Spec.Upstreams = []meshv1alpha1.Upstream{{MeshService: "echo", Port: "http", LocalPort: int32(outbound)}}
	for _, ms := range []*meshv1alpha1.MeshService{echoMS, clientMS} {
		if err := env.Client.Create(context.Background(), ms); err != nil {
			t.Fatal(err)
		}
	}
	m := &mesh{ns: ns, target: fmt.Sprintf("http://127.0.0.1:%d/", outbound), app: fmt.Sprintf("http://127.0.0.1:%d/", appPort)}
	m.echo = newWorkload(t, echoMS, "echo-0", sidecar.InboundPort)
	m.client = newWorkload(t, clientMS, "client-0", clientInbound)

	echo := exec.Command(bin.demo, "serve", "--listen", fmt.Sprintf("127.0.0.1:%d", appPort), "--name", "echo-0")
	startProcess(t, "echo", echo)
	waitListening(t, fmt.Sprintf("127.0.0.1:%d", appPort))

	m.echo.start(t, bin.proxyOld, 1)
	m.client.start(t, bin.proxyOld, 1)
	m.echo.running[1].waitRole(t, "active")
	m.client.running[1].waitRole(t, "active")
	// The client proxy has the echo endpoint once a request gets through.
	testenv.Eventually(t, timeout, func(ctx context.Context) (bool, string) {
		if err := get(ctx, m.target); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	return m
}

// newWorkload creates the pod of ms (running as a service account of its own name, ready at
// 127.0.0.1) and writes its token, trust bundle and annotations (active slot 1).
func newWorkload(t testing.TB, ms *meshv1alpha1.MeshService, name string, inboundPort int) *workload {
	t.Helper()
	ctx := context.Background()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ms.Namespace, Name: ms.Name}}
	if err := env.Client.Create(ctx, sa); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	pod := gen.Pod(name,
		gen.PodMeta(gen.SetNamespace(ms.Namespace), gen.SetLabels("app", ms.Name), gen.SetAnnotations(meshv1alpha1.AnnotationInjectionHash, "test")),
		gen.Injected(ms.Name, "v1"),
		gen.SetServiceAccount(ms.Name),
	)
	if err := env.Client.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	gen.Ready(pod)(&pod.Status)
	pod.Status.PodIP = "127.0.0.1"
	pod.Status.PodIPs = []corev1.PodIP{{IP: "127.0.0.1"}}
	if err := env.Client.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, timeout, func(ctx context.Context) (bool, string) {
		seen := &corev1.Pod{}
		if err := cp.cache.Get(ctx, client.ObjectKeyFromObject(pod), seen); err != nil {
			return false, err.Error()
		}
		return seen.UID == pod.UID && seen.Status.PodIP != "", "the control plane does not see the pod yet"
	})

	request := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences:         []string{caller.Audience},
		ExpirationSeconds: ptr.To[int64](3600),
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	if err := env.Client.SubResource("token").Create(ctx, sa, request); err != nil {
		t.Fatalf("minting a token for %s: %v", name, err)
	}
	// Unix socket paths are short (108 bytes): keep the directory out of t.TempDir's long names.
	dir, err := os.MkdirTemp("", "mlp-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	w := &workload{name: name, pod: pod, dir: dir, running: map[int]*proxyProcess{}, probePort: freePort(t)}
	w.writeFile(t, "token", []byte(request.Status.Token))
	w.writeFile(t, "ca.crt", cp.holder.Current().TrustBundle())
	w.setActiveSlot(t, 1)

	version := gen.SidecarVersion("v1", "1.0.0")
	version.Spec.Args = []string{"--control-plane-server-name=" + controlPlaneServerName(), "--drain-timeout=10s"}
	args := sidecar.ProxyArgs(ms, version, sidecar.Options{ControlPlaneAddress: cp.server.Addr().String()})
	for i, a := range args {
		if strings.HasPrefix(a, "--inbound-port=") {
			args[i] = "--inbound-port=" + strconv.Itoa(inboundPort)
		}
	}
	w.args = args
	return w
}

func (w *workload) writeFile(t testing.TB, name string, data []byte) {
	t.Helper()
	// Write and rename, as the kubelet's atomic writer does, so a reader never sees half a file.
	tmp := filepath.Join(w.dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if w.uid != nil {
		if err := os.Chown(tmp, int(*w.uid), int(*w.uid)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Rename(tmp, filepath.Join(w.dir, name)); err != nil {
		t.Fatal(err)
	}
}

// setActiveSlot writes the downward-API annotations file as the kubelet would after the rollout
// controller set the pod's active-slot annotation.
func (w *workload) setActiveSlot(t testing.TB, slot int) {
	t.Helper()
	annotations := fmt.Sprintf("%s=%q\n%s=%q\n",
		meshv1alpha1.AnnotationActiveSlot, strconv.Itoa(slot), meshv1alpha1.AnnotationMeshService, w.pod.Annotations[meshv1alpha1.AnnotationMeshService])
	if w.originalProbes != "" {
		annotations += fmt.Sprintf("%s=%q\n", proxyconfig.OriginalProbesAnnotation, w.originalProbes)
	}
	w.writeFile(t, "annotations", []byte(annotations))
}

// start runs binary as the pod's proxy in slot, with extra environment variables.
func (w *workload) start(t testing.TB, binary string, slot int, extraEnv ...string) *proxyProcess {
	t.Helper()
	admin := freePort(t)
	cmd := exec.Command(binary, w.args...)
	cmd.Env = append(os.Environ(),
		"MESHLIFT_SLOT="+strconv.Itoa(slot),
		"MESHLIFT_POD_NAME="+w.pod.Name,
		"MESHLIFT_POD_NAMESPACE="+w.pod.Namespace,
		"MESHLIFT_SERVICE_ACCOUNT="+w.pod.Spec.ServiceAccountName,
		"MESHLIFT_TRUST_DOMAIN="+trustDomain,
		"MESHLIFT_TOKEN_FILE="+filepath.Join(w.dir, "token"),
		"MESHLIFT_CA_FILE="+filepath.Join(w.dir, "ca.crt"),
		"MESHLIFT_ANNOTATIONS_FILE="+filepath.Join(w.dir, "annotations"),
		"MESHLIFT_HANDOFF_SOCKET="+filepath.Join(w.dir, "handoff.sock"),
		"MESHLIFT_ADMIN_PORT="+strconv.Itoa(admin),
		"MESHLIFT_APP_PROBE_PORT="+strconv.Itoa(w.probePort),
	)
	cmd.Env = append(cmd.Env, extraEnv...)
	if w.uid != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: *w.uid, Gid: *w.uid, NoSetGroups: true}}
	}
	p := startProcess(t, fmt.Sprintf("%s slot %d (%s)", w.name, slot, filepath.Base(binary)), cmd)
	p.admin = fmt.Sprintf("http://127.0.0.1:%d", admin)
	w.running[slot] = p
	return p
}

// proxyProcess is a running process and its output.
type proxyProcess struct {
	name   string
	cmd    *exec.Cmd
	output *syncBuffer
	exited chan struct{}
	err    error
	admin  string
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startProcess starts cmd; at the end of the test it is stopped (SIGTERM, then SIGKILL) and, if
// the test failed, its output is logged.
func startProcess(t testing.TB, name string, cmd *exec.Cmd) *proxyProcess {
	t.Helper()
	p := &proxyProcess{name: name, cmd: cmd, output: &syncBuffer{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.output, p.output
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.stop(10 * time.Second)
		if t.Failed() {
			t.Logf("output of %s:\n%s", name, p.output.String())
		}
	})
	return p
}

// stop sends SIGTERM and waits up to grace before SIGKILL.
func (p *proxyProcess) stop(grace time.Duration) {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// kill sends SIGKILL: the process dies without a word to its peer.
func (p *proxyProcess) kill(t testing.TB) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatalf("killing %s: %v", p.name, err)
	}
	<-p.exited
}

var roleLine = regexp.MustCompile(`(?m)^meshlift_proxy_role\{role="([a-z]+)"\} 1$`)

// role is the role the process reports on /stats ("" if it does not answer).
func (p *proxyProcess) role() string {
	stats, err := p.stats()
	if err != nil {
		return ""
	}
	if m := roleLine.FindStringSubmatch(stats); m != nil {
		return m[1]
	}
	return ""
}

func (p *proxyProcess) stats() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.admin+"/stats", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}

// metric is the value of the sample of /stats whose line starts with prefix (name and labels).
func (p *proxyProcess) metric(t testing.TB, prefix string) float64 {
	t.Helper()
	stats, err := p.stats()
	if err != nil {
		t.Fatalf("reading the stats of %s: %v", p.name, err)
	}
	var total float64
	scanner := bufio.NewScanner(strings.NewReader(stats))
	for scanner.Scan() {
		line := scanner.Text()
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		total += v
	}
	return total
}

func (p *proxyProcess) waitRole(t testing.TB, role string) {
	t.Helper()
	testenv.Eventually(t, timeout, func(context.Context) (bool, string) {
		select {
		case <-p.exited:
			t.Fatalf("%s exited (%v) while waiting for role %s", p.name, p.err, role)
		default:
		}
		got := p.role()
		return got == role, fmt.Sprintf("%s is %q, not %q", p.name, got, role)
	})
}

// holds is true while the process has not exited.
func (p *proxyProcess) holds() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// loadResult is the part of meshlift-demo load's JSON summary the tests read.
type loadResult struct {
	Mode        string            `json:"mode"`
	Sent        int               `json:"sent"`
	OK          int               `json:"ok"`
	Failed      int               `json:"failed"`
	Failures    map[string]int    `json:"failures"`
	FirstErrors map[string]string `json:"firstErrors"`
}

func (r loadResult) String() string {
	return fmt.Sprintf("%s: sent %d, ok %d, failed %d %v %v", r.Mode, r.Sent, r.OK, r.Failed, r.Failures, r.FirstErrors)
}

// load is a running meshlift-demo load.
type load struct {
	done   chan struct{}
	result loadResult
	err    error
}

// startLoad sends rps requests per second in mode to target for d (extraArgs go to
// meshlift-demo load).
func startLoad(t testing.TB, target, mode string, rps int, d time.Duration, extraArgs ...string) *load {
	t.Helper()
	l := &load{done: make(chan struct{})}
	args := append([]string{"load", "--target", target, "--mode", mode, "--rps", strconv.Itoa(rps),
		"--duration", d.String(), "--concurrency", "8", "--timeout", "5s", "--output", "json", "--allow-failures", "100000"}, extraArgs...)
	cmd := exec.Command(bin.demo, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the load generator: %v", err)
	}
	go func() {
		defer close(l.done)
		err := cmd.Wait()
		if jerr := json.Unmarshal(stdout.Bytes(), &l.result); jerr != nil {
			l.err = fmt.Errorf("load %s: %v (%w); stdout %q stderr %q", mode, err, jerr, stdout.String(), stderr.String())
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-l.done
	})
	return l
}

func (l *load) wait(t testing.TB) loadResult {
	t.Helper()
	<-l.done
	if l.err != nil {
		t.Fatal(l.err)
	}
	t.Logf("load %s", l.result)
	return l.result
}

// loadModes are the traffic kinds of every test.
var loadModes = []string{"keepalive", "newconn", "h2c"}

func startLoads(t testing.TB, target string, d time.Duration) []*load {
	t.Helper()
	loads := make([]*load, 0, len(loadModes))
	for _, mode := range loadModes {
		loads = append(loads, startLoad(t, target, mode, 100, d))
	}
	return loads
}

func get(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}

func waitListening(t testing.TB, address string) {
	t.Helper()
	testenv.Eventually(t, timeout, func(context.Context) (bool, string) {
		c, err := net.DialTimeout("tcp", address, time.Second)
		if err != nil {
			return false, err.Error()
		}
		_ = c.Close()
		return true, ""
	})
}
