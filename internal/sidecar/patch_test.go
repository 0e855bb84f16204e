package sidecar_test

import (
	"encoding/json"
	"reflect"
	"slices"
	"testing"

	jsonpatchapply "github.com/evanphx/json-patch/v5"
	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	utiljson "k8s.io/apimachinery/pkg/util/json"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/capture"
	"github.com/meshlift/meshlift/internal/proxyconfig"
	"github.com/meshlift/meshlift/internal/sidecar"
	"github.com/meshlift/meshlift/internal/testutil/gen"
)

// Every pod of the corpus, patched, is exactly Inject's pod, and the patch only adds.
func TestTheInjectionPatchGivesTheInjectedPod(t *testing.T) {
	for _, c := range corpus() {
		t.Run(c.name, func(t *testing.T) {
			pod, res, _ := injectCase(t, c)
			checkInjectionPatch(t, encode(t, pod), res.Pod)
		})
	}
}

// A pod as a newer API server sends it, or as a client wrote it, keeps everything injection
// does not own: fields our Go types do not know, and values in the client's own spelling.
func TestTheInjectionPatchKeepsWhatInjectionDoesNotOwn(t *testing.T) {
	tests := []struct {
		name string
		raw  string
	}{
		{"keeps fields unknown to this build at every level of the pod", `{
			"apiVersion": "v1", "kind": "Pod", "futureTopLevel": {"a": 1},
			"metadata": {"name": "web-1", "namespace": "shop", "labels": {"app": "web"},
				"annotations": {"team": "a/b~c"}, "futureMetadata": ["x"]},
			"spec": {
				"futureSpec": {"nested": [1, 2.5, "three"]},
				"initContainers": [{"name": "migrate", "image": "m:1", "futureContainer": true}],
				"containers": [{"name": "web", "image": "w:1", "futureContainer": {"b": null},
					"ports": [{"containerPort": 8080, "futurePort": "x"}]}],
				"volumes": [{"name": "data", "emptyDir": {}, "futureVolume": 7}],
				"readinessGates": [{"conditionType": "example.com/ready", "futureGate": 1}]
			},
			"status": {"futureStatus": "s"}
		}`},
		{"keeps values in the client's spelling instead of re-encoding them", `{
			"metadata": {"name": "web-1", "labels": {"app": "web"}, "creationTimestamp": null},
			"spec": {"containers": [{"name": "web", "image": "w:1",
				"resources": {"requests": {"cpu": "0.5", "memory": "1e3"}}, "env": []}],
				"nodeSelector": {"disk": "ssd"}}
		}`},
		{"adds annotations to a pod whose annotations are null", `{
			"metadata": {"name": "web-1", "labels": {"app": "web"}, "annotations": null},
			"spec": {"containers": [{"name": "web", "image": "w:1"}]}
		}`},
		{"fills empty lists", `{
			"metadata": {"name": "web-1", "labels": {"app": "web"}, "annotations": {}},
			"spec": {"containers": [{"name": "web", "image": "w:1"}], "initContainers": [], "volumes": [], "readinessGates": []}
		}`},
		{"adds a spec to a pod sent without one", `{"metadata": {"labels": {"app": "web"}}}`},
		{"adds a spec to a pod whose spec is null", `{"metadata": {"labels": {"app": "web"}}, "spec": null}`},
		{"adds the spec's fields to a pod whose spec holds only unknown fields", `{"metadata": {"labels": {"app": "web"}}, "spec": {"future": 1}}`},
		{"adds metadata to a pod sent without it", `{"spec": {"containers": [{"name": "web", "image": "w:1"}]}}`},
		{"adds to metadata that holds only unknown fields", `{"metadata": {"future": 1}, "spec": {"containers": [{"name": "web", "image": "w:1"}]}}`},
	}
	gated := gen.MeshService("web", gen.MeshServiceMeta(gen.SetNamespace("shop")), func(ms *meshv1alpha1.MeshService) { ms.Spec.Injection.ProxyReadinessGate = true })
	version := gen.SidecarVersion("proxy-v1", "1.0.0")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := &corev1.Pod{}
			if err := utiljson.Unmarshal([]byte(tt.raw), pod); err != nil {
				t.Fatal(err)
			}
			res := sidecar.Inject(pod, gated, version, sidecar.DefaultOptions())
			if res.Skipped != "" {
				t.Fatalf("skipped: %s", res.Message)
			}
			checkInjectionPatch(t, []byte(tt.raw), res.Pod)
		})
	}
}

// checkInjectionPatch checks the patch of raw for injected: it only adds, it gives injected (as
// far as the Go types see), and taking out what injection adds leaves raw exactly as it was.
func checkInjectionPatch(t *testing.T, raw []byte, injected *corev1.Pod) {
	t.Helper()
	original := &corev1.Pod{}
	if err := utiljson.Unmarshal(raw, original); err != nil {
		t.Fatal(err)
	}
	patch, err := sidecar.InjectionPatch(raw, original, injected)
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range patch {
		if op.Operation != "add" {
			t.Errorf("the patch has a %s operation on %s; it may only add", op.Operation, op.Path)
		}
	}
	patched := applyRaw(t, raw, patch)

	got := &corev1.Pod{}
	if err := utiljson.Unmarshal(patched, got); err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(got, injected) {
		want, _ := json.MarshalIndent(injected, "", "  ")
		have, _ := json.MarshalIndent(got, "", "  ")
		t.Fatalf("the patched pod is not the injected pod:\n%s", diffLines(string(want), string(have)))
	}

	var before, after map[string]any
	if err := json.Unmarshal(raw, &before); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(patched, &after); err != nil {
		t.Fatal(err)
	}
	stripInjection(after, before)
	if !reflect.DeepEqual(after, before) {
		want, _ := json.MarshalIndent(before, "", "  ")
		have, _ := json.MarshalIndent(after, "", "  ")
		t.Fatalf("besides what injection adds, the patch changed the pod:\n%s", diffLines(string(want), string(have)))
	}
}

// applyRaw applies patch to raw, as the API server does.
func applyRaw(t *testing.T, raw []byte, patch []jsonpatch.Operation) []byte {
	t.Helper()
	ops, err := json.Marshal(patch)
	if err != nil {
		t.Fatal(err)
	}
	decoded, err := jsonpatchapply.DecodePatch(ops)
	if err != nil {
		t.Fatalf("the patch is not a valid JSON patch: %v", err)
	}
	patched, err := decoded.Apply(raw)
	if err != nil {
		t.Fatalf("the patch does not apply to the pod: %v\n%s", err, ops)
	}
	return patched
}

// stripInjection takes out of a patched pod what injection adds (its annotations, containers,
// volumes, readiness gate and service account, and the objects and lists that held only them
// and were not in the pod before) and puts back the probes that capture rewrote, so that it can
// be compared with the pod as it was sent.
func stripInjection(pod, before map[string]any) {
	restoreRewrittenProbes(pod, before)
	owned := map[string][]string{
		"annotations": {meshv1alpha1.AnnotationVersion, meshv1alpha1.AnnotationMeshService, meshv1alpha1.AnnotationActiveSlot, meshv1alpha1.AnnotationInjectionHash,
			"kubectl.kubernetes.io/default-container", capture.AnnotationCapture, proxyconfig.OriginalProbesAnnotation},
		"initContainers": {sidecar.ContainerName, sidecar.SlotContainerName(1), sidecar.SlotContainerName(2), sidecar.CaptureInitContainerName},
		"containers":     {sidecar.ContainerName, sidecar.SlotContainerName(1), sidecar.SlotContainerName(2)},
		"volumes":        {sidecar.RunVolume, sidecar.TokenVolume, sidecar.PodInfoVolume},
		"readinessGates": {meshv1alpha1.ReadinessGateProxyReady},
		"spec":           {"serviceAccountName"},
	}
	for _, object := range []string{"metadata", "spec"} {
		fields, _ := pod[object].(map[string]any)
		beforeFields, _ := before[object].(map[string]any)
		for name, value := range fields {
			_, existed := beforeFields[name]
			switch value := value.(type) {
			case map[string]any: // annotations and labels
				beforeMap, _ := beforeFields[name].(map[string]any)
				for _, key := range owned[name] {
					if _, had := beforeMap[key]; !had {
						delete(value, key)
					}
				}
				if len(value) == 0 && (!existed || beforeFields[name] == nil) {
					fields[name] = beforeFields[name]
				}
			case []any: // containers, volumes and readiness gates
				value = slices.DeleteFunc(value, func(element any) bool {
					e, _ := element.(map[string]any)
					key, _ := e["name"].(string)
					if key == "" {
						key, _ = e["conditionType"].(string)
					}
					return slices.Contains(owned[name], key)
				})
				fields[name] = value
				if len(value) == 0 {
					fields[name] = beforeFields[name]
				}
			}
			if !existed && fields[name] == nil {
				delete(fields, name)
			}
		}
		for _, name := range owned[object] {
			if _, existed := beforeFields[name]; !existed {
				delete(fields, name)
			}
		}
		if _, existed := before[object]; !existed && len(fields) == 0 {
			delete(pod, object)
		} else if before[object] == nil && len(fields) == 0 {
			pod[object] = nil
		}
	}
}

// restoreRewrittenProbes puts back, in the patched pod, the pod's own probes that capture
// rewrote: only probes that now ask the proxy's app-probe listener at the path of their
// container and kind, so that any other change to a container still fails the comparison.
func restoreRewrittenProbes(pod, before map[string]any) {
	// The original probes of an already rewritten pod only gain the newly rewritten probes.
	metadata, _ := pod["metadata"].(map[string]any)
	beforeMetadata, _ := before["metadata"].(map[string]any)
	annotations, _ := metadata["annotations"].(map[string]any)
	beforeAnnotations, _ := beforeMetadata["annotations"].(map[string]any)
	if had, ok := beforeAnnotations[proxyconfig.OriginalProbesAnnotation].(string); ok {
		has, _ := annotations[proxyconfig.OriginalProbesAnnotation].(string)
		hadProbes, errHad := proxyconfig.ParseOriginalProbes(had)
		hasProbes, errHas := proxyconfig.ParseOriginalProbes(has)
		kept := errHad == nil && errHas == nil
		for container, probes := range hadProbes {
			for _, kind := range []string{proxyconfig.ProbeLiveness, proxyconfig.ProbeReadiness, proxyconfig.ProbeStartup} {
				if probes.Probe(kind) != nil && !reflect.DeepEqual(probes.Probe(kind), hasProbes[container].Probe(kind)) {
					kept = false
				}
			}
		}
		if kept {
			annotations[proxyconfig.OriginalProbesAnnotation] = had
		}
	}
	spec, _ := pod["spec"].(map[string]any)
	beforeSpec, _ := before["spec"].(map[string]any)
	kinds := map[string]string{"livenessProbe": proxyconfig.ProbeLiveness, "readinessProbe": proxyconfig.ProbeReadiness, "startupProbe": proxyconfig.ProbeStartup}
	for _, list := range []string{"initContainers", "containers"} {
		beforeContainers, _ := beforeSpec[list].([]any)
		containers, _ := spec[list].([]any)
		for _, b := range beforeContainers {
			beforeContainer, _ := b.(map[string]any)
			for _, c := range containers {
				container, _ := c.(map[string]any)
				if container["name"] != beforeContainer["name"] {
					continue
				}
				name, _ := container["name"].(string)
				for key, kind := range kinds {
					probe, _ := container[key].(map[string]any)
					httpGet, _ := probe["httpGet"].(map[string]any)
					if httpGet != nil && httpGet["port"] == float64(proxyconfig.AppProbePort) && httpGet["path"] == proxyconfig.AppProbePath(name, kind) {
						if original, had := beforeContainer[key]; had {
							container[key] = original
						}
					}
				}
			}
		}
	}
}
