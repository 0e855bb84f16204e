package controlplane_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/controlplane"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

func TestCertificateExpiryIsRecordedOnThePod(t *testing.T) {
	const lifetime = 4 * time.Second
	ns := env.Namespace(t, "expiry")
	// The pods are patched with the operator's own permissions (config/rbac/role.yaml).
	const operator = "meshlift-operator"
	clusterRules, namespacedRules := testenv.GeneratedRules(t)
	env.Grant(t, "manager", operator, ns, clusterRules, namespacedRules)
	writer, err := client.New(env.As(operator), client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	cp := startControlPlane(t, controlplane.Options{LeafLifetime: lifetime, RotationFraction: 0.5, PodWriter: writer})
	a := cp.workload(t, ns, "a-1", "a", "a")
	patched := metricValue(t, "meshlift_control_plane_certificate_expiry_annotations_total", map[string]string{"result": "patched"})

	c := cp.openADS(t, a.token)
	c.send(t, certificateRequest(a.pod, nil))
	first := c.recv(t, timeout)
	firstLeaf := leafOf(t, secrets(t, first)[controlplane.SecretDefault])
	waitCertificateNotAfter(t, a.pod, firstLeaf.NotAfter)
	if n := metricValue(t, "meshlift_control_plane_certificate_expiry_annotations_total", map[string]string{"result": "patched"}); n < patched+1 {
		t.Errorf("certificate_expiry_annotations_total{result=patched} grew by %v, want at least 1", n-patched)
	}

	// The rotation moves it to the new certificate's expiry.
	c.ack(t, first, bothSecrets)
	rotated := leafOf(t, secrets(t, c.recv(t, timeout))[controlplane.SecretDefault])
	c.cancel() // no more rotations
	if !rotated.NotAfter.After(firstLeaf.NotAfter) {
		t.Fatalf("the rotated leaf expires at %s, not after the first one (%s)", rotated.NotAfter, firstLeaf.NotAfter)
	}
	waitCertificateNotAfter(t, a.pod, rotated.NotAfter)

	// Only that annotation was written: the rest of the pod is as the test created it.
	current := &corev1.Pod{}
	if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(a.pod), current); err != nil {
		t.Fatal(err)
	}
	for k, v := range a.pod.Annotations {
		if current.Annotations[k] != v {
			t.Errorf("annotation %s is %q, want %q as created", k, current.Annotations[k], v)
		}
	}
	if len(current.Annotations) != len(a.pod.Annotations)+1 {
		t.Errorf("the pod has annotations %v, want those it was created with and %s", current.Annotations, meshv1alpha1.AnnotationCertificateNotAfter)
	}
}

// waitCertificateNotAfter waits until the API server has pod annotated with notAfter in RFC 3339
// (UTC, whole seconds).
func waitCertificateNotAfter(t *testing.T, pod *corev1.Pod, notAfter time.Time) {
	t.Helper()
	want := notAfter.UTC().Format(time.RFC3339)
	testenv.Eventually(t, timeout, func(ctx context.Context) (bool, string) {
		current := &corev1.Pod{}
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(pod), current); err != nil {
			return false, err.Error()
		}
		got := current.Annotations[meshv1alpha1.AnnotationCertificateNotAfter]
		return got == want, fmt.Sprintf("the pod's %s is %q, want %q", meshv1alpha1.AnnotationCertificateNotAfter, got, want)
	})
}
