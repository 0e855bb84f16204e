// Package sidecar owns everything about the injected sidecar in a PodSpec: how it is rendered and
// how to read it back (is the pod injected, which slot is active, which version runs). It is pure
// and shared by the webhook and the controllers, so they agree byte for byte.
package sidecar

import (
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
)

const (
	// ContainerName is the proxy container of a version that cannot hot-upgrade.
	ContainerName = "meshlift-proxy"
	// SlotContainerPrefix prefixes the two slot containers, meshlift-proxy-1 and meshlift-proxy-2.
	SlotContainerPrefix = "meshlift-proxy-"
)

// IsInjected reports whether the pod carries a sidecar.
func IsInjected(pod *corev1.Pod) bool {
	return Version(pod) != ""
}

// Version returns the SidecarVersion the pod's active proxy runs, or "" when not injected.
func Version(pod *corev1.Pod) string {
	return pod.Annotations[meshv1alpha1.AnnotationVersion]
}

// OptedOut reports whether the pod asked not to be injected.
func OptedOut(pod *corev1.Pod) bool {
	return pod.Annotations[meshv1alpha1.AnnotationInject] == "false"
}

// ActiveContainerName returns the name of the container that owns the listeners: the slot named
// by the active-slot annotation, or the single proxy container.
func ActiveContainerName(pod *corev1.Pod) string {
	return SlotContainerName(ActiveSlot(pod))
}

// PodReady reports whether the pod's Ready condition is True: the whole pod is ready, as
// Services see it (ProxyReady is its active proxy alone). Every package that asks whether a pod
// is Ready asks it here.
func PodReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// ProxyReady reports whether the active proxy container is ready. Native sidecars report their
// status among the init containers.
func ProxyReady(pod *corev1.Pod) bool { return SlotReady(pod, ActiveSlot(pod)) }

// SlotReady reports whether the proxy container of slot (0: the single proxy) is ready.
func SlotReady(pod *corev1.Pod, slot int) bool {
	name := SlotContainerName(slot)
	for _, statuses := range [][]corev1.ContainerStatus{pod.Status.ContainerStatuses, pod.Status.InitContainerStatuses} {
		for i := range statuses {
			if statuses[i].Name == name {
				return statuses[i].Ready
			}
		}
	}
	return false
}

// ActiveSlot returns the slot (1 or 2) that owns the listeners, or 0 for a single-proxy pod.
func ActiveSlot(pod *corev1.Pod) int {
	switch pod.Annotations[meshv1alpha1.AnnotationActiveSlot] {
	case "1":
		return 1
	case "2":
		return 2
	default:
		return 0
	}
}

// IdleSlot returns the slot that does not own the listeners, or 0 for a single-proxy pod.
func IdleSlot(pod *corev1.Pod) int {
	switch ActiveSlot(pod) {
	case 1:
		return 2
	case 2:
		return 1
	default:
		return 0
	}
}

// HotUpgradeCapable reports whether the pod has both slot containers, so its proxy can be
// upgraded without a restart.
func HotUpgradeCapable(pod *corev1.Pod) bool {
	return ActiveSlot(pod) != 0 && Container(pod, 1) != nil && Container(pod, 2) != nil
}

// Container returns the proxy container of a slot (0: the single proxy), among the regular or,
// for native sidecars, the init containers; nil if the pod has none.
func Container(pod *corev1.Pod, slot int) *corev1.Container {
	name := SlotContainerName(slot)
	for _, containers := range [][]corev1.Container{pod.Spec.Containers, pod.Spec.InitContainers} {
		for i := range containers {
			if containers[i].Name == name {
				return &containers[i]
			}
		}
	}
	return nil
}

// SlotImage returns the image a slot runs, "" if the pod has no such slot.
func SlotImage(pod *corev1.Pod, slot int) string {
	if c := Container(pod, slot); c != nil {
		return c.Image
	}
	return ""
}

// WithSlotRunning returns a copy of pod in which slot runs version and owns the listeners: the
// slot's image is the version's image, and the active-slot and version annotations name them.
// This is the one change the rollout controller applies (as a single patch) to start a hot
// upgrade, and its result is what the webhook would have injected for that version in that slot.
func WithSlotRunning(pod *corev1.Pod, slot int, version *meshv1alpha1.SidecarVersion) (*corev1.Pod, error) {
	out := pod.DeepCopy()
	c := Container(out, slot)
	if c == nil || slot == 0 {
		return nil, fmt.Errorf("pod %s/%s has no hot-upgrade slot %d", pod.Namespace, pod.Name, slot)
	}
	c.Image = version.Spec.Image
	out.Annotations[meshv1alpha1.AnnotationActiveSlot] = strconv.Itoa(slot)
	out.Annotations[meshv1alpha1.AnnotationVersion] = version.Name
	return out, nil
}

// WithSlotIdle returns a copy of pod in which slot runs the idle image.
func WithSlotIdle(pod *corev1.Pod, slot int, idleImage string) (*corev1.Pod, error) {
	out := pod.DeepCopy()
	c := Container(out, slot)
	if c == nil || slot == 0 {
		return nil, fmt.Errorf("pod %s/%s has no hot-upgrade slot %d", pod.Namespace, pod.Name, slot)
	}
	c.Image = idleImage
	return out, nil
}

// HasProxyReadinessGate reports whether the pod carries the meshlift.io/proxy-ready gate.
func HasProxyReadinessGate(pod *corev1.Pod) bool {
	for _, gate := range pod.Spec.ReadinessGates {
		if gate.ConditionType == meshv1alpha1.ReadinessGateProxyReady {
			return true
		}
	}
	return false
}

// ProxyReadyCondition is the meshlift.io/proxy-ready condition the pod should have: True once
// the active proxy container is ready, False while an InPlace upgrade took the pod out of the
// endpoints (meshlift.io/eds-excluded), so Services stop sending it traffic too.
func ProxyReadyCondition(pod *corev1.Pod) corev1.PodCondition {
	if pod.Annotations[meshv1alpha1.AnnotationEDSExcluded] == "true" {
		return corev1.PodCondition{Type: meshv1alpha1.ReadinessGateProxyReady, Status: corev1.ConditionFalse,
			Reason: "ExcludedForUpgrade", Message: "the proxy is being restarted by an InPlace upgrade (" + meshv1alpha1.AnnotationEDSExcluded + ")"}
	}
	if ProxyReady(pod) {
		return corev1.PodCondition{Type: meshv1alpha1.ReadinessGateProxyReady, Status: corev1.ConditionTrue,
			Reason: "ProxyReady", Message: "the active proxy container " + ActiveContainerName(pod) + " is ready"}
	}
	return corev1.PodCondition{Type: meshv1alpha1.ReadinessGateProxyReady, Status: corev1.ConditionFalse,
		Reason: "ProxyNotReady", Message: "the active proxy container " + ActiveContainerName(pod) + " is not ready"}
}
