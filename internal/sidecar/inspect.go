// Package sidecar owns everything about the injected sidecar in a PodSpec: how it is rendered and
// how to read it back (is the pod injected, which slot is active, which version runs). It is pure
// and shared by the webhook and the controllers, so they agree byte for byte.
package sidecar

import (
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
	switch slot := pod.Annotations[meshv1alpha1.AnnotationActiveSlot]; slot {
	case "1", "2":
		return SlotContainerPrefix + slot
	default:
		return ContainerName
	}
}

// ProxyReady reports whether the active proxy container is ready. Native sidecars report their
// status among the init containers.
func ProxyReady(pod *corev1.Pod) bool {
	name := ActiveContainerName(pod)
	for _, statuses := range [][]corev1.ContainerStatus{pod.Status.ContainerStatuses, pod.Status.InitContainerStatuses} {
		for i := range statuses {
			if statuses[i].Name == name {
				return statuses[i].Ready
			}
		}
	}
	return false
}
