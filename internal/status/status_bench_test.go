package status_test

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/status"
	"github.com/meshlift/meshlift/internal/testutil/gen"
	"github.com/meshlift/meshlift/internal/versions"
)

// BenchmarkMeshServiceStatus10kPods is the reconciler's pure work for a MeshService of 10,000
// pods on three versions (ARCHITECTURE.md section 9 scales the operator to 10k pods).
func BenchmarkMeshServiceStatus10kPods(b *testing.B) {
	pods := make([]*corev1.Pod, 10000)
	for i := range pods {
		pod := gen.Pod(fmt.Sprintf("web-%d", i), gen.Injected("web", fmt.Sprintf("v%d", i%3)), gen.SetServiceAccount(fmt.Sprintf("sa-%d", i%5)))
		gen.Ready(pod)(&pod.Status)
		pods[i] = pod
	}
	in := status.MeshServiceInput{Pods: pods, Resolution: versions.Resolution{Version: "v2"}, TrustDomain: "cluster.local", Namespace: "default"}
	b.ReportAllocs()
	for b.Loop() {
		_ = status.MeshService(meshv1alpha1.MeshServiceStatus{}, in)
	}
}
