//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/sidecar"
	"github.com/meshlift/meshlift/internal/testutil/gen"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

func createNamespace(t testing.TB, prefix string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), ns) })
	return ns.Name
}

// demoDeployment runs the demo echo app built from cmd/meshlift-demo.
func demoDeployment(ns, name string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To[int64](5),
					Containers: []corev1.Container{{
						Name: "demo", Image: "meshlift/meshlift-demo:dev", ImagePullPolicy: corev1.PullIfNotPresent,
						Args:  []string{"serve", "--listen=:8080"},
						Env:   []corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}},
						Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}},
							PeriodSeconds: 1,
						},
					}},
				},
			},
		},
	}
}

// runningPods returns the pods of the app that run and are ready, as the kubelet reports them.
func runningPods(ctx context.Context, ns, app string) ([]corev1.Pod, error) {
	pods := &corev1.PodList{}
	if err := k8s.List(ctx, pods, client.InNamespace(ns), client.MatchingLabels{"app": app}); err != nil {
		return nil, err
	}
	var running []corev1.Pod
	for _, pod := range pods.Items {
		if pod.DeletionTimestamp == nil && pod.Status.Phase == corev1.PodRunning && sidecar.PodReady(&pod) {
			running = append(running, pod)
		}
	}
	return running, nil
}

// idleOnlyVersion runs the real meshlift-idle image in both slots: the injected layout (native
// sidecars, probes, volumes, the startup hold) on the real kubelet, without the data path
// (TestMeshedPodsTalkOverMTLS runs the real meshlift-proxy).
func idleOnlyVersion(name string) *meshv1alpha1.SidecarVersion {
	return gen.SidecarVersion(name, "1.0.0", func(v *meshv1alpha1.SidecarVersion) {
		v.Spec.Image, v.Spec.IdleImage = "meshlift/meshlift-idle:dev", "meshlift/meshlift-idle:dev"
	})
}

func TestInjectedPodsRunOnTheNodeAndTheMeshServiceCountsThem(t *testing.T) {
	ctx := context.Background()
	ns := createNamespace(t, "e2e-status")
	version := idleOnlyVersion(ns + "-proxy") // named after the namespace: unique even if an earlier run was cut off
	if err := k8s.Create(ctx, version); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), version) })
	ms := gen.MeshService("demo", gen.PinVersion(version.Name), gen.MeshServiceMeta(gen.SetNamespace(ns)))
	if err := k8s.Create(ctx, ms); err != nil {
		t.Fatal(err)
	}
	deploy := demoDeployment(ns, "demo", 3)
	if err := k8s.Create(ctx, deploy); err != nil {
		t.Fatal(err)
	}

	// The kubelet runs three injected pods; the MeshService reports exactly them.
	waitForPodsAndStatus(t, ns, version.Name, 3)
	pods, err := runningPods(ctx, ns, "demo")
	if err != nil {
		t.Fatal(err)
	}
	for _, pod := range pods {
		if sidecar.ActiveSlot(&pod) != 1 || sidecar.SlotImage(&pod, 2) != version.Spec.IdleImage {
			t.Errorf("pod %s: active slot %d, idle slot image %q", pod.Name, sidecar.ActiveSlot(&pod), sidecar.SlotImage(&pod, 2))
		}
		// Both slots run (as native sidecars) and are ready; nothing restarted.
		running := map[string]bool{}
		for _, status := range append(pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses...) {
			if status.RestartCount != 0 {
				t.Errorf("pod %s: container %s restarted %d times", pod.Name, status.Name, status.RestartCount)
			}
			running[status.Name] = status.State.Running != nil && status.Ready
		}
		for _, name := range []string{"meshlift-proxy-1", "meshlift-proxy-2", "demo"} {
			if !running[name] {
				t.Errorf("pod %s: container %s is not running and ready", pod.Name, name)
			}
		}
	}

	// The pods serve: call each one on its pod IP, and the Service through kube-proxy.
	for _, pod := range pods {
		body := get(t, "http://"+net.JoinHostPort(pod.Status.PodIP, "8080")+"/hello")
		var echo struct{ Name, Path string }
		if err := json.Unmarshal(body, &echo); err != nil || echo.Name != pod.Name || echo.Path != "/hello" {
			t.Errorf("pod %s answered %s (%v), want its own name and the path", pod.Name, body, err)
		}
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: ns},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "demo"}, Ports: []corev1.ServicePort{{Port: 8080, TargetPort: intstr.FromInt32(8080)}}},
	}
	if err := k8s.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, time.Minute, func(ctx context.Context) (bool, string) {
		_, err := tryGet("http://" + net.JoinHostPort(svc.Spec.ClusterIP, "8080") + "/healthz")
		if err != nil {
			return false, err.Error()
		}
		return true, ""
	})

	// Scale down: the status follows the pods that really remain.
	if err := k8s.Patch(ctx, deploy, client.RawPatch("application/merge-patch+json", []byte(`{"spec":{"replicas":1}}`))); err != nil {
		t.Fatal(err)
	}
	waitForPodsAndStatus(t, ns, version.Name, 1)
}

// waitForPodsAndStatus waits until want demo pods run and the MeshService's status counts exactly
// those pods, all injected with its pinned version.
func waitForPodsAndStatus(t *testing.T, ns, version string, want int) {
	t.Helper()
	testenv.Eventually(t, 3*time.Minute, func(ctx context.Context) (bool, string) {
		pods, err := runningPods(ctx, ns, "demo")
		if err != nil {
			return false, err.Error()
		}
		all := &corev1.PodList{}
		if err := k8s.List(ctx, all, client.InNamespace(ns), client.MatchingLabels{"app": "demo"}); err != nil {
			return false, err.Error()
		}
		if len(pods) != want || len(all.Items) != want {
			return false, fmt.Sprintf("%d pods, %d running and ready; want %d", len(all.Items), len(pods), want)
		}
		ms := &meshv1alpha1.MeshService{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "demo"}, ms); err != nil {
			return false, err.Error()
		}
		p := ms.Status.Pods
		if p.Matched != int32(want) || p.Ready != int32(want) || p.Injected != int32(want) ||
			ms.Status.CurrentVersion != version || ms.Status.ObservedGeneration != ms.Generation {
			return false, fmt.Sprintf("MeshService status %+v", ms.Status)
		}
		return true, ""
	})
}

func get(t *testing.T, url string) []byte {
	t.Helper()
	body, err := tryGet(url)
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// tryGet makes one request on a new connection, so a poll never reuses a connection made
// before the Service was programmed.
func tryGet(url string) ([]byte, error) {
	client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	return body, nil
}
