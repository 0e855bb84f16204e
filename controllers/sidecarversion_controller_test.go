package controllers_test

import (
	"context"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/argocd"
	"github.com/meshlift/meshlift/internal/testutil/gen"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
	"github.com/meshlift/meshlift/internal/versions"
)

func waitForVersion(t *testing.T, name string, check func(*meshv1alpha1.SidecarVersion) error) {
	t.Helper()
	testenv.Eventually(t, timeout, func(ctx context.Context) (bool, string) {
		got := &meshv1alpha1.SidecarVersion{}
		if err := env.Client.Get(ctx, client.ObjectKey{Name: name}, got); err != nil {
			return false, err.Error()
		}
		if err := check(got); err != nil {
			return false, fmt.Sprintf("%s: %v; status: %+v", name, err, got.Status)
		}
		return true, ""
	})
}

func TestSidecarVersionCountsThePodsRunningIt(t *testing.T) {
	ns := env.Namespace(t, "svcount")
	createVersion(t, gen.SidecarVersion("svcount-v1", "1.0.0"))
	waitForVersion(t, "svcount-v1", func(sv *meshv1alpha1.SidecarVersion) error {
		return checkCondition(sv.Status.Conditions, meshv1alpha1.ConditionReady, metav1.ConditionTrue, meshv1alpha1.ReasonNoPods)
	})

	inNS := gen.PodMeta(gen.SetNamespace(ns), gen.SetLabels("app", "web"))
	ready := gen.Pod("ready", inNS, gen.Injected("web", "svcount-v1"))
	notReady := gen.Pod("not-ready", inNS, gen.Injected("web", "svcount-v1"))
	createPod(t, ready, gen.Ready)
	createPod(t, notReady, gen.NotReady)
	createPod(t, gen.Pod("elsewhere", inNS, gen.Injected("web", "svcount-other")), gen.Ready)

	waitForVersion(t, "svcount-v1", func(sv *meshv1alpha1.SidecarVersion) error {
		if sv.Status.Pods != 2 || sv.Status.ReadyPods != 1 {
			return fmt.Errorf("pods/readyPods = %d/%d, want 2/1", sv.Status.Pods, sv.Status.ReadyPods)
		}
		return checkCondition(sv.Status.Conditions, meshv1alpha1.ConditionReady, metav1.ConditionFalse, meshv1alpha1.ReasonPodsNotReady)
	})

	// The pod moves to another version (as an upgrade would record it).
	update(t, notReady, func(p *corev1.Pod) { p.Annotations[meshv1alpha1.AnnotationVersion] = "svcount-other" })
	waitForVersion(t, "svcount-v1", func(sv *meshv1alpha1.SidecarVersion) error {
		if sv.Status.Pods != 1 || sv.Status.ReadyPods != 1 || sv.Status.ObservedGeneration != sv.Generation {
			return fmt.Errorf("pods/readyPods = %d/%d (observedGeneration %d), want 1/1", sv.Status.Pods, sv.Status.ReadyPods, sv.Status.ObservedGeneration)
		}
		return checkCondition(sv.Status.Conditions, meshv1alpha1.ConditionReady, metav1.ConditionTrue, meshv1alpha1.ReasonAllPodsReady)
	})
}

func TestDefaultConflictAppearsAndClears(t *testing.T) {
	ns := env.Namespace(t, "conflict")
	first := gen.SidecarVersion("conflict-a", "1.0.0", gen.AsDefault())
	createVersion(t, first)
	ms := gen.MeshService("web", gen.MeshServiceMeta(gen.SetNamespace(ns)))
	create(t, ms)
	waitForMeshService(t, ms, hasVersion("conflict-a", meshv1alpha1.VersionSourceDefault))
	waitForVersion(t, "conflict-a", func(sv *meshv1alpha1.SidecarVersion) error {
		return checkCondition(sv.Status.Conditions, meshv1alpha1.ConditionDefaultConflict, metav1.ConditionFalse, meshv1alpha1.ReasonSingleDefault)
	})

	second := gen.SidecarVersion("conflict-b", "2.0.0", gen.AsDefault())
	createVersion(t, second)
	for _, name := range []string{"conflict-a", "conflict-b"} {
		waitForVersion(t, name, func(sv *meshv1alpha1.SidecarVersion) error {
			return checkCondition(sv.Status.Conditions, meshv1alpha1.ConditionDefaultConflict, metav1.ConditionTrue, meshv1alpha1.ReasonMultipleDefaults)
		})
	}
	waitForMeshService(t, ms, hasCondition(meshv1alpha1.ConditionReady, metav1.ConditionFalse, versions.ReasonDefaultConflict))
	// Argo CD shows both versions and the MeshService Degraded, with the reason.
	waitForHealth(t, first, argocd.StatusDegraded, meshv1alpha1.ReasonMultipleDefaults)
	waitForHealth(t, second, argocd.StatusDegraded, meshv1alpha1.ReasonMultipleDefaults)
	waitForHealth(t, ms, argocd.StatusDegraded, versions.ReasonDefaultConflict)

	update(t, first, func(sv *meshv1alpha1.SidecarVersion) { sv.Spec.Default = false })
	waitForVersion(t, "conflict-b", func(sv *meshv1alpha1.SidecarVersion) error {
		return checkCondition(sv.Status.Conditions, meshv1alpha1.ConditionDefaultConflict, metav1.ConditionFalse, meshv1alpha1.ReasonSingleDefault)
	})
	waitForVersion(t, "conflict-a", func(sv *meshv1alpha1.SidecarVersion) error {
		if c := meta.FindStatusCondition(sv.Status.Conditions, meshv1alpha1.ConditionDefaultConflict); c != nil {
			return fmt.Errorf("still has %+v after it stopped being a default", c)
		}
		return nil
	})
	waitForMeshService(t, ms, hasVersion("conflict-b", meshv1alpha1.VersionSourceDefault))
	waitForMeshService(t, ms, hasCondition(meshv1alpha1.ConditionReady, metav1.ConditionTrue, meshv1alpha1.ReasonNoMatchingPods))
	waitForHealth(t, second, argocd.StatusHealthy, meshv1alpha1.ReasonNoPods)
	waitForHealth(t, ms, argocd.StatusHealthy, meshv1alpha1.ReasonNoMatchingPods)
}
