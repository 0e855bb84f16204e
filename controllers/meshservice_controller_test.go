package controllers_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/testutil/gen"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
	"github.com/meshlift/meshlift/internal/versions"
)

const timeout = 20 * time.Second

func create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := env.Client.Create(context.Background(), obj); err != nil {
		t.Fatalf("failed to create %T %s: %v", obj, obj.GetName(), err)
	}
}

// createVersion creates a cluster-scoped SidecarVersion and deletes it after the test, so
// default claims never leak between tests.
func createVersion(t *testing.T, sv *meshv1alpha1.SidecarVersion) {
	t.Helper()
	create(t, sv)
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), sv) })
}

// createPod creates a pod and gives it a status, as a kubelet would.
func createPod(t *testing.T, pod *corev1.Pod, status func(*corev1.Pod) gen.PodStatusOption) {
	t.Helper()
	create(t, pod)
	if status == nil {
		return
	}
	setPodStatus(t, pod, status)
}

// setPodStatus applies a status option with a fresh read, retrying when a controller wrote the
// pod's status in between.
func setPodStatus(t *testing.T, pod *corev1.Pod, status func(*corev1.Pod) gen.PodStatusOption) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(pod), pod); err != nil {
			return err
		}
		status(pod)(&pod.Status)
		return env.Client.Status().Update(context.Background(), pod)
	})
	if err != nil {
		t.Fatalf("failed to set status of pod %s: %v", pod.Name, err)
	}
}

func update[T client.Object](t *testing.T, obj T, change func(T)) {
	t.Helper()
	testenv.Eventually(t, timeout, func(ctx context.Context) (bool, string) {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return false, err.Error()
		}
		change(obj)
		if err := env.Client.Update(ctx, obj); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
}

// waitForMeshService waits until the MeshService's status satisfies check.
func waitForMeshService(t *testing.T, ms *meshv1alpha1.MeshService, check func(*meshv1alpha1.MeshService) error) {
	t.Helper()
	testenv.Eventually(t, timeout, func(ctx context.Context) (bool, string) {
		got := &meshv1alpha1.MeshService{}
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(ms), got); err != nil {
			return false, err.Error()
		}
		if err := check(got); err != nil {
			return false, fmt.Sprintf("%v; status: %+v", err, got.Status)
		}
		return true, ""
	})
}

func hasVersion(version string, source meshv1alpha1.VersionSource) func(*meshv1alpha1.MeshService) error {
	return func(ms *meshv1alpha1.MeshService) error {
		if ms.Status.CurrentVersion != version || ms.Status.VersionSource != source {
			return fmt.Errorf("currentVersion %q from %q, want %q from %q", ms.Status.CurrentVersion, ms.Status.VersionSource, version, source)
		}
		if ms.Status.ObservedGeneration != ms.Generation {
			return fmt.Errorf("observedGeneration %d, want %d", ms.Status.ObservedGeneration, ms.Generation)
		}
		return nil
	}
}

func hasCondition(condType string, status metav1.ConditionStatus, reason string) func(*meshv1alpha1.MeshService) error {
	return func(ms *meshv1alpha1.MeshService) error {
		return checkCondition(ms.Status.Conditions, condType, status, reason)
	}
}

func checkCondition(conditions []metav1.Condition, condType string, status metav1.ConditionStatus, reason string) error {
	c := meta.FindStatusCondition(conditions, condType)
	if c == nil {
		return fmt.Errorf("no %s condition", condType)
	}
	if c.Status != status || (reason != "" && c.Reason != reason) {
		return fmt.Errorf("%s is %s/%s (%q), want %s/%s", condType, c.Status, c.Reason, c.Message, status, reason)
	}
	return nil
}

func hasPods(matched, injected, ready int32, byVersion ...meshv1alpha1.VersionCount) func(*meshv1alpha1.MeshService) error {
	return func(ms *meshv1alpha1.MeshService) error {
		p := ms.Status.Pods
		if p.Matched != matched || p.Injected != injected || p.Ready != ready {
			return fmt.Errorf("pods matched/injected/ready = %d/%d/%d, want %d/%d/%d", p.Matched, p.Injected, p.Ready, matched, injected, ready)
		}
		if fmt.Sprint(p.ByVersion) != fmt.Sprint(byVersion) {
			return fmt.Errorf("byVersion = %v, want %v", p.ByVersion, byVersion)
		}
		return nil
	}
}

func TestMeshServiceResolvesItsVersionInPrecedenceOrder(t *testing.T) {
	ns := env.Namespace(t, "precedence")
	createVersion(t, gen.SidecarVersion("prec-default", "1.0.0", gen.AsDefault()))
	createVersion(t, gen.SidecarVersion("prec-pinned", "1.1.0"))
	createVersion(t, gen.SidecarVersion("prec-target", "2.0.0"))

	ms := gen.MeshService("web", gen.MeshServiceMeta(gen.SetNamespace(ns), gen.SetLabels("tier", "front")))
	create(t, ms)
	waitForMeshService(t, ms, hasVersion("prec-default", meshv1alpha1.VersionSourceDefault))

	update(t, ms, func(ms *meshv1alpha1.MeshService) { ms.Spec.Sidecar.Version = "prec-pinned" })
	waitForMeshService(t, ms, hasVersion("prec-pinned", meshv1alpha1.VersionSourceMeshService))

	plan := gen.UpgradePlan("to-target", "prec-target", nil,
		gen.SelectMeshServices(map[string]string{"tier": "front"}), gen.UpgradePlanMeta(gen.SetNamespace(ns)))
	create(t, plan)
	waitForMeshService(t, ms, hasVersion("prec-target", meshv1alpha1.VersionSourceUpgradePlan))

	if err := env.Client.Delete(context.Background(), plan); err != nil {
		t.Fatal(err)
	}
	waitForMeshService(t, ms, hasVersion("prec-pinned", meshv1alpha1.VersionSourceMeshService))

	update(t, ms, func(ms *meshv1alpha1.MeshService) { ms.Spec.Sidecar.Version = "prec-missing" })
	waitForMeshService(t, ms, hasCondition(meshv1alpha1.ConditionReady, metav1.ConditionFalse, versions.ReasonVersionNotFound))
	waitForMeshService(t, ms, func(ms *meshv1alpha1.MeshService) error {
		if ms.Status.CurrentVersion != "" {
			return fmt.Errorf("currentVersion %q, want none while the pin names a missing SidecarVersion", ms.Status.CurrentVersion)
		}
		return nil
	})

	// The missing version appears: the MeshService resolves without being touched.
	createVersion(t, gen.SidecarVersion("prec-missing", "3.0.0"))
	waitForMeshService(t, ms, hasVersion("prec-missing", meshv1alpha1.VersionSourceMeshService))
}

func TestMeshServiceCountsThePodsItSelects(t *testing.T) {
	ns := env.Namespace(t, "counts")
	createVersion(t, gen.SidecarVersion("counts-v1", "1.0.0"))
	createVersion(t, gen.SidecarVersion("counts-v2", "2.0.0"))
	ms := gen.MeshService("web", gen.PinVersion("counts-v2"), gen.MeshServiceMeta(gen.SetNamespace(ns)))
	create(t, ms)
	waitForMeshService(t, ms, hasCondition(meshv1alpha1.ConditionReady, metav1.ConditionTrue, meshv1alpha1.ReasonNoMatchingPods))

	inNS := gen.PodMeta(gen.SetNamespace(ns), gen.SetLabels("app", "web"))
	a := gen.Pod("a", inNS, gen.Injected("web", "counts-v1"), gen.SetServiceAccount("web"))
	b := gen.Pod("b", inNS, gen.Injected("web", "counts-v2"), gen.SetServiceAccount("web"))
	c := gen.Pod("c", inNS, gen.Injected("web", "counts-v2"))
	createPod(t, a, gen.Ready)
	createPod(t, b, gen.Ready)
	createPod(t, c, gen.NotReady)
	createPod(t, gen.Pod("other-app", gen.PodMeta(gen.SetNamespace(ns), gen.SetLabels("app", "other"))), gen.Ready)

	waitForMeshService(t, ms, hasPods(3, 3, 2, meshv1alpha1.VersionCount{Version: "counts-v1", Pods: 1}, meshv1alpha1.VersionCount{Version: "counts-v2", Pods: 2}))
	waitForMeshService(t, ms, hasCondition(meshv1alpha1.ConditionReady, metav1.ConditionFalse, meshv1alpha1.ReasonPodsNotReady))
	waitForMeshService(t, ms, hasCondition(meshv1alpha1.ConditionVersionDrift, metav1.ConditionTrue, meshv1alpha1.ReasonPodsOnOtherVersions))
	waitForMeshService(t, ms, func(ms *meshv1alpha1.MeshService) error {
		want := fmt.Sprint([]string{"spiffe://test.local/ns/" + ns + "/sa/default", "spiffe://test.local/ns/" + ns + "/sa/web"})
		if got := fmt.Sprint(ms.Status.Identity); got != want {
			return fmt.Errorf("identity = %s, want %s", got, want)
		}
		return nil
	})

	// c becomes ready; a leaves the selector (its old labels still map it to this MeshService).
	setPodStatus(t, c, gen.Ready)
	update(t, a, func(p *corev1.Pod) { p.Labels["app"] = "moved" })
	waitForMeshService(t, ms, hasPods(2, 2, 2, meshv1alpha1.VersionCount{Version: "counts-v2", Pods: 2}))
	waitForMeshService(t, ms, hasCondition(meshv1alpha1.ConditionReady, metav1.ConditionTrue, meshv1alpha1.ReasonAllPodsReady))
	waitForMeshService(t, ms, hasCondition(meshv1alpha1.ConditionVersionDrift, metav1.ConditionFalse, meshv1alpha1.ReasonAllPodsCurrent))

	// A pod without a sidecar makes the MeshService not Ready until it is replaced.
	plain := gen.Pod("plain", inNS)
	createPod(t, plain, gen.Ready)
	waitForMeshService(t, ms, hasPods(3, 2, 3, meshv1alpha1.VersionCount{Version: "counts-v2", Pods: 2}))
	waitForMeshService(t, ms, hasCondition(meshv1alpha1.ConditionReady, metav1.ConditionFalse, meshv1alpha1.ReasonPodsNotInjected))
	if err := env.Client.Delete(context.Background(), plain, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	waitForMeshService(t, ms, hasPods(2, 2, 2, meshv1alpha1.VersionCount{Version: "counts-v2", Pods: 2}))
}

func TestMeshServiceEmitsAnEventWhenItsVersionChanges(t *testing.T) {
	ns := env.Namespace(t, "events")
	createVersion(t, gen.SidecarVersion("events-v1", "1.0.0"))
	ms := gen.MeshService("web", gen.PinVersion("events-v1"), gen.MeshServiceMeta(gen.SetNamespace(ns)))
	create(t, ms)
	testenv.Eventually(t, timeout, func(ctx context.Context) (bool, string) {
		events := &eventsv1.EventList{}
		if err := env.Client.List(ctx, events, client.InNamespace(ns)); err != nil {
			return false, err.Error()
		}
		for _, e := range events.Items {
			if e.Regarding.Name == "web" && e.Reason == "VersionResolved" {
				return true, ""
			}
		}
		return false, fmt.Sprintf("no VersionResolved event among %d events", len(events.Items))
	})
}

// Regression: a status whose injected count stays 0 while other counts change must still be
// written completely (a merge patch once dropped the unchanged zero, which the API server refused).
func TestMeshServiceCountsPodsThatHaveNoSidecar(t *testing.T) {
	ns := env.Namespace(t, "noinject")
	createVersion(t, gen.SidecarVersion("noinject-v1", "1.0.0"))
	ms := gen.MeshService("web", gen.PinVersion("noinject-v1"), gen.MeshServiceMeta(gen.SetNamespace(ns)))
	create(t, ms)
	waitForMeshService(t, ms, hasCondition(meshv1alpha1.ConditionReady, metav1.ConditionTrue, meshv1alpha1.ReasonNoMatchingPods))

	inNS := gen.PodMeta(gen.SetNamespace(ns), gen.SetLabels("app", "web"))
	createPod(t, gen.Pod("a", inNS), gen.Ready)
	createPod(t, gen.Pod("b", inNS), gen.Ready)
	waitForMeshService(t, ms, hasPods(2, 0, 2))
	waitForMeshService(t, ms, hasCondition(meshv1alpha1.ConditionReady, metav1.ConditionFalse, meshv1alpha1.ReasonPodsNotInjected))
}
