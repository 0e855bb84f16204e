package sidecar_test

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/sidecar"
	"github.com/meshlift/meshlift/internal/testutil/gen"
)

func TestProxyReady(t *testing.T) {
	readyIn := func(name string, native bool) gen.PodOption {
		return func(p *corev1.Pod) {
			status := corev1.ContainerStatus{Name: name, Ready: true}
			if native {
				p.Status.InitContainerStatuses = append(p.Status.InitContainerStatuses, status)
				return
			}
			p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, status)
		}
	}
	tests := []struct {
		name string
		pod  *corev1.Pod
		want bool
	}{
		{"is ready when the active slot's container is ready",
			gen.Pod("p", gen.Injected("web", "v1"), readyIn("meshlift-proxy-1", false)), true},
		{"is not ready when only the idle slot's container is ready",
			gen.Pod("p", gen.Injected("web", "v1"), readyIn("meshlift-proxy-2", false)), false},
		{"follows the active-slot annotation to slot 2",
			gen.Pod("p", gen.Injected("web", "v1"), gen.PodMeta(gen.SetAnnotations(meshv1alpha1.AnnotationActiveSlot, "2")), readyIn("meshlift-proxy-2", false)), true},
		{"finds a native sidecar among the init container statuses",
			gen.Pod("p", gen.Injected("web", "v1"), readyIn("meshlift-proxy-1", true)), true},
		{"uses the single proxy container when there is no slot annotation",
			gen.Pod("p", gen.PodMeta(gen.SetAnnotations(meshv1alpha1.AnnotationVersion, "v1")), readyIn("meshlift-proxy", false)), true},
		{"is not ready before the container reports a status",
			gen.Pod("p", gen.Injected("web", "v1")), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sidecar.ProxyReady(tt.pod); got != tt.want {
				t.Errorf("ProxyReady() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestProxyReadyCondition(t *testing.T) {
	ready := func(p *corev1.Pod) {
		p.Status.InitContainerStatuses = append(p.Status.InitContainerStatuses, corev1.ContainerStatus{Name: "meshlift-proxy-1", Ready: true})
	}
	if c := sidecar.ProxyReadyCondition(gen.Pod("p", gen.Injected("web", "v1"), ready)); c.Status != corev1.ConditionTrue {
		t.Errorf("a pod whose active proxy is ready gets %s (%s), want True", c.Status, c.Reason)
	}
	if c := sidecar.ProxyReadyCondition(gen.Pod("p", gen.Injected("web", "v1"))); c.Status != corev1.ConditionFalse {
		t.Errorf("a pod whose active proxy is not ready gets %s, want False", c.Status)
	}
	excluded := gen.Pod("p", gen.Injected("web", "v1"), ready, gen.PodMeta(gen.SetAnnotations(meshv1alpha1.AnnotationEDSExcluded, "true")))
	if c := sidecar.ProxyReadyCondition(excluded); c.Status != corev1.ConditionFalse || c.Reason != "ExcludedForUpgrade" {
		t.Errorf("a pod excluded for an InPlace upgrade gets %s (%s), want False (ExcludedForUpgrade)", c.Status, c.Reason)
	}
}

func TestSlotsOfAnInjectedPod(t *testing.T) {
	ms := gen.MeshService("web")
	v1 := gen.SidecarVersion("proxy-v1", "1.0.0")
	v2 := gen.SidecarVersion("proxy-v2", "2.0.0")
	injected := sidecar.Inject(gen.Pod("p", gen.PodMeta(gen.SetLabels("app", "web"))), ms, v1, sidecar.DefaultOptions()).Pod

	if !sidecar.HotUpgradeCapable(injected) || sidecar.ActiveSlot(injected) != 1 || sidecar.IdleSlot(injected) != 2 {
		t.Fatalf("capable=%v active=%d idle=%d, want true 1 2", sidecar.HotUpgradeCapable(injected), sidecar.ActiveSlot(injected), sidecar.IdleSlot(injected))
	}
	if sidecar.SlotImage(injected, 1) != v1.Spec.Image || sidecar.SlotImage(injected, 2) != v1.Spec.IdleImage {
		t.Errorf("slot images = %s, %s", sidecar.SlotImage(injected, 1), sidecar.SlotImage(injected, 2))
	}

	// Slot 2 takes over with v2; then slot 1 goes idle.
	upgraded, err := sidecar.WithSlotRunning(injected, 2, v2)
	if err != nil {
		t.Fatal(err)
	}
	upgraded, err = sidecar.WithSlotIdle(upgraded, 1, v2.Spec.IdleImage)
	if err != nil {
		t.Fatal(err)
	}
	if sidecar.ActiveSlot(upgraded) != 2 || sidecar.Version(upgraded) != "proxy-v2" || sidecar.ActiveContainerName(upgraded) != "meshlift-proxy-2" ||
		sidecar.SlotImage(upgraded, 2) != v2.Spec.Image || sidecar.SlotImage(upgraded, 1) != v2.Spec.IdleImage {
		t.Errorf("after the upgrade: active=%d version=%s images=%s,%s", sidecar.ActiveSlot(upgraded), sidecar.Version(upgraded),
			sidecar.SlotImage(upgraded, 1), sidecar.SlotImage(upgraded, 2))
	}
	// Only images and annotations changed: everything else of the slots is as injected.
	for _, slot := range []int{1, 2} {
		before, after := sidecar.Container(injected, slot).DeepCopy(), sidecar.Container(upgraded, slot).DeepCopy()
		before.Image, after.Image = "", ""
		if !equality.Semantic.DeepEqual(before, after) {
			t.Errorf("slot %d changed beyond its image", slot)
		}
	}
	if sidecar.SlotImage(injected, 2) != v1.Spec.IdleImage {
		t.Error("WithSlotRunning modified its input")
	}

	single := sidecar.Inject(gen.Pod("q", gen.PodMeta(gen.SetLabels("app", "web"))), ms,
		gen.SidecarVersion("legacy", "0.9.0", func(v *meshv1alpha1.SidecarVersion) { v.Spec.HotUpgrade = nil }), sidecar.DefaultOptions()).Pod
	if sidecar.HotUpgradeCapable(single) || sidecar.ActiveSlot(single) != 0 || sidecar.ActiveContainerName(single) != "meshlift-proxy" {
		t.Errorf("single-proxy pod: capable=%v active=%d container=%s", sidecar.HotUpgradeCapable(single), sidecar.ActiveSlot(single), sidecar.ActiveContainerName(single))
	}
	if _, err := sidecar.WithSlotRunning(single, 2, v2); err == nil {
		t.Error("WithSlotRunning accepted a pod without slots")
	}
}
