//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/capture"
	"github.com/meshlift/meshlift/internal/proxyconfig"
	"github.com/meshlift/meshlift/internal/repo"
	"github.com/meshlift/meshlift/internal/sidecar"
	"github.com/meshlift/meshlift/internal/testutil/gen"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

// kubectl runs the suite's kubectl against the local cluster, with stdin when given.
func kubectl(t testing.TB, stdin string, args ...string) (string, error) {
	t.Helper()
	bin := os.Getenv("E2E_KUBECTL")
	if bin == "" {
		t.Fatal("E2E_KUBECTL is not set: run the suite with `make test-e2e`")
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+os.Getenv("E2E_KUBECONFIG"))
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// installCNI installs meshlift-cni on the node from config/local-cni (the DaemonSet chains it into
// the local cluster's CNI configuration) and, when the test ends, deletes it and checks that the
// node's configuration is back to the network plugin alone.
func installCNI(t *testing.T) {
	t.Helper()
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	kustomize := os.Getenv("E2E_KUSTOMIZE")
	manifests, err := exec.Command(kustomize, "build", filepath.Join(root, "config", "local-cni")).Output()
	if err != nil {
		t.Fatalf("kustomize build config/local-cni: %v %s", err, stderrOf(err))
	}
	if out, err := kubectl(t, string(manifests), "apply", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	conflist := filepath.Join(clusterState, "cni", "net.d", "10-meshlift.conflist")
	chained := func() bool {
		data, err := os.ReadFile(conflist)
		return err == nil && strings.Contains(string(data), `"meshlift-cni"`)
	}
	t.Cleanup(func() {
		if out, err := kubectl(t, string(manifests), "delete", "--wait=true", "-f", "-"); err != nil {
			t.Errorf("kubectl delete: %v\n%s", err, out)
		}
		testenv.Eventually(t, 2*time.Minute, func(context.Context) (bool, string) {
			return !chained(), "the node's CNI configuration still chains meshlift-cni after its DaemonSet was deleted"
		})
	})
	testenv.Eventually(t, 3*time.Minute, func(ctx context.Context) (bool, string) {
		ds := &appsv1.DaemonSet{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: "meshlift-cni"}, ds); err != nil {
			return false, err.Error()
		}
		return ds.Status.NumberReady == 1 && chained(), fmt.Sprintf("DaemonSet meshlift-cni: %d ready; chained %v", ds.Status.NumberReady, chained())
	})
}

// setCaptureMode restarts the operator with --capture-mode=mode and puts its arguments back when
// the test ends.
func setCaptureMode(t *testing.T, mode string) {
	t.Helper()
	ctx := context.Background()
	edit := func(change func([]string) []string) {
		d := &appsv1.Deployment{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: operatorDeployment}, d); err != nil {
			t.Fatal(err)
		}
		c := &d.Spec.Template.Spec.Containers[0]
		c.Args = change(c.Args)
		if err := k8s.Update(ctx, d); err != nil {
			t.Fatal(err)
		}
		if out, err := kubectl(t, "", "-n", operatorNamespace, "rollout", "status", "deployment/"+operatorDeployment, "--timeout=3m"); err != nil {
			t.Fatalf("the operator did not roll out: %v\n%s", err, out)
		}
		// A replica of the old arguments still serves webhooks while it terminates (its
		// shutdown delay): wait until none is left.
		want := strings.Join(c.Args, " ")
		testenv.Eventually(t, 2*time.Minute, func(ctx context.Context) (bool, string) {
			pods := &corev1.PodList{}
			if err := k8s.List(ctx, pods, client.InNamespace(operatorNamespace), client.MatchingLabels{"control-plane": "controller-manager"}); err != nil {
				return false, err.Error()
			}
			for _, pod := range pods.Items {
				if got := strings.Join(pod.Spec.Containers[0].Args, " "); got != want {
					return false, fmt.Sprintf("operator pod %s still runs with %s", pod.Name, got)
				}
			}
			return len(pods.Items) > 0, "no operator pod"
		})
	}
	withoutMode := func(args []string) []string {
		return slices.DeleteFunc(slices.Clone(args), func(a string) bool { return strings.HasPrefix(a, "--capture-mode=") })
	}
	edit(func(args []string) []string { return append(withoutMode(args), "--capture-mode="+mode) })
	t.Cleanup(func() { edit(withoutMode) })
}

// demoWithProbes is the demo app with a readiness probe (HTTP) and a liveness probe (TCP) on
// its app port, which capture would take from the kubelet unless they are rewritten.
func demoWithProbes(ns, name string, replicas int32) *appsv1.Deployment {
	d := demoDeployment(ns, name, replicas)
	c := &d.Spec.Template.Spec.Containers[0]
	c.LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}}, PeriodSeconds: 2}
	return d
}

// plaintextFrom runs `meshlift-demo load` in a pod outside the mesh against url for d and
// returns its summary.
func plaintextFrom(t *testing.T, ns, name, url string, d time.Duration) loadSummary {
	t.Helper()
	pod := loadPod(ns, name, url, d)
	pod.Labels = map[string]string{"app": "outsider"} // no MeshService selects it
	pod.Spec.Containers[0].Args = []string{"load", "--target=" + url, "--mode=newconn", "--rps=20", "--duration=" + d.String(), "--concurrency=2", "--output=json"}
	if err := k8s.Create(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	return loadResult(t, pod)
}

// TestCaptureMakesStrictMTLSHoldAndServiceNamesMeshed runs the demo app under STRICT and PERMISSIVE mTLS with
// capture on (the CNI plugin installed by its DaemonSet, the operator with --capture-mode=cni):
// a client outside the mesh that calls a STRICT pod's app port directly is refused, one that
// calls a PERMISSIVE pod's app port is served through the proxy; the kubelet's probes, rewritten
// to the proxy's app-probe port, keep the pods Ready; a meshed client gets its SPIFFE ID
// vouched for by the server's proxy; and a hot upgrade of the PERMISSIVE pod under plaintext
// load on its captured port drops nothing.
func TestCaptureMakesStrictMTLSHoldAndServiceNamesMeshed(t *testing.T) {
	installCNI(t)
	setCaptureMode(t, "cni")
	ctx := context.Background()
	ns := createNamespace(t, "e2e-capture")
	from, to := releasedVersion(ns+"-v1", "1.0.0"), releasedVersion(ns+"-v2", "2.0.0")
	for _, v := range []*meshv1alpha1.SidecarVersion{from, to} {
		if err := k8s.Create(ctx, v); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k8s.Delete(context.Background(), v) })
	}
	strict := gen.MeshService("strict", gen.PinVersion(from.Name), gen.MeshServiceMeta(gen.SetNamespace(ns)))
	permissive := gen.MeshService("permissive", gen.PinVersion(from.Name), gen.MeshServiceMeta(gen.SetNamespace(ns)))
	permissive.Spec.MTLS.Mode = meshv1alpha1.MTLSPermissive
	caller := gen.MeshService("client", gen.PinVersion(from.Name), gen.MeshServiceMeta(gen.SetNamespace(ns)))
	caller.Spec.Ports = nil
	caller.Spec.Upstreams = []meshv1alpha1.Upstream{{MeshService: "strict", Port: "http", LocalPort: 18080}}
	for _, ms := range []*meshv1alpha1.MeshService{strict, permissive, caller} {
		if err := k8s.Create(ctx, ms); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"strict", "permissive"} {
		if err := k8s.Create(ctx, demoWithProbes(ns, name, 1)); err != nil {
			t.Fatal(err)
		}
	}
	waitForMeshedPods(t, ns, "strict", 1)
	waitForMeshedPods(t, ns, "permissive", 1)
	podOf := func(app string) corev1.Pod {
		pods, err := runningPods(ctx, ns, app)
		if err != nil || len(pods) != 1 {
			t.Fatalf("%d running %s pods: %v", len(pods), app, err)
		}
		return pods[0]
	}
	strictPod, permissivePod := podOf("strict"), podOf("permissive")
	for _, pod := range []corev1.Pod{strictPod, permissivePod} {
		if pod.Annotations[capture.AnnotationCapture] == "" {
			t.Errorf("pod %s is not marked for capture: %v", pod.Name, pod.Annotations)
		}
		app := pod.Spec.Containers[0]
		if p := app.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Port.IntValue() != proxyconfig.AppProbePort {
			t.Errorf("pod %s: the readiness probe was not rewritten to the proxy: %+v", pod.Name, p)
		}
		if p := app.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Port.IntValue() != proxyconfig.AppProbePort {
			t.Errorf("pod %s: the TCP liveness probe was not rewritten to the proxy: %+v", pod.Name, p)
		}
	}

	// Outside the mesh, the app ports: STRICT refuses plaintext, PERMISSIVE serves it.
	refused := plaintextFrom(t, ns, "outsider-strict", fmt.Sprintf("http://%s:8080/", strictPod.Status.PodIP), 5*time.Second)
	t.Logf("plaintext to the STRICT pod's app port: %d sent, %d ok, %d failed %v", refused.Sent, refused.OK, refused.Failed, refused.Failures)
	if refused.Sent == 0 || refused.OK != 0 {
		t.Errorf("a client outside the mesh reached the STRICT pod's app port around its proxy: %+v", refused)
	}
	served := plaintextFrom(t, ns, "outsider-permissive", fmt.Sprintf("http://%s:8080/", permissivePod.Status.PodIP), 5*time.Second)
	if served.Sent == 0 || served.Failed != 0 {
		t.Errorf("plaintext to the PERMISSIVE pod's app port failed: %+v", served)
	}

	// A meshed client through its proxy: the server's proxy tells the app who called.
	callerPod := loadPod(ns, "client", "http://127.0.0.1:18080/", 5*time.Minute)
	if err := k8s.Create(ctx, callerPod); err != nil {
		t.Fatal(err)
	}
	waitForMeshedPods(t, ns, "client", 1)
	var answer struct {
		PeerIdentity string `json:"peerIdentity"`
	}
	testenv.Eventually(t, time.Minute, func(context.Context) (bool, string) {
		out, err := kubectl(t, "", "-n", ns, "exec", "client", "-c", "load", "--", "/meshlift-demo", "get", "http://127.0.0.1:18080/")
		if err != nil {
			return false, fmt.Sprintf("%v: %s", err, out)
		}
		_, body, _ := strings.Cut(out, "\n")
		return json.Unmarshal([]byte(body), &answer) == nil, out
	})
	if want := fmt.Sprintf("spiffe://cluster.local/ns/%s/sa/default", ns); answer.PeerIdentity != want {
		t.Errorf("the STRICT app saw the caller as %q, want %q", answer.PeerIdentity, want)
	}

	// A hot upgrade of the PERMISSIVE pod while plaintext load arrives on its captured port.
	loader := plaintextPod(ns, "outsider-upgrade", fmt.Sprintf("http://%s:8080/", permissivePod.Status.PodIP), 60*time.Second)
	if err := k8s.Create(ctx, loader); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Second)
	plan := gen.UpgradePlan("to-v2", to.Name, []string{"permissive"}, gen.UpgradePlanMeta(gen.SetNamespace(ns)))
	if err := k8s.Create(ctx, plan); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 3*time.Minute, func(ctx context.Context) (bool, string) {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(plan), plan); err != nil {
			return false, err.Error()
		}
		return plan.Status.Phase == meshv1alpha1.PhaseSucceeded, fmt.Sprintf("plan %s %+v", plan.Status.Phase, plan.Status.Counts)
	})
	upgraded := loadResult(t, loader)
	t.Logf("plaintext load on the captured port during the hot upgrade: %d sent, %d failed %v", upgraded.Sent, upgraded.Failed, upgraded.Failures)
	if upgraded.Sent == 0 || upgraded.Failed != 0 {
		t.Errorf("requests on the captured port failed during the hot upgrade: %+v", upgraded)
	}
	after := podOf("permissive")
	if after.Name != permissivePod.Name || sidecar.Version(&after) != to.Name {
		t.Errorf("after the plan: pod %s runs %s (want %s still, on %s)", after.Name, sidecar.Version(&after), permissivePod.Name, to.Name)
	}

	outboundCapture(t, ns, to)
}

// outboundCapture is the outbound half of the capture test (the operator marks pods for outbound
// capture by default): a meshed client that calls the STRICT app by its Service name, with no
// upstream of its own for it, reaches it over mTLS (the app sees the client's SPIFFE ID), and a
// hot upgrade of the client and the server under that load loses nothing.
func outboundCapture(t *testing.T, ns string, to *meshv1alpha1.SidecarVersion) {
	ctx := context.Background()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "strict", Namespace: ns},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "strict"}, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}
	if err := k8s.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	// The local cluster runs no DNS server: the client pod resolves the Service's names to its
	// ClusterIP through /etc/hosts, which is what cluster DNS would answer. Capture acts on the
	// ClusterIP the name resolves to; DNS itself (port 53) is never captured.
	name := "strict." + ns + ".svc.cluster.local"
	url := "http://" + name + "/"
	withName := func(pod *corev1.Pod) *corev1.Pod {
		pod.Spec.HostAliases = []corev1.HostAlias{{IP: svc.Spec.ClusterIP, Hostnames: []string{name, "strict." + ns, "strict"}}}
		return pod
	}
	callerPod := withName(loadPod(ns, "svc-client", url, 150*time.Second))
	if err := k8s.Create(ctx, callerPod); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 2*time.Minute, func(ctx context.Context) (bool, string) {
		pod := &corev1.Pod{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(callerPod), pod); err != nil {
			return false, err.Error()
		}
		return pod.Status.Phase == corev1.PodRunning, fmt.Sprintf("pod svc-client is %s", pod.Status.Phase)
	})
	pod := &corev1.Pod{}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(callerPod), pod); err != nil {
		t.Fatal(err)
	}
	if got := pod.Annotations[capture.AnnotationCapture]; !strings.Contains(got, capture.CaptureOutbound) {
		t.Fatalf("the meshed client is not marked for outbound capture: %s=%q", capture.AnnotationCapture, got)
	}
	var answer struct {
		PeerIdentity string `json:"peerIdentity"`
	}
	testenv.Eventually(t, time.Minute, func(context.Context) (bool, string) {
		out, err := kubectl(t, "", "-n", ns, "exec", "svc-client", "-c", "load", "--", "/meshlift-demo", "get", url)
		if err != nil {
			return false, fmt.Sprintf("%v: %s", err, out)
		}
		_, body, _ := strings.Cut(out, "\n")
		return json.Unmarshal([]byte(body), &answer) == nil, out
	})
	if want := fmt.Sprintf("spiffe://cluster.local/ns/%s/sa/default", ns); answer.PeerIdentity != want {
		t.Errorf("the STRICT app, called by its Service name, saw the caller as %q, want %q (over mTLS from the client's proxy)", answer.PeerIdentity, want)
	}

	// Hot-upgrade the server and every client pod while the load runs through the Service name.
	plan := gen.UpgradePlan("both-to-v2", to.Name, []string{"strict", "client"}, gen.UpgradePlanMeta(gen.SetNamespace(ns)))
	if err := k8s.Create(ctx, plan); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 4*time.Minute, func(ctx context.Context) (bool, string) {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(plan), plan); err != nil {
			return false, err.Error()
		}
		return plan.Status.Phase == meshv1alpha1.PhaseSucceeded, fmt.Sprintf("plan %s %+v", plan.Status.Phase, plan.Status.Counts)
	})
	result := loadResult(t, callerPod)
	t.Logf("load through the Service name during the hot upgrade of client and server: %d sent, %d failed %v", result.Sent, result.Failed, result.Failures)
	if result.Sent == 0 || result.Failed != 0 {
		t.Errorf("requests through captured outbound connections failed during the hot upgrade: %+v", result)
		logProxyFailures(t, ns)
	}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(callerPod), pod); err != nil {
		t.Fatal(err)
	}
	if v := sidecar.Version(pod); v != to.Name {
		t.Errorf("pod svc-client runs %s after the plan, want %s", v, to.Name)
	}
}

// plaintextPod is a pod outside the mesh that sends plaintext load to url for d.
func plaintextPod(ns, name, url string, d time.Duration) *corev1.Pod {
	pod := loadPod(ns, name, url, d)
	pod.Labels = map[string]string{"app": "outsider"}
	pod.ObjectMeta = metav1.ObjectMeta{Name: name, Namespace: ns, Labels: pod.Labels}
	pod.Spec.TerminationGracePeriodSeconds = ptr.To[int64](5)
	return pod
}

// logProxyFailures logs what the proxies of every pod of ns said about failed requests and
// handoffs (both slots, this and the previous run of each container), to tell a client proxy's
// 503 from a server's.
func logProxyFailures(t *testing.T, ns string) {
	t.Helper()
	pods := &corev1.PodList{}
	if err := k8s.List(context.Background(), pods, client.InNamespace(ns)); err != nil {
		t.Log(err)
		return
	}
	for _, pod := range pods.Items {
		for _, container := range []string{sidecar.SlotContainerName(1), sidecar.SlotContainerName(2)} {
			for _, previous := range []string{"--previous=true", "--previous=false"} {
				out, err := kubectl(t, "", "-n", ns, "logs", pod.Name, "-c", container, previous)
				if err != nil {
					continue
				}
				for _, line := range strings.Split(out, "\n") {
					if strings.Contains(line, "Request failed") || strings.Contains(line, "Took over") || strings.Contains(line, "took over") ||
						strings.Contains(line, "Applied endpoints") || strings.Contains(line, "Stopped accepting") {
						t.Logf("%s/%s %s: %s", pod.Name, container, previous, line)
					}
				}
			}
		}
	}
}
