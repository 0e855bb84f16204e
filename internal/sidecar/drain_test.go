package sidecar_test

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/proxyconfig"
	"github.com/meshlift/meshlift/internal/sidecar"
	"github.com/meshlift/meshlift/internal/testutil/gen"
)

// TestTheInjectorWritesTheDrainBudget: the MeshService's spec.drain.maxDuration wins over the
// SidecarVersion's; without either the pod keeps an annotation of its own (or the proxy's
// default applies), and the injection hash of objects without the field does not change.
func TestTheInjectorWritesTheDrainBudget(t *testing.T) {
	budget := func(d time.Duration) *meshv1alpha1.DrainSpec {
		return &meshv1alpha1.DrainSpec{MaxDuration: &metav1.Duration{Duration: d}}
	}
	tests := []struct {
		name           string
		ms, version    *meshv1alpha1.DrainSpec
		podAnnotation  string
		want           string
		wantAnnotation bool
	}{
		{name: "neither", want: "", wantAnnotation: false},
		{name: "the version's", version: budget(20 * time.Minute), want: "20m0s", wantAnnotation: true},
		{name: "the MeshService's wins", ms: budget(90 * time.Second), version: budget(20 * time.Minute), want: "1m30s", wantAnnotation: true},
		{name: "the pod's own stays without either", podAnnotation: "5m", want: "5m", wantAnnotation: true},
		{name: "configuration wins over the pod's own", ms: budget(time.Hour), podAnnotation: "5m", want: "1h0m0s", wantAnnotation: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ms := gen.MeshService("web")
			ms.Spec.Drain = tt.ms
			version := gen.SidecarVersion("proxy-v1", "1.0.0")
			version.Spec.Drain = tt.version
			pod := gen.Pod("web-0", gen.PodMeta(gen.SetLabels("app", "web")))
			if tt.podAnnotation != "" {
				pod.Annotations = map[string]string{proxyconfig.DrainMaxDurationAnnotation: tt.podAnnotation}
			}
			out := sidecar.Inject(pod, ms, version, sidecar.DefaultOptions()).Pod
			got, ok := out.Annotations[proxyconfig.DrainMaxDurationAnnotation]
			if got != tt.want || ok != tt.wantAnnotation {
				t.Errorf("annotation %q (present %v), want %q (present %v)", got, ok, tt.want, tt.wantAnnotation)
			}
			if _, ok, err := proxyconfig.DrainMaxDuration(out.Annotations); tt.wantAnnotation && (!ok || err != nil) {
				t.Errorf("the proxy cannot read the annotation %q: %v", got, err)
			}
		})
	}
}
