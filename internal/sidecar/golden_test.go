package sidecar_test

import (
	"bytes"
	"cmp"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	jsonpatchapply "github.com/evanphx/json-patch/v5"
	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/sidecar"
	"github.com/meshlift/meshlift/internal/testutil/gen"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// corpusCase is one pod of testdata/pods and the MeshService and version it is injected with.
type corpusCase struct {
	name    string
	ms      *meshv1alpha1.MeshService
	version *meshv1alpha1.SidecarVersion
	opts    sidecar.Options
	// pod is the file of testdata/pods when it is not name's.
	pod string
}

func corpus() []corpusCase {
	inShop := gen.MeshServiceMeta(gen.SetNamespace("shop"))
	web := gen.MeshService("web", inShop)
	v1 := gen.SidecarVersion("proxy-v1", "1.0.0", func(v *meshv1alpha1.SidecarVersion) {
		v.Spec.Resources = corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
		}
	})
	cold := gen.SidecarVersion("proxy-legacy", "0.9.0", func(v *meshv1alpha1.SidecarVersion) {
		v.Spec.HotUpgrade, v.Spec.IdleImage = nil, ""
	})
	tuned := gen.SidecarVersion("proxy-tuned", "1.1.0", func(v *meshv1alpha1.SidecarVersion) {
		v.Spec.Args = []string{"--log-level=debug", "--max-connections=2048"}
		v.Spec.Env = []corev1.EnvVar{{Name: "GOMAXPROCS", Value: "2"}}
		v.Spec.Resources = corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("48Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("128Mi")},
		}
	})
	regular := gen.MeshService("web", inShop, func(ms *meshv1alpha1.MeshService) { ms.Spec.Injection.NativeSidecar = ptr.To(false) })
	gated := gen.MeshService("web", inShop, func(ms *meshv1alpha1.MeshService) { ms.Spec.Injection.ProxyReadinessGate = true })
	checkout := gen.MeshService("checkout", inShop, func(ms *meshv1alpha1.MeshService) {
		ms.Spec.Ports = nil
		ms.Spec.MTLS.Mode = meshv1alpha1.MTLSPermissive
		ms.Spec.Upstreams = []meshv1alpha1.Upstream{
			{MeshService: "payments.finance", Port: "grpc", LocalPort: 7001},
			{MeshService: "web", Port: "http", LocalPort: 7002},
		}
	})
	opts := sidecar.DefaultOptions()
	fullIdle := sidecar.DefaultOptions()
	fullIdle.FullIdleResources = true
	cni := sidecar.DefaultOptions()
	cni.CaptureMode, cni.CaptureOutbound = sidecar.CaptureModeCNI, true
	initContainer := sidecar.DefaultOptions()
	initContainer.CaptureMode, initContainer.CaptureOutbound = sidecar.CaptureModeInitContainer, true
	initContainer.CaptureInitImage = "meshlift/meshlift-cni:1.0.0"
	noOutbound := gen.MeshService("web", inShop, func(ms *meshv1alpha1.MeshService) {
		ms.Spec.Capture = &meshv1alpha1.CaptureSpec{Outbound: ptr.To(false)}
	})

	cases := []corpusCase{
		{"basic", web, v1, opts, ""},
		{"probes", web, v1, opts, ""},
		{"init-containers", web, v1, opts, ""},
		{"volumes", web, v1, opts, ""},
		{"restricted", web, v1, opts, ""},
		{"existing-native-sidecar", web, v1, opts, ""},
		{"already-injected", web, v1, opts, ""},
		{"opt-out", web, v1, opts, ""},
		{"two-meshservices", nil, v1, opts, ""}, // the MeshService is selected below
		{"cold-version", web, cold, opts, ""},
		{"regular-containers", regular, v1, opts, ""},
		{"readiness-gate", gated, v1, opts, ""},
		{"upstreams-permissive", checkout, v1, opts, ""},
		{"multi-container", web, v1, opts, ""},
		{"host-network", web, v1, opts, ""},
		{"port-conflict", web, v1, opts, ""},
		{"no-token-automount", web, v1, fullIdle, ""},
		{"version-args-env", web, tuned, opts, ""},
		{"name-conflict", web, v1, opts, ""},
		{"reserved-volume-mount", web, v1, opts, ""},
		// Traffic capture (off by default: "capture-off" is the probes pod with the defaults).
		{name: "capture-off", ms: web, version: v1, opts: opts, pod: "capture-probes"},
		{name: "capture-cni", ms: web, version: v1, opts: cni, pod: "basic"},
		{name: "capture-outbound-opt-out", ms: noOutbound, version: v1, opts: cni, pod: "basic"},
		{name: "capture-init-container", ms: web, version: v1, opts: initContainer, pod: "init-containers"},
		{name: "capture-init-container-regular-containers", ms: regular, version: v1, opts: initContainer, pod: "init-containers"},
		{name: "capture-probes", ms: web, version: v1, opts: cni},
		{name: "capture-probes-cold-version", ms: web, version: cold, opts: cni, pod: "capture-probes"},
		{name: "capture-already-rewritten", ms: web, version: v1, opts: cni},
		{name: "capture-malformed-exclusions", ms: web, version: v1, opts: cni},
	}
	return cases
}

// twoMeshServices are both MeshServices that select the pod of the "two-meshservices" case.
func twoMeshServices() []meshv1alpha1.MeshService {
	older := gen.MeshService("web", gen.MeshServiceMeta(gen.SetNamespace("shop"), gen.SetCreated(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))))
	canary := gen.MeshService("web-canary", gen.MeshServiceMeta(gen.SetNamespace("shop"), gen.SetCreated(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))),
		func(ms *meshv1alpha1.MeshService) {
			ms.Spec.Selector.MatchLabels = map[string]string{"track": "canary"}
		})
	return []meshv1alpha1.MeshService{*canary, *older}
}

func loadPod(t testing.TB, name string) *corev1.Pod {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "pods", name+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{}
	if err := yaml.UnmarshalStrict(data, pod); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return pod
}

// goldenResult is what a golden file records: the JSON patch the webhook would return, or why
// the pod was skipped.
type goldenResult struct {
	Skipped     string                `json:"skipped,omitempty"`
	Message     string                `json:"message,omitempty"`
	Warnings    []string              `json:"warnings,omitempty"`
	MeshService string                `json:"meshService,omitempty"`
	Patch       []jsonpatch.Operation `json:"patch"`
}

func injectCase(t testing.TB, c corpusCase) (*corev1.Pod, sidecar.Result, string) {
	pod := loadPod(t, cmp.Or(c.pod, c.name))
	ms := c.ms
	if ms == nil {
		var others []string
		ms, others = sidecar.SelectMeshService(pod, twoMeshServices())
		if ms == nil || len(others) != 1 {
			t.Fatalf("SelectMeshService() = %v, %v", ms, others)
		}
	}
	return pod, sidecar.Inject(pod, ms, c.version, c.opts), ms.Name
}

func TestInjectionMatchesTheGoldenPatches(t *testing.T) {
	cases := corpus()
	if len(cases) < 15 {
		t.Fatalf("the corpus has %d pods, want at least 15", len(cases))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pod, res, msName := injectCase(t, c)
			patch, err := sidecar.InjectionPatch(encode(t, pod), pod, res.Pod)
			if err != nil {
				t.Fatal(err)
			}
			got := goldenResult{Skipped: res.Skipped, Message: res.Message, Warnings: res.Warnings, MeshService: msName, Patch: patch}
			if got.Patch == nil {
				got.Patch = []jsonpatch.Operation{}
			}
			file := filepath.Join("testdata", "golden", c.name+".json")
			if *update {
				// The values' keys sorted, so that a golden file changes only when the patch does.
				data, err := json.Marshal(got.Patch)
				if err != nil {
					t.Fatal(err)
				}
				if err := json.Unmarshal(data, &got.Patch); err != nil {
					t.Fatal(err)
				}
				if data, err = json.MarshalIndent(got, "", "  "); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(file, append(data, '\n'), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatalf("%v (run `go test ./internal/sidecar -update` to create it)", err)
			}
			var want goldenResult
			if err := json.Unmarshal(data, &want); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			if got.Skipped != want.Skipped || got.Message != want.Message || got.MeshService != want.MeshService {
				t.Errorf("skipped/message/meshService = %q/%q/%q, want %q/%q/%q (run with -update to accept)",
					got.Skipped, got.Message, got.MeshService, want.Skipped, want.Message, want.MeshService)
			}
			if !slices.Equal(got.Warnings, want.Warnings) {
				t.Errorf("warnings = %q, want %q (run with -update to accept)", got.Warnings, want.Warnings)
			}
			// Patches are compared by what they do: both applied to the pod must give the same pod.
			gotPod, wantPod := applyPatch(t, pod, got.Patch), applyPatch(t, pod, want.Patch)
			if !bytes.Equal(gotPod, wantPod) {
				t.Errorf("injection of %s differs from %s (run with -update to accept):\n%s", c.name, file, diffLines(string(wantPod), string(gotPod)))
			}
		})
	}
}

// applyPatch applies a JSON patch to the pod the way the API server does and returns the result
// as indented JSON with sorted keys.
func applyPatch(t *testing.T, pod *corev1.Pod, patch []jsonpatch.Operation) []byte {
	t.Helper()
	original, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	ops, err := json.Marshal(patch)
	if err != nil {
		t.Fatal(err)
	}
	decoded, err := jsonpatchapply.DecodePatch(ops)
	if err != nil {
		t.Fatalf("the patch is not a valid JSON patch: %v", err)
	}
	patched, err := decoded.Apply(original)
	if err != nil {
		t.Fatalf("the patch does not apply to the pod: %v", err)
	}
	var generic map[string]any
	if err := json.Unmarshal(patched, &generic); err != nil {
		t.Fatal(err)
	}
	out, err := json.MarshalIndent(generic, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestInjectingAnInjectedPodChangesNothing(t *testing.T) {
	for _, c := range corpus() {
		t.Run(c.name, func(t *testing.T) {
			_, first, _ := injectCase(t, c)
			ms := c.ms
			if ms == nil {
				ms, _ = sidecar.SelectMeshService(first.Pod, twoMeshServices())
			}
			second := sidecar.Inject(first.Pod, ms, c.version, c.opts)
			if !equality.Semantic.DeepEqual(first.Pod, second.Pod) {
				t.Errorf("inject(inject(pod)) differs from inject(pod)")
			}
			if first.Skipped == "" && second.Skipped != sidecar.SkipAlreadyInjected {
				t.Errorf("second injection skipped = %q, want %s", second.Skipped, sidecar.SkipAlreadyInjected)
			}
		})
	}
}

func TestInjectionDoesNotModifyItsInput(t *testing.T) {
	for _, c := range corpus() {
		t.Run(c.name, func(t *testing.T) {
			pod, _, _ := injectCase(t, c)
			if !equality.Semantic.DeepEqual(pod, loadPod(t, cmp.Or(c.pod, c.name))) {
				t.Error("Inject modified the pod it was given")
			}
		})
	}
}

// diffLines shows the lines that differ, enough to see what changed.
func diffLines(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var out []string
	for i := range max(len(w), len(g)) {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			out = append(out, "- "+wl, "+ "+gl)
		}
		if len(out) > 40 {
			break
		}
	}
	return strings.Join(slices.Clip(out), "\n")
}

// encode is the pod as the API server sends it to the injector.
func encode(t testing.TB, pod *corev1.Pod) []byte {
	t.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}
