package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/controllers"
	"github.com/meshlift/meshlift/internal/podcache"
	"github.com/meshlift/meshlift/internal/testutil/gen"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

// The suite's manager runs the controllers as controllers.Setup wires them with
// --repair-uninjected-pods off (its Options leave RepairUninjectedPods unset); this test checks
// that, then starts a manager of its own with the repair controller (controllers.SetupRepair, as
// Setup registers it when the flag is on). envtest runs no kubelet, no ReplicaSet controller and
// no garbage collector: an evicted pod is simply deleted (it is on no node) and nothing
// recreates it.
func TestRepairOfPodsCreatedWithoutTheirSidecar(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t, "repair")
	createVersion(t, gen.SidecarVersion("repair-v1", "1.0.0"))
	inNs := gen.MeshServiceMeta(gen.SetNamespace(ns))
	strict := gen.MeshService("web", gen.PinVersion("repair-v1"), inNs)
	permissive := gen.MeshService("legacy", gen.PinVersion("repair-v1"), inNs,
		func(ms *meshv1alpha1.MeshService) { ms.Spec.MTLS.Mode = meshv1alpha1.MTLSPermissive })
	create(t, strict)
	create(t, permissive)
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(strict), strict); err != nil || strict.Spec.MTLS.Mode != meshv1alpha1.MTLSStrict {
		t.Fatalf("MeshService web: mode %q (%v), want the CRD's default STRICT", strict.Spec.MTLS.Mode, err)
	}

	t.Run("with --repair-uninjected-pods off, a pod without its sidecar is left alone", func(t *testing.T) {
		pod := ownedPod(t, ns, "web-off", "web")
		consistently(t, 3*time.Second, func(ctx context.Context) (bool, string) {
			return exists(ctx, t, pod) && !hasNotInjectedEvent(ctx, t, ns, "Pod", pod.Name), "the pod was evicted or reported"
		})
		if err := env.Client.Delete(ctx, pod); err != nil {
			t.Fatal(err)
		}
	})

	startRepairManager(t)

	t.Run("evicts a pod of a ReplicaSet that a STRICT MeshService selects and records why", func(t *testing.T) {
		pod := ownedPod(t, ns, "web-1", "web")
		testenv.Eventually(t, 30*time.Second, func(ctx context.Context) (bool, string) {
			return !exists(ctx, t, pod), "the pod was not evicted"
		})
		testenv.Eventually(t, 30*time.Second, func(ctx context.Context) (bool, string) {
			return hasNotInjectedEvent(ctx, t, ns, "Pod", pod.Name) && hasNotInjectedEvent(ctx, t, ns, "MeshService", strict.Name),
				"no NotInjected event on the pod and on MeshService web"
		})
		note := notInjectedNote(ctx, t, ns, "Pod", pod.Name)
		for _, want := range []string{"created while the injector was unavailable", "MeshService web", "ReplicaSet web-1", "recreates it with the sidecar"} {
			if !strings.Contains(note, want) {
				t.Errorf("the event %q does not say %q", note, want)
			}
		}
	})

	t.Run("only records an event for a pod without a controller", func(t *testing.T) {
		pod := gen.Pod("web-bare", gen.PodMeta(gen.SetNamespace(ns), gen.SetLabels("app", "web")))
		create(t, pod)
		testenv.Eventually(t, 30*time.Second, func(ctx context.Context) (bool, string) {
			return hasNotInjectedEvent(ctx, t, ns, "Pod", pod.Name), "no NotInjected event on the pod"
		})
		if note := notInjectedNote(ctx, t, ns, "Pod", pod.Name); !strings.Contains(note, "no controller") {
			t.Errorf("the event %q does not say the pod has no controller", note)
		}
		consistently(t, 2*time.Second, func(ctx context.Context) (bool, string) {
			return exists(ctx, t, pod), "the pod without a controller was deleted"
		})
	})

	t.Run("only records an event for a pod the injector would not inject either", func(t *testing.T) {
		pod := ownedPod(t, ns, "web-conflict", "web", func(p *corev1.Pod) {
			p.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 15000}}
		})
		testenv.Eventually(t, 30*time.Second, func(ctx context.Context) (bool, string) {
			return hasNotInjectedEvent(ctx, t, ns, "Pod", pod.Name), "no NotInjected event on the pod"
		})
		if note := notInjectedNote(ctx, t, ns, "Pod", pod.Name); !strings.Contains(note, "would not inject it") || !strings.Contains(note, "15000") {
			t.Errorf("the event %q does not say why the injector would skip the pod", note)
		}
		consistently(t, 2*time.Second, func(ctx context.Context) (bool, string) {
			return exists(ctx, t, pod), "a pod that would come back without its sidecar was evicted"
		})
	})

	t.Run("leaves alone pods that a PERMISSIVE MeshService selects, injected pods and pods that opted out", func(t *testing.T) {
		pods := []*corev1.Pod{
			ownedPod(t, ns, "legacy-1", "legacy"),
			ownedPod(t, ns, "web-injected", "web", gen.Injected("web", "repair-v1")),
			ownedPod(t, ns, "web-opted-out", "web", gen.PodMeta(gen.SetAnnotations(meshv1alpha1.AnnotationInject, "false"))),
		}
		consistently(t, 3*time.Second, func(ctx context.Context) (bool, string) {
			for _, pod := range pods {
				if !exists(ctx, t, pod) || hasNotInjectedEvent(ctx, t, ns, "Pod", pod.Name) {
					return false, fmt.Sprintf("pod %s was evicted or reported", pod.Name)
				}
			}
			return true, ""
		})
	})

	t.Run("leaves alone a pod that predates the STRICT MeshService that selects it", func(t *testing.T) {
		pod := ownedPod(t, ns, "late-1", "late")
		time.Sleep(1100 * time.Millisecond) // creation times have whole seconds
		create(t, gen.MeshService("late", gen.PinVersion("repair-v1"), inNs))
		consistently(t, 3*time.Second, func(ctx context.Context) (bool, string) {
			return exists(ctx, t, pod) && !hasNotInjectedEvent(ctx, t, ns, "Pod", pod.Name), "the pod was evicted or reported"
		})
	})
}

// startRepairManager runs the repair controller in a manager of its own until the test ends.
func startRepairManager(t *testing.T) {
	t.Helper()
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:                 env.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  podcache.CacheOptions(),
		// The suite's manager registered controllers of other names in this process.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := controllers.SetupRepair(mgr, controllers.RepairOptions{OperatorNamespace: "meshlift-system", EvictionsPerSecond: 50, EvictionBurst: 50}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("the repair manager stopped with an error: %v", err)
		}
	})
}

// ownedPod creates a pod labelled app=<app> whose controller is a ReplicaSet of the pod's name
// (each pod its own owner, so the per-owner backoff never delays one for another).
func ownedPod(t *testing.T, ns, name, app string, opts ...gen.PodOption) *corev1.Pod {
	t.Helper()
	labels := map[string]string{"app": app}
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.ReplicaSetSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "meshlift/demo:1"}}},
			},
		},
	}
	create(t, rs)
	pod := gen.Pod(name, append([]gen.PodOption{gen.PodMeta(gen.SetNamespace(ns), gen.SetLabels("app", app)), func(p *corev1.Pod) {
		p.OwnerReferences = []metav1.OwnerReference{{
			APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID, Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
		}}
	}}, opts...)...)
	create(t, pod)
	return pod
}

func exists(ctx context.Context, t *testing.T, pod *corev1.Pod) bool {
	t.Helper()
	err := env.Client.Get(ctx, client.ObjectKeyFromObject(pod), &corev1.Pod{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	return err == nil
}

func hasNotInjectedEvent(ctx context.Context, t *testing.T, ns, kind, name string) bool {
	t.Helper()
	return notInjectedNote(ctx, t, ns, kind, name) != ""
}

// notInjectedNote is the note of the NotInjected event regarding the object, or "".
func notInjectedNote(ctx context.Context, t *testing.T, ns, kind, name string) string {
	t.Helper()
	events := &eventsv1.EventList{}
	if err := env.Client.List(ctx, events, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, e := range events.Items {
		if e.Reason == controllers.EventReasonNotInjected && e.Regarding.Kind == kind && e.Regarding.Name == name {
			return e.Note
		}
	}
	return ""
}

// consistently fails the test when check fails at any time during d.
func consistently(t *testing.T, d time.Duration, check func(ctx context.Context) (bool, string)) {
	t.Helper()
	ctx := context.Background()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if ok, msg := check(ctx); !ok {
			t.Fatal(msg)
		}
	}
}
