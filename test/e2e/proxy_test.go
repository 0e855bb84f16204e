//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/sidecar"
	"github.com/meshlift/meshlift/internal/testutil/gen"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

// proxyVersion runs the real meshlift-proxy in the active slot and meshlift-idle in the idle one.
func proxyVersion(name string) *meshv1alpha1.SidecarVersion {
	return gen.SidecarVersion(name, "1.0.0", func(v *meshv1alpha1.SidecarVersion) {
		v.Spec.Image, v.Spec.IdleImage = "meshlift/meshlift-proxy:dev", "meshlift/meshlift-idle:dev"
	})
}

// TestMeshedPodsTalkOverMTLS runs the demo app with the real meshlift-proxy injected, and a
// client pod whose app calls it through its own proxy's localhost listener: certificates come
// from the operator's control plane (SDS, the pods' projected tokens verified by the API server),
// endpoints from EDS, and every request crosses two proxies over mTLS.
func TestMeshedPodsTalkOverMTLS(t *testing.T) {
	ctx := context.Background()
	ns := createNamespace(t, "e2e-mtls")
	version := proxyVersion("e2e-mtls-proxy")
	if err := k8s.Create(ctx, version); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), version) })

	createDemoMeshServices(t, ns, version.Name)

	if err := k8s.Create(ctx, demoDeployment(ns, "demo", 2)); err != nil {
		t.Fatal(err)
	}
	waitForMeshedPods(t, ns, "demo", 2)

	// The client: a bounded load through its proxy's localhost listener. The pod succeeds only if
	// every request got its echo.
	loader := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "client", Namespace: ns, Labels: map[string]string{"app": "client"}},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: ptr.To[int64](5),
			Containers: []corev1.Container{{
				Name: "load", Image: "meshlift/meshlift-demo:dev", ImagePullPolicy: corev1.PullIfNotPresent,
				Args: []string{"load", "--target=http://127.0.0.1:18080/", "--mode=keepalive", "--rps=50", "--duration=10s", "--concurrency=4"},
			}},
		},
	}
	if err := k8s.Create(ctx, loader); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 3*time.Minute, func(ctx context.Context) (bool, string) {
		pod := &corev1.Pod{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(loader), pod); err != nil {
			return false, err.Error()
		}
		for _, s := range pod.Status.ContainerStatuses {
			if s.Name == "load" && s.State.Terminated != nil {
				if s.State.Terminated.ExitCode != 0 {
					t.Fatalf("the load through two proxies failed (exit %d): %s", s.State.Terminated.ExitCode, s.State.Terminated.Message)
				}
				return true, ""
			}
		}
		return false, fmt.Sprintf("the client pod is %s", pod.Status.Phase)
	})
	// Both ends counted mTLS requests; no handshake failed.
	pods, err := runningPods(ctx, ns, "demo")
	if err != nil {
		t.Fatal(err)
	}
	served := 0
	for _, pod := range pods {
		// The real proxy is active in slot 1; slot 2 runs the idle image; nothing restarted.
		if sidecar.ActiveSlot(&pod) != 1 || sidecar.SlotImage(&pod, 1) != version.Spec.Image || sidecar.SlotImage(&pod, 2) != version.Spec.IdleImage {
			t.Errorf("pod %s: active slot %d, slot images %q and %q", pod.Name, sidecar.ActiveSlot(&pod), sidecar.SlotImage(&pod, 1), sidecar.SlotImage(&pod, 2))
		}
		for _, status := range append(pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses...) {
			if status.RestartCount != 0 || status.State.Running == nil || !status.Ready {
				t.Errorf("pod %s: container %s: ready %v, running %v, %d restarts", pod.Name, status.Name, status.Ready, status.State.Running != nil, status.RestartCount)
			}
		}
		// /stats answers on the pod's loopback only: read it as docs/proxy.md says, through
		// kubectl port-forward; from the pod IP it is refused.
		if res, err := http.Get(fmt.Sprintf("http://%s:15000/stats", pod.Status.PodIP)); err != nil || res.StatusCode != http.StatusForbidden {
			t.Errorf("pod %s: /stats from the pod IP: %v %v, want 403 Forbidden", pod.Name, statusOf(res), err)
		}
		stats := string(get(t, "http://"+portForward(t, ns, pod.Name, 15000)+"/stats"))
		served += sumMetric(stats, "meshlift_proxy_requests_total{")
		if n := sumMetric(stats, "meshlift_proxy_tls_handshake_failures_total"); n != 0 {
			t.Errorf("pod %s: %d TLS handshakes failed", pod.Name, n)
		}
	}
	if served < 400 {
		t.Errorf("the demo proxies served %d requests, want the client's 500", served)
	}
}

// createDemoMeshServices creates the MeshServices demo (the echo app's port http) and client
// (which calls demo on 127.0.0.1:18080 through its proxy), both pinned to version, and waits
// until the namespace has the trust bundle the first proxy needs.
func createDemoMeshServices(t testing.TB, ns, version string) {
	t.Helper()
	ctx := context.Background()
	server := gen.MeshService("demo", gen.PinVersion(version), gen.MeshServiceMeta(gen.SetNamespace(ns)))
	caller := gen.MeshService("client", gen.PinVersion(version), gen.MeshServiceMeta(gen.SetNamespace(ns)))
	caller.Spec.Ports = nil
	caller.Spec.Upstreams = []meshv1alpha1.Upstream{{MeshService: "demo", Port: "http", LocalPort: 18080}}
	for _, ms := range []*meshv1alpha1.MeshService{server, caller} {
		if err := k8s.Create(ctx, ms); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, time.Minute, func(ctx context.Context) (bool, string) {
		cm := &corev1.ConfigMap{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: sidecar.CARootConfigMap}, cm); err != nil {
			return false, err.Error()
		}
		return cm.Data[sidecar.CARootKey] != "", "the trust bundle ConfigMap is empty"
	})
}

// waitForMeshedPods waits until want pods of app run with their active proxy ready.
func waitForMeshedPods(t testing.TB, ns, app string, want int) {
	t.Helper()
	testenv.Eventually(t, 3*time.Minute, func(ctx context.Context) (bool, string) {
		pods, err := runningPods(ctx, ns, app)
		if err != nil {
			return false, err.Error()
		}
		if len(pods) != want {
			return false, fmt.Sprintf("%d of %d %s pods run and are ready", len(pods), want, app)
		}
		for _, pod := range pods {
			if !sidecar.ProxyReady(&pod) {
				return false, fmt.Sprintf("pod %s: the active proxy is not ready", pod.Name)
			}
		}
		return true, ""
	})
}

// sumMetric adds the values of the Prometheus text lines that start with prefix.
func sumMetric(stats, prefix string) int {
	total := 0
	for _, line := range strings.Split(stats, "\n") {
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(line[strings.LastIndex(line, " ")+1:], &v); err == nil {
			total += int(v)
		}
	}
	return total
}

// statusOf is a response's status ("" for none), with its body closed.
func statusOf(res *http.Response) string {
	if res == nil {
		return ""
	}
	_ = res.Body.Close()
	return res.Status
}

// portForward runs `kubectl port-forward pod/<name> :<port>` until the test ends and returns the
// local address it forwards from.
func portForward(t testing.TB, ns, name string, port int) string {
	t.Helper()
	kubectl := os.Getenv("E2E_KUBECTL")
	if kubectl == "" {
		t.Fatal("E2E_KUBECTL is not set: run the suite with `make test-e2e`")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, kubectl, "port-forward", "-n", ns, "--address", "127.0.0.1", "pod/"+name, fmt.Sprintf(":%d", port))
	cmd.Env = append(os.Environ(), "KUBECONFIG="+os.Getenv("E2E_KUBECONFIG"))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
	// "Forwarding from 127.0.0.1:43121 -> 15000"
	lines := bufio.NewScanner(stdout)
	for lines.Scan() {
		if rest, ok := strings.CutPrefix(lines.Text(), "Forwarding from "); ok {
			addr, _, _ := strings.Cut(rest, " ")
			go func() { // keep reading so that kubectl never blocks on its output
				for lines.Scan() {
				}
			}()
			return addr
		}
	}
	t.Fatalf("kubectl port-forward pod/%s :%d printed no address: %s", name, port, stderr.String())
	return ""
}
