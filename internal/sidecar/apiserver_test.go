package sidecar_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshlift/meshlift/internal/sidecar"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

// TestInjectedPodsPassTheAPIServersValidation creates every injected pod of the corpus in a real
// kube-apiserver (envtest): whatever the injector returns must be a pod Kubernetes accepts.
func TestInjectedPodsPassTheAPIServersValidation(t *testing.T) {
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	ctx := context.Background()
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range corpus() {
		t.Run(c.name, func(t *testing.T) {
			_, res, _ := injectCase(t, c)
			pod := res.Pod.DeepCopy()
			if pod.Name != "" {
				pod.GenerateName, pod.Name = pod.Name+"-", ""
			}
			err := env.Client.Create(ctx, pod)
			if res.Skipped == sidecar.SkipReservedVolume && !slices.ContainsFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == sidecar.RunVolume }) {
				// Left without the sidecar, the pod mounts a volume it does not declare: the API
				// server refuses it, instead of the injector handing it the proxy's socket.
				if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "volumeMounts[0].name: Not found") {
					t.Fatalf("create returned %v, want the API server to refuse the mount of an undeclared volume", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("the API server rejected the injected pod: %v", err)
			}
		})
	}
}
