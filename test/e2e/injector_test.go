//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/sidecar"
	"github.com/meshlift/meshlift/internal/testutil/gen"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

// TestTheInClusterInjectorServesWithItsOwnCertificates checks the whole path in the cluster:
// the operator issued its webhook certificate, wrote the CA bundle into its webhook
// configurations, and the API server calls the injector through the Service.
func TestTheInClusterInjectorServesWithItsOwnCertificates(t *testing.T) {
	ctx := context.Background()
	testenv.Eventually(t, 2*time.Minute, func(ctx context.Context) (bool, string) {
		config := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := k8s.Get(ctx, client.ObjectKey{Name: "meshlift-mutating-webhook-configuration"}, config); err != nil {
			return false, err.Error()
		}
		if len(config.Webhooks[0].ClientConfig.CABundle) == 0 {
			return false, "no caBundle yet"
		}
		return true, ""
	})
	ns, version := webMeshService(t, "e2e-inject")
	// A dry run goes through admission (and the injector) without creating the pod.
	testenv.Eventually(t, time.Minute, func(ctx context.Context) (bool, string) {
		pod := webPodIn(ns)
		if err := k8s.Create(ctx, pod, client.DryRunAll); err != nil {
			return false, err.Error()
		}
		if !sidecar.IsInjected(pod) {
			return false, "not injected yet (the operator's cache may not have the MeshService)"
		}
		if sidecar.SlotImage(pod, 1) != version.Spec.Image || sidecar.SlotImage(pod, 2) != version.Spec.IdleImage {
			return false, fmt.Sprintf("slots %q, %q", sidecar.SlotImage(pod, 1), sidecar.SlotImage(pod, 2))
		}
		return true, ""
	})

	// kube-system is never injected, even when a MeshService there selects the pod.
	if err := k8s.Create(ctx, gen.MeshService("e2e-web", gen.PinVersion(version.Name), gen.MeshServiceMeta(gen.SetNamespace("kube-system")))); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = k8s.Delete(context.Background(), gen.MeshService("e2e-web", gen.MeshServiceMeta(gen.SetNamespace("kube-system"))))
	})
	pod := webPodIn("kube-system")
	pod.Labels["app"] = "e2e-web"
	if err := k8s.Create(ctx, pod, client.DryRunAll); err != nil {
		t.Fatal(err)
	}
	if sidecar.IsInjected(pod) {
		t.Error("a kube-system pod was injected")
	}
}

// webMeshService creates a namespace with a SidecarVersion of the idle image and a MeshService
// web that selects the pods webPodIn makes.
func webMeshService(t testing.TB, prefix string) (string, *meshv1alpha1.SidecarVersion) {
	t.Helper()
	ctx := context.Background()
	ns := createNamespace(t, prefix)
	version := idleOnlyVersion(ns + "-proxy")
	if err := k8s.Create(ctx, version); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), version) })
	if err := k8s.Create(ctx, gen.MeshService("web", gen.PinVersion(version.Name), gen.MeshServiceMeta(gen.SetNamespace(ns)))); err != nil {
		t.Fatal(err)
	}
	return ns, version
}

func webPodIn(ns string) *corev1.Pod {
	pod := gen.Pod("", gen.PodMeta(gen.SetNamespace(ns), gen.SetLabels("app", "web")))
	pod.GenerateName = "web-"
	return pod
}
