package webhooks_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	"sigs.k8s.io/yaml"

	"github.com/meshlift/meshlift/internal/sidecar"
	"github.com/meshlift/meshlift/webhooks"
)

// BenchmarkPodInjector measures the injector's server-side work per pod (decode, cache lookups,
// version resolution, rendering, the JSON patch and its encoding into the response) for every pod
// of internal/sidecar's corpus, reading from the manager's real informer cache. It reports the
// mean and the p99 per request.
func BenchmarkPodInjector(b *testing.B) {
	ns, _ := meshed(&testing.T{}, "bench", nil)
	files, err := filepath.Glob(filepath.Join("..", "internal", "sidecar", "testdata", "pods", "*.yaml"))
	if err != nil || len(files) < 15 {
		b.Fatalf("corpus: %v (%d files)", err, len(files))
	}
	var requests []admission.Request
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			b.Fatal(err)
		}
		pod := &corev1.Pod{}
		if err := yaml.Unmarshal(data, pod); err != nil {
			b.Fatal(err)
		}
		pod.Namespace = ns
		raw, _ := json.Marshal(pod)
		requests = append(requests, admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
			UID: "bench", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, Namespace: ns,
			Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: raw},
		}})
	}
	injector := &webhooks.PodInjector{Reader: mgrCache, Options: sidecar.DefaultOptions(), OperatorNamespace: operatorNamespace}
	ctx := context.Background()
	for _, req := range requests { // warm up: first decodes, first cache reads
		injector.Handle(ctx, req)
	}
	durations := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		req := requests[i%len(requests)]
		start := time.Now()
		resp := injector.Handle(ctx, req)
		err := resp.Complete(req) // encodes the patch, as the webhook server does before writing it
		durations = append(durations, time.Since(start))
		if err != nil || !resp.Allowed {
			b.Fatalf("request refused (%v): %v", err, resp.Result)
		}
	}
	b.StopTimer()
	slices.Sort(durations)
	b.ReportMetric(float64(durations[len(durations)*99/100].Nanoseconds()), "p99-ns/op")
}
