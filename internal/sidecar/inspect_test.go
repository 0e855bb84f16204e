package sidecar_test

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

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
