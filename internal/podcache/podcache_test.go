package podcache

import (
	"encoding/json"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/strategicpatch"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/sidecar"
	"github.com/meshlift/meshlift/internal/testutil/gen"
)

func injectedPod(t *testing.T) *corev1.Pod {
	t.Helper()
	pod := gen.Pod("web-1", gen.PodMeta(gen.SetLabels("app", "web")))
	pod.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}
	app := &pod.Spec.Containers[0]
	app.Env = []corev1.EnvVar{{Name: "A", Value: "b"}}
	app.Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")}
	pod.Spec.Volumes = []corev1.Volume{{Name: "config"}}
	pod.Spec.ServiceAccountName = "web"
	pod.Spec.NodeName = "node-1"
	ms := gen.MeshService("web")
	version := gen.SidecarVersion("v1", "1.0.0")
	out := sidecar.Inject(pod, ms, version, sidecar.DefaultOptions()).Pod
	gen.Ready(out)(&out.Status)
	out.Status.PodIP = "10.0.0.1"
	return out
}

func TestSlimKeepsWhatTheOperatorReads(t *testing.T) {
	full := injectedPod(t)
	slim := full.DeepCopy()
	if _, err := Transform(slim); err != nil {
		t.Fatal(err)
	}

	if slim.ManagedFields != nil || slim.Spec.Volumes != nil || slim.Spec.Containers[0].Env != nil {
		t.Errorf("managed fields, volumes or env kept: %+v", slim)
	}
	if slim.Name != full.Name || len(slim.Annotations) != len(full.Annotations) || slim.Labels["app"] != "web" {
		t.Errorf("metadata changed: %+v", slim.ObjectMeta)
	}
	if slim.Spec.ServiceAccountName != "web" || slim.Spec.NodeName != "node-1" || len(slim.Spec.ReadinessGates) != len(full.Spec.ReadinessGates) {
		t.Errorf("spec fields lost: %+v", slim.Spec)
	}
	for _, slot := range []int{1, 2} {
		f, s := sidecar.Container(full, slot), sidecar.Container(slim, slot)
		if s == nil || s.Name != f.Name || s.Image != f.Image || !equalResources(s.Resources, f.Resources) ||
			!equalPolicy(s.RestartPolicy, f.RestartPolicy) {
			t.Errorf("slot %d: got %+v, want the name, image, resources and restart policy of %+v", slot, s, f)
		}
	}
	if !equalResources(slim.Spec.Containers[0].Resources, full.Spec.Containers[0].Resources) {
		t.Error("the app's resources were lost")
	}
	// What the controllers decide on is the same for both.
	if sidecar.Version(slim) != sidecar.Version(full) || sidecar.ActiveSlot(slim) != sidecar.ActiveSlot(full) ||
		sidecar.ProxyReady(slim) != sidecar.ProxyReady(full) || sidecar.HotUpgradeCapable(slim) != sidecar.HotUpgradeCapable(full) ||
		sidecar.HasProxyReadinessGate(slim) != sidecar.HasProxyReadinessGate(full) ||
		slim.Status.PodIP != full.Status.PodIP || len(slim.Status.Conditions) != len(full.Status.Conditions) {
		t.Error("a slim pod reads differently from the full one")
	}
}

// The rollout controller patches pods with a strategic merge patch between a cached pod and its
// modified copy: with slim pods it must carry the change and nothing the cache dropped.
func TestAPatchBetweenSlimPodsCarriesOnlyTheChange(t *testing.T) {
	slim := injectedPod(t)
	Slim(slim)
	modified := slim.DeepCopy()
	modified.Annotations[meshv1alpha1.AnnotationActiveSlot] = "2"
	sidecar.Container(modified, 2).Image = "meshlift/meshlift-proxy:2.0.0"
	before, _ := json.Marshal(slim)
	after, _ := json.Marshal(modified)
	patch, err := strategicpatch.CreateTwoWayMergePatch(before, after, corev1.Pod{})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(patch, &got); err != nil {
		t.Fatal(err)
	}
	spec, _ := got["spec"].(map[string]any)
	var containers []any
	for key, value := range spec {
		if key == "containers" || key == "initContainers" {
			containers = append(containers, value.([]any)...)
		}
	}
	if len(got) != 2 || len(containers) != 1 || len(containers[0].(map[string]any)) != 2 {
		t.Errorf("patch %s carries more than the annotation and the image", patch)
	}
}

func TestTransformPassesOtherObjects(t *testing.T) {
	cm := &corev1.ConfigMap{Data: map[string]string{"a": "b"}}
	got, err := Transform(cm)
	if err != nil || got.(*corev1.ConfigMap).Data["a"] != "b" {
		t.Errorf("got %v, %v", got, err)
	}
}

func equalResources(a, b corev1.ResourceRequirements) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

func equalPolicy(a, b *corev1.ContainerRestartPolicy) bool {
	return (a == nil) == (b == nil) && (a == nil || *a == *b)
}
