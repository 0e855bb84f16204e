package webhooks_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	jsonpatchapply "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/sidecar"
	"github.com/meshlift/meshlift/internal/testutil/gen"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
	"github.com/meshlift/meshlift/webhooks"
)

const timeout = 20 * time.Second

// meshed creates a namespace with a SidecarVersion and a MeshService "web" pinned to it, and
// waits until the webhook's cache sees them.
func meshed(t *testing.T, prefix string, nsLabels map[string]string) (string, *meshv1alpha1.SidecarVersion) {
	t.Helper()
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-", Labels: nsLabels}}
	if err := env.Client.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	version := gen.SidecarVersion(ns.Name+"-proxy", "1.0.0")
	if err := env.Client.Create(ctx, version); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), version) })
	ms := gen.MeshService("web", gen.PinVersion(version.Name), gen.MeshServiceMeta(gen.SetNamespace(ns.Name)))
	if err := env.Client.Create(ctx, ms); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, timeout, func(ctx context.Context) (bool, string) {
		err1 := mgrCache.Get(ctx, client.ObjectKeyFromObject(ms), &meshv1alpha1.MeshService{})
		err2 := mgrCache.Get(ctx, client.ObjectKeyFromObject(version), &meshv1alpha1.SidecarVersion{})
		return err1 == nil && err2 == nil, fmt.Sprintf("cache: %v, %v", err1, err2)
	})
	warned.take()
	return ns.Name, version
}

func webPod(ns string) *corev1.Pod {
	return gen.Pod("", gen.PodMeta(gen.SetNamespace(ns), gen.SetLabels("app", "web"), func(m *metav1.ObjectMeta) { m.GenerateName = "web-" }))
}

func TestPodsOfAMeshServiceAreInjected(t *testing.T) {
	ns, version := meshed(t, "inject", nil)
	pod := webPod(ns)
	if err := env.Client.Create(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	// The created pod is what the API server stored after our webhook ran.
	if sidecar.Version(pod) != version.Name || sidecar.ActiveSlot(pod) != 1 || pod.Annotations[meshv1alpha1.AnnotationInjectionHash] == "" {
		t.Fatalf("pod annotations = %v, want the injection annotations", pod.Annotations)
	}
	if sidecar.SlotImage(pod, 1) != version.Spec.Image || sidecar.SlotImage(pod, 2) != version.Spec.IdleImage {
		t.Errorf("slot images = %q, %q; want %q, %q", sidecar.SlotImage(pod, 1), sidecar.SlotImage(pod, 2), version.Spec.Image, version.Spec.IdleImage)
	}
	if !slices.ContainsFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == sidecar.TokenVolume }) {
		t.Error("no projected token volume")
	}

	// The same pod through the pure function gives the same containers (after API defaulting of
	// the input, which the webhook saw too).
	want := sidecar.Inject(webPod(ns), gen.MeshService("web", gen.PinVersion(version.Name), gen.MeshServiceMeta(gen.SetNamespace(ns))),
		version, sidecar.DefaultOptions()).Pod
	for i, c := range want.Spec.InitContainers {
		got := pod.Spec.InitContainers[i]
		if got.Name != c.Name || got.Image != c.Image || !slices.Equal(got.Args, c.Args) {
			t.Errorf("init container %d = %s %s %v, want %s %s %v", i, got.Name, got.Image, got.Args, c.Name, c.Image, c.Args)
		}
	}
}

func TestPodsThatNoMeshServiceSelectsAreLeftAlone(t *testing.T) {
	ns, _ := meshed(t, "other", nil)
	pod := gen.Pod("", gen.PodMeta(gen.SetNamespace(ns), gen.SetLabels("app", "not-web"), func(m *metav1.ObjectMeta) { m.GenerateName = "x-" }))
	if err := env.Client.Create(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	if sidecar.IsInjected(pod) || len(pod.Spec.InitContainers) != 0 {
		t.Errorf("an unselected pod was injected: %v", pod.Annotations)
	}
}

// meshNamespace makes sure namespace ns exists (created with labels if it does not) and gives it
// a SidecarVersion and a MeshService msName selecting app=web (webPod), until the test ends. It
// waits until the webhook's cache sees them.
func meshNamespace(t *testing.T, ns, msName string, labels map[string]string) {
	t.Helper()
	ctx := context.Background()
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	version := gen.SidecarVersion(msName+"-"+ns, "1.0.0")
	if err := env.Client.Create(ctx, version); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), version) })
	ms := gen.MeshService(msName, gen.PinVersion(version.Name), gen.MeshServiceMeta(gen.SetNamespace(ns)),
		func(ms *meshv1alpha1.MeshService) { ms.Spec.Selector.MatchLabels = map[string]string{"app": "web"} })
	if err := env.Client.Create(ctx, ms); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), ms) })
	testenv.Eventually(t, timeout, func(ctx context.Context) (bool, string) {
		err1 := mgrCache.Get(ctx, client.ObjectKeyFromObject(ms), &meshv1alpha1.MeshService{})
		err2 := mgrCache.Get(ctx, client.ObjectKeyFromObject(version), &meshv1alpha1.SidecarVersion{})
		return err1 == nil && err2 == nil, fmt.Sprintf("cache: %v, %v", err1, err2)
	})
}

// excludedNamespaces are the namespaces the injector keeps out by itself.
func excludedNamespaces() []string {
	return append(slices.Clone(sidecar.SystemNamespaces), operatorNamespace)
}

func TestExcludedNamespacesAreNeverInjected(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name   string
		ns     string
		labels map[string]string
	}{
		{name: "kube-system", ns: "kube-system"},
		{name: "kube-public", ns: "kube-public"},
		{name: "kube-node-lease", ns: "kube-node-lease"},
		{name: "the operator's namespace", ns: operatorNamespace, labels: map[string]string{"meshlift.io/control-plane": "true"}},
		{name: "any namespace labelled as the control plane", labels: map[string]string{"meshlift.io/control-plane": "true"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ns := tt.ns
			if ns == "" {
				n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "cp-", Labels: tt.labels}}
				if err := env.Client.Create(ctx, n); err != nil {
					t.Fatal(err)
				}
				ns = n.Name
			}
			meshNamespace(t, ns, "excl", tt.labels)
			pod := webPod(ns)
			if err := env.Client.Create(ctx, pod); err != nil {
				t.Fatal(err)
			}
			if sidecar.IsInjected(pod) {
				t.Errorf("a pod in %s was injected", ns)
			}
		})
	}
}

// The handler's own decision, with the webhook configuration out of the way: what it answers for
// a pod that a MeshService of its namespace selects.
func TestTheInjectorRefusesExcludedNamespacesByItself(t *testing.T) {
	ctx := context.Background()
	injector := &webhooks.PodInjector{Reader: mgrCache, Options: sidecar.DefaultOptions(), OperatorNamespace: operatorNamespace}
	ordinary, _ := meshed(t, "guard", nil)
	tests := []struct {
		name        string
		ns          string
		wantMessage string // "" when the pod must be injected
	}{
		{"leaves a pod of kube-system unchanged although a MeshService selects it", "kube-system", "kube-system is a Kubernetes system namespace"},
		{"leaves a pod of kube-public unchanged although a MeshService selects it", "kube-public", "kube-public is a Kubernetes system namespace"},
		{"leaves a pod of kube-node-lease unchanged although a MeshService selects it", "kube-node-lease", "kube-node-lease is a Kubernetes system namespace"},
		{"leaves a pod of the operator's namespace unchanged although a MeshService selects it", operatorNamespace, operatorNamespace + " is the operator's namespace"},
		{"injects the same pod in an ordinary namespace", ordinary, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.ns != ordinary {
				meshNamespace(t, tt.ns, "guard", nil)
			}
			resp := injector.Handle(ctx, podCreation(t, webPod(tt.ns)))
			if !resp.Allowed {
				t.Fatalf("the pod was refused: %v", resp.Result)
			}
			if tt.wantMessage == "" {
				if len(resp.Patches) == 0 {
					t.Fatalf("no patch for a pod of %s: %v", tt.ns, resp.Result)
				}
				return
			}
			if len(resp.Patches) != 0 || resp.Patch != nil {
				t.Errorf("a pod of %s was patched: %v", tt.ns, resp.Patches)
			}
			if resp.Result == nil || !strings.Contains(resp.Result.Message, tt.wantMessage) {
				t.Errorf("result = %v, want a message containing %q", resp.Result, tt.wantMessage)
			}
			if len(resp.Warnings) != 0 {
				t.Errorf("warnings = %q, want none: nobody asked for these pods to be injected", resp.Warnings)
			}
		})
	}
}

// OLM writes every webhook's namespaceSelector from the OperatorGroup; for an AllNamespaces
// OperatorGroup it matches every namespace. The injector must still keep Kubernetes' system
// namespaces and its own out.
func TestExcludedNamespacesStayUninjectedWhenTheNamespaceSelectorMatchesEverything(t *testing.T) {
	ctx := context.Background()
	ordinary, _ := meshed(t, "olm", nil)
	for _, ns := range excludedNamespaces() {
		meshNamespace(t, ns, "olm", nil)
	}
	// config/webhook keeps this namespace out by its label only: once its pods are injected, the
	// API server calls the injector with the selector OLM would have written.
	labelled, _ := meshed(t, "labelled", map[string]string{"meshlift.io/control-plane": "true"})
	replaceInjectorNamespaceSelector(t, &metav1.LabelSelector{})
	testenv.Eventually(t, timeout, func(ctx context.Context) (bool, string) {
		pod := webPod(labelled)
		if err := env.Client.Create(ctx, pod, client.DryRunAll); err != nil {
			return false, err.Error()
		}
		return sidecar.IsInjected(pod), "the API server still applies the namespaceSelector of config/webhook"
	})

	for _, ns := range excludedNamespaces() {
		pod := webPod(ns)
		if err := env.Client.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = env.Client.Delete(context.Background(), pod) })
		if sidecar.IsInjected(pod) {
			t.Errorf("a pod of %s was injected", ns)
		}
	}
	pod := webPod(ordinary)
	if err := env.Client.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if !sidecar.IsInjected(pod) {
		t.Errorf("a pod of the meshed namespace %s was not injected", ordinary)
	}
}

// replaceInjectorNamespaceSelector gives the injector's webhook the namespaceSelector selector
// and no matchConditions, as OLM does, until the test ends.
func replaceInjectorNamespaceSelector(t *testing.T, selector *metav1.LabelSelector) {
	t.Helper()
	ctx := context.Background()
	config := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := env.Client.Get(ctx, client.ObjectKey{Name: "mutating-webhook-configuration"}, config); err != nil {
		t.Fatal(err)
	}
	original := config.Webhooks[0].DeepCopy()
	config.Webhooks[0].NamespaceSelector = selector
	config.Webhooks[0].MatchConditions = nil
	if err := env.Client.Update(ctx, config); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		restored := &admissionregistrationv1.MutatingWebhookConfiguration{}
		_ = env.Client.Get(context.Background(), client.ObjectKeyFromObject(config), restored)
		restored.Webhooks[0].NamespaceSelector = original.NamespaceSelector
		restored.Webhooks[0].MatchConditions = original.MatchConditions
		_ = env.Client.Update(context.Background(), restored)
	})
}

// podCreation is the admission request the API server sends when pod is created.
func podCreation(t *testing.T, pod *corev1.Pod) admission.Request {
	t.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID:       "test",
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Namespace: pod.Namespace,
		Operation: admissionv1.Create,
		Object:    runtime.RawExtension{Raw: raw},
	}}
}

func TestPodsAreAdmittedWithAWarningWhenNoVersionResolves(t *testing.T) {
	ctx := context.Background()
	ns, _ := meshed(t, "unresolved", nil)
	ms := &meshv1alpha1.MeshService{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, ms); err != nil {
		t.Fatal(err)
	}
	ms.Spec.Sidecar.Version = "does-not-exist"
	if err := env.Client.Update(ctx, ms); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, timeout, func(ctx context.Context) (bool, string) {
		cached := &meshv1alpha1.MeshService{}
		_ = mgrCache.Get(ctx, client.ObjectKeyFromObject(ms), cached)
		return cached.Spec.Sidecar.Version == "does-not-exist", "cache not updated"
	})
	warned.take()

	// A dry run is answered the same way and records nothing.
	dryRun := webPod(ns)
	if err := warnClient.Create(ctx, dryRun, client.DryRunAll); err != nil {
		t.Fatal(err)
	}
	pod := webPod(ns)
	if err := warnClient.Create(ctx, pod); err != nil {
		t.Fatalf("the pod was not admitted: %v", err)
	}
	if sidecar.IsInjected(pod) || sidecar.IsInjected(dryRun) {
		t.Fatal("a pod was injected without a resolvable version")
	}
	warnings := warned.take()
	if len(warnings) != 2 || !strings.Contains(warnings[1], "admitted without a sidecar") || !strings.Contains(warnings[1], "does-not-exist") {
		t.Errorf("warnings = %q, want one per request saying the pod has no sidecar and why", warnings)
	}
	testenv.Eventually(t, timeout, func(ctx context.Context) (bool, string) {
		events := &eventsv1.EventList{}
		if err := env.Client.List(ctx, events, client.InNamespace(ns)); err != nil {
			return false, err.Error()
		}
		var skipped int
		for _, e := range events.Items {
			if e.Reason == "InjectionSkipped" && e.Regarding.Name == "web" {
				skipped++
			}
		}
		return skipped == 1, fmt.Sprintf("%d InjectionSkipped events, want 1 (none for the dry run)", skipped)
	})
}

func TestOptedOutPodsAreLeftAlone(t *testing.T) {
	ns, _ := meshed(t, "optout", nil)
	pod := webPod(ns)
	pod.Annotations = map[string]string{meshv1alpha1.AnnotationInject: "false"}
	if err := warnClient.Create(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	if sidecar.IsInjected(pod) {
		t.Error("an opted-out pod was injected")
	}
	if w := warned.take(); len(w) != 0 {
		t.Errorf("opting out produced warnings %q", w)
	}
}

// With failurePolicy Ignore, pods are created while the injector cannot be reached, without a
// sidecar: docs/injection.md explains the choice.
func TestPodsAreCreatedWhileTheInjectorIsDown(t *testing.T) {
	ctx := context.Background()
	ns, _ := meshed(t, "down", nil)
	config := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := env.Client.Get(ctx, client.ObjectKey{Name: "mutating-webhook-configuration"}, config); err != nil {
		t.Fatal(err)
	}
	if got := *config.Webhooks[0].FailurePolicy; got != admissionregistrationv1.Ignore {
		t.Fatalf("failurePolicy = %s, want Ignore", got)
	}
	original := config.Webhooks[0].ClientConfig.URL
	unreachable := "https://127.0.0.1:1/inject-v1-pod" // nothing listens on port 1
	config.Webhooks[0].ClientConfig.URL = &unreachable
	if err := env.Client.Update(ctx, config); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		restored := &admissionregistrationv1.MutatingWebhookConfiguration{}
		_ = env.Client.Get(context.Background(), client.ObjectKeyFromObject(config), restored)
		restored.Webhooks[0].ClientConfig.URL = original
		_ = env.Client.Update(context.Background(), restored)
	})
	// The API server picks the configuration change up within a moment; from then on pods are
	// created uninjected rather than refused.
	testenv.Eventually(t, timeout, func(ctx context.Context) (bool, string) {
		pod := webPod(ns)
		if err := env.Client.Create(ctx, pod); err != nil {
			return false, fmt.Sprintf("pod creation failed while the injector is down: %v", err)
		}
		return !sidecar.IsInjected(pod), "the old configuration still injected"
	})
}

// An API server newer than the operator's client sends fields our Go types do not know. The
// injector's patch must keep them: it adds the sidecar and touches nothing else, so the pod the
// API server stores is the pod it sent plus the sidecar, and the sidecar is the same as ever.
func TestTheInjectorKeepsFieldsItDoesNotKnow(t *testing.T) {
	ns, version := meshed(t, "future", nil)
	raw := []byte(`{
		"apiVersion": "v1", "kind": "Pod", "futureTopLevel": {"a": 1},
		"metadata": {"generateName": "web-", "namespace": "` + ns + `", "labels": {"app": "web"},
			"annotations": {"team": "shop"}, "futureMetadata": ["x"]},
		"spec": {
			"futureSpec": {"nested": [1, 2.5, "three"]},
			"containers": [{"name": "web", "image": "web:1", "futureContainer": true,
				"resources": {"requests": {"cpu": "0.5"}}}],
			"volumes": [{"name": "data", "emptyDir": {}, "futureVolume": 7}]
		},
		"status": {"futureStatus": "s"}
	}`)
	review := `{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "future",
		"kind": {"group": "", "version": "v1", "kind": "Pod"}, "resource": {"group": "", "version": "v1", "resource": "pods"},
		"namespace": "` + ns + `", "operation": "CREATE", "object": ` + string(raw) + `}}`
	injector := &webhook.Admission{Handler: &webhooks.PodInjector{Reader: mgrCache, Options: sidecar.DefaultOptions(), OperatorNamespace: operatorNamespace}}
	req := httptest.NewRequest(http.MethodPost, webhooks.PodInjectorPath, strings.NewReader(review))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	injector.ServeHTTP(rec, req)
	var answer admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &answer); err != nil || answer.Response == nil {
		t.Fatalf("HTTP %d, not an AdmissionReview (%v): %s", rec.Code, err, rec.Body.String())
	}
	if !answer.Response.Allowed || len(answer.Response.Patch) == 0 {
		t.Fatalf("the pod was not injected: %+v", answer.Response)
	}
	patch, err := jsonpatchapply.DecodePatch(answer.Response.Patch)
	if err != nil {
		t.Fatalf("the answer carries no valid JSON patch: %v", err)
	}
	patched, err := patch.Apply(raw)
	if err != nil {
		t.Fatalf("the patch does not apply to the pod: %v", err)
	}

	var doc map[string]any
	if err := json.Unmarshal(patched, &doc); err != nil {
		t.Fatal(err)
	}
	for _, kept := range []struct {
		path []any // object keys and list indexes
		want any
	}{
		{[]any{"futureTopLevel", "a"}, 1.0},
		{[]any{"metadata", "futureMetadata", 0}, "x"},
		{[]any{"metadata", "annotations", "team"}, "shop"},
		{[]any{"spec", "futureSpec", "nested", 2}, "three"},
		{[]any{"spec", "containers", 0, "futureContainer"}, true},
		{[]any{"spec", "containers", 0, "resources", "requests", "cpu"}, "0.5"}, // not re-encoded as 500m
		{[]any{"spec", "volumes", 0, "futureVolume"}, 7.0},
		{[]any{"status", "futureStatus"}, "s"},
	} {
		if got := lookup(doc, kept.path...); got != kept.want {
			t.Errorf("%v = %v after the patch, want %v", kept.path, got, kept.want)
		}
	}

	// What the Go types see is the pod that sidecar.Inject renders, as before.
	got, original := &corev1.Pod{}, &corev1.Pod{}
	if err := json.Unmarshal(patched, got); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, original); err != nil {
		t.Fatal(err)
	}
	ms := &meshv1alpha1.MeshService{}
	if err := mgrCache.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "web"}, ms); err != nil {
		t.Fatal(err)
	}
	want := sidecar.Inject(original, ms, version, sidecar.DefaultOptions()).Pod
	if !equality.Semantic.DeepEqual(got, want) {
		t.Errorf("the patched pod differs from the injected pod:\n got %+v\nwant %+v", got, want)
	}
}

// lookup follows path (object keys and list indexes) in a decoded JSON document; nil if absent.
func lookup(doc any, path ...any) any {
	for _, step := range path {
		switch step := step.(type) {
		case string:
			object, _ := doc.(map[string]any)
			doc = object[step]
		case int:
			list, _ := doc.([]any)
			if step >= len(list) {
				return nil
			}
			doc = list[step]
		}
	}
	return doc
}

// A container of the application that mounts a volume the sidecar reserves would share the
// proxy's run directory, and with it the handoff socket that hands the inbound listeners over.
// The injector leaves such a pod alone, warns the client and records why on the MeshService.
func TestPodsThatMountTheSidecarsVolumesAreNotInjected(t *testing.T) {
	ctx := context.Background()
	ns, _ := meshed(t, "reserved", nil)
	snoop := func(declare bool) *corev1.Pod {
		pod := webPod(ns)
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{
			Name: "snoop", Image: "busybox",
			VolumeMounts: []corev1.VolumeMount{{Name: sidecar.RunVolume, MountPath: sidecar.RunDir}},
		})
		if declare {
			pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: sidecar.RunVolume,
				VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
		}
		return pod
	}
	const wantWarning = "container snoop mounts volume meshlift-run, which only the sidecar may mount"

	t.Run("a pod that declares the volume itself is admitted without a sidecar", func(t *testing.T) {
		warned.take()
		pod := snoop(true)
		if err := warnClient.Create(ctx, pod); err != nil {
			t.Fatalf("the pod was not admitted: %v", err)
		}
		if sidecar.IsInjected(pod) || len(pod.Spec.InitContainers) != 0 ||
			slices.ContainsFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == sidecar.TokenVolume }) {
			t.Fatalf("the pod was injected: annotations %v, init containers %d, volumes %v", pod.Annotations, len(pod.Spec.InitContainers), pod.Spec.Volumes)
		}
		if got := strings.Join(warned.take(), "\n"); !strings.Contains(got, "admitted without a sidecar") || !strings.Contains(got, wantWarning) ||
			!strings.Contains(got, "give the pod's own volume another name") {
			t.Errorf("warnings = %q, want one that says the pod has no sidecar, why and what to fix", got)
		}
		waitForSkippedEvent(t, ns, wantWarning)
	})

	t.Run("a pod that relies on the sidecar's volume is admitted without it, and Kubernetes refuses it", func(t *testing.T) {
		warned.take()
		pod := snoop(false)
		err := warnClient.Create(ctx, pod)
		// Injected, the pod would have been valid: the injector would have added the volume.
		if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "volumeMounts[0].name: Not found") {
			t.Fatalf("create returned %v, want the API server to refuse a mount of a volume the pod does not declare", err)
		}
		if got := strings.Join(warned.take(), "\n"); !strings.Contains(got, wantWarning) {
			t.Errorf("warnings = %q, want one that says why the pod got no sidecar", got)
		}
	})
}

// waitForSkippedEvent waits for an InjectionSkipped event on MeshService web whose note contains
// want. (A pod created with generateName has no name yet when the injector sees it.)
func waitForSkippedEvent(t *testing.T, ns, want string) {
	t.Helper()
	testenv.Eventually(t, timeout, func(ctx context.Context) (bool, string) {
		events := &eventsv1.EventList{}
		if err := env.Client.List(ctx, events, client.InNamespace(ns)); err != nil {
			return false, err.Error()
		}
		var notes []string
		for _, e := range events.Items {
			if e.Reason == webhooks.EventReasonInjectionSkipped && e.Regarding.Kind == "MeshService" && e.Regarding.Name == "web" {
				if strings.Contains(e.Note, want) {
					return true, ""
				}
				notes = append(notes, e.Note)
			}
		}
		return false, fmt.Sprintf("no InjectionSkipped event saying %q on MeshService web; events: %q", want, notes)
	})
}
