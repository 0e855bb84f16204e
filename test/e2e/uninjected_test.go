//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/controllers"
	"github.com/meshlift/meshlift/internal/capture"
	"github.com/meshlift/meshlift/internal/sidecar"
	"github.com/meshlift/meshlift/internal/testutil/gen"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

// webhookService is the Service the API server calls the injector through (config/webhook).
const webhookService = "meshlift-webhook-service"

// TestAPodCreatedWhileTheOperatorIsDownIsIsolatedThenRepaired is issue 14: the injector fails
// open, so a pod created while every operator replica is down is admitted without its sidecar.
// With capture on (meshlift-cni installed, --capture-mode=cni), meshlift-cni isolates such a pod
// when a STRICT MeshService selects it: a client outside the mesh cannot reach its app port, and
// its readiness probe fails, so it never becomes Ready (nor a Service endpoint). Once the operator
// is back, its repair controller evicts the pod, and the Deployment's replacement comes through
// the injector and becomes Ready with its sidecar.
func TestAPodCreatedWhileTheOperatorIsDownIsIsolatedThenRepaired(t *testing.T) {
	installCNI(t)
	setCaptureMode(t, "cni")
	ctx := context.Background()
	ns := createNamespace(t, "e2e-uninjected")
	version := releasedVersion(ns+"-v1", "1.0.0")
	if err := k8s.Create(ctx, version); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), version) })
	// STRICT: the CRD's default mode.
	ms := gen.MeshService("web", gen.PinVersion(version.Name), gen.MeshServiceMeta(gen.SetNamespace(ns)))
	if err := k8s.Create(ctx, ms); err != nil {
		t.Fatal(err)
	}
	if ms.Spec.MTLS.Mode != meshv1alpha1.MTLSStrict {
		t.Fatalf("MeshService web has mTLS mode %q, want STRICT", ms.Spec.MTLS.Mode)
	}

	// Every operator replica down, and the API server with no injector endpoint to call.
	// Registered after setCaptureMode's cleanup, so it runs first: the operator is back before its
	// arguments are put back.
	operator := client.ObjectKey{Namespace: operatorNamespace, Name: operatorDeployment}
	deploy := &appsv1.Deployment{}
	if err := k8s.Get(ctx, operator, deploy); err != nil {
		t.Fatal(err)
	}
	replicas := ptr.Deref(deploy.Spec.Replicas, 1)
	restored := false
	t.Cleanup(func() {
		if !restored {
			scaleOperator(t, replicas)
			waitAvailable(t, operator, replicas)
			waitForTheInjector(t)
		}
	})
	scaleOperator(t, 0)
	waitForNoOperatorPod(t)
	waitForNoWebhookEndpoint(t)

	// A Deployment created now: its pod is admitted without the sidecar.
	if err := k8s.Create(ctx, demoDeployment(ns, "web", 1)); err != nil {
		t.Fatal(err)
	}
	var original corev1.Pod
	testenv.Eventually(t, 3*time.Minute, func(ctx context.Context) (bool, string) {
		pods := &corev1.PodList{}
		if err := k8s.List(ctx, pods, client.InNamespace(ns), client.MatchingLabels{"app": "web"}); err != nil {
			return false, err.Error()
		}
		if len(pods.Items) != 1 {
			return false, fmt.Sprintf("%d web pods", len(pods.Items))
		}
		original = pods.Items[0]
		return original.Status.Phase == corev1.PodRunning && original.Status.PodIP != "",
			fmt.Sprintf("pod %s is %s (IP %q)", original.Name, original.Status.Phase, original.Status.PodIP)
	})
	if sidecar.IsInjected(&original) || capture.Marked(original.Annotations) {
		t.Fatalf("pod %s was injected or marked though the operator is down: %v", original.Name, original.Annotations)
	}

	// Isolated: plaintext from outside the mesh is refused, and the pod does not become Ready.
	refused := plaintextFrom(t, ns, "outsider-uninjected", fmt.Sprintf("http://%s:8080/", original.Status.PodIP), 5*time.Second)
	t.Logf("plaintext to the uninjected pod's app port: %d sent, %d ok, %d failed %v", refused.Sent, refused.OK, refused.Failed, refused.Failures)
	if refused.Sent == 0 || refused.OK != 0 {
		t.Errorf("a client outside the mesh reached the app port of a pod without its sidecar that a STRICT MeshService selects: %+v", refused)
	}
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(time.Second) {
		pod := &corev1.Pod{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(&original), pod); err != nil {
			t.Fatal(err)
		}
		if sidecar.PodReady(pod) {
			t.Fatalf("the isolated pod %s became Ready: its readiness probe reached the app around the isolation", pod.Name)
		}
	}

	// The operator back: the pod is evicted and its replacement is injected and Ready.
	scaleOperator(t, replicas)
	restored = true
	waitAvailable(t, operator, replicas)
	testenv.Eventually(t, 5*time.Minute, func(ctx context.Context) (bool, string) {
		err := k8s.Get(ctx, client.ObjectKeyFromObject(&original), &corev1.Pod{})
		if err == nil {
			return false, fmt.Sprintf("pod %s was not evicted", original.Name)
		}
		return apierrors.IsNotFound(err), err.Error()
	})
	waitForMeshedPods(t, ns, "web", 1)
	pods, err := runningPods(ctx, ns, "web")
	if err != nil || len(pods) != 1 {
		t.Fatalf("%d running web pods: %v", len(pods), err)
	}
	if replacement := pods[0]; !sidecar.IsInjected(&replacement) || !capture.Marked(replacement.Annotations) {
		t.Errorf("the replacement pod %s is not injected and marked for capture: %v", replacement.Name, replacement.Annotations)
	}
	events := &eventsv1.EventList{}
	if err := k8s.List(ctx, events, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range events.Items {
		if e.Reason == controllers.EventReasonNotInjected && e.Regarding.Kind == "Pod" && e.Regarding.Name == original.Name {
			found = true
			t.Logf("event on the evicted pod: %s", e.Note)
		}
	}
	if !found {
		t.Errorf("no %s event on the evicted pod %s", controllers.EventReasonNotInjected, original.Name)
	}
	// The tests after this one create pods: they must find the injector reachable.
	waitForTheInjector(t)
}

// waitForNoWebhookEndpoint waits until the injector's Service has no ready endpoint, so the API
// server's calls to the webhook fail (and it admits pods as they are: failurePolicy Ignore).
func waitForNoWebhookEndpoint(t testing.TB) {
	t.Helper()
	testenv.Eventually(t, 2*time.Minute, func(ctx context.Context) (bool, string) {
		slices := &discoveryv1.EndpointSliceList{}
		if err := k8s.List(ctx, slices, client.InNamespace(operatorNamespace),
			client.MatchingLabels{discoveryv1.LabelServiceName: webhookService}); err != nil {
			return false, err.Error()
		}
		var ready []string
		for _, slice := range slices.Items {
			for _, e := range slice.Endpoints {
				if ptr.Deref(e.Conditions.Ready, false) {
					ready = append(ready, strings.Join(e.Addresses, ","))
				}
			}
		}
		return len(ready) == 0, fmt.Sprintf("Service %s still has ready endpoints %v", webhookService, ready)
	})
}
