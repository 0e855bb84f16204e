//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/meshlift/meshlift/internal/argocd"
	"github.com/meshlift/meshlift/internal/repo"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

// Argo CD cannot be built here, so this file does what it does with config/argocd, step by step
// and with the same API calls: it builds each Application's path with kustomize, syncs it by
// server-side apply (field manager argocd-controller, conflicts forced) one sync wave at a time,
// waiting until every object of a wave is Healthy (Meshlift's kinds by the Lua health checks of
// config/argocd, evaluated as Argo CD does), and compares as Argo CD's server-side diff does: a
// dry-run apply of the same manifests against the live objects, with the Application's
// ignoreDifferences removed from both.

const argoFieldManager = "argocd-controller"

// argoApplication is the part of an Argo CD Application this test reads.
type argoApplication struct {
	Metadata metav1.ObjectMeta `json:"metadata"`
	Spec     struct {
		Source struct {
			Path string `json:"path"`
		} `json:"source"`
		IgnoreDifferences []argoIgnore `json:"ignoreDifferences"`
		SyncPolicy        struct {
			SyncOptions []string `json:"syncOptions"`
		} `json:"syncPolicy"`
	} `json:"spec"`
}

type argoIgnore struct {
	Group             string   `json:"group"`
	Kind              string   `json:"kind"`
	Name              string   `json:"name"`
	JQPathExpressions []string `json:"jqPathExpressions"`
}

func readApplication(t *testing.T, root, name string) argoApplication {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, "config", "argocd", "applications", name))
	if err != nil {
		t.Fatal(err)
	}
	var app argoApplication
	if err := sigsyaml.Unmarshal(raw, &app); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if !slices.Contains(app.Spec.SyncPolicy.SyncOptions, "ServerSideApply=true") {
		t.Errorf("%s does not sync with ServerSideApply=true", name)
	}
	if len(app.Spec.IgnoreDifferences) > 0 && !slices.Contains(app.Spec.SyncPolicy.SyncOptions, "RespectIgnoreDifferences=true") {
		t.Errorf("%s has ignoreDifferences without RespectIgnoreDifferences=true", name)
	}
	return app
}

// kustomizeBuild builds dir with the kustomize the Makefile built.
func kustomizeBuild(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	kustomize := os.Getenv("E2E_KUSTOMIZE")
	if kustomize == "" {
		t.Fatal("E2E_KUSTOMIZE is not set: run the suite with `make test-e2e`")
	}
	out, err := exec.Command(kustomize, "build", dir).Output()
	if err != nil {
		t.Fatalf("kustomize build %s: %v %s", dir, err, stderrOf(err))
	}
	decoder := yaml.NewYAMLOrJSONDecoder(strings.NewReader(string(out)), 4096)
	var objs []*unstructured.Unstructured
	for {
		obj := &unstructured.Unstructured{}
		if err := decoder.Decode(&obj.Object); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatalf("decoding the output of kustomize build %s: %v", dir, err)
		}
		if len(obj.Object) > 0 {
			objs = append(objs, obj)
		}
	}
	return objs
}

func stderrOf(err error) string {
	if exitErr, ok := err.(*exec.ExitError); ok {
		return string(exitErr.Stderr)
	}
	return ""
}

// onTheLocalCluster builds an Application's path as `make deploy` adapts config/default to the
// local cluster (config/local: a cluster without DNS): a kustomization that takes the path as
// its resource and config/local's patches. These change nothing else, so the objects are the
// ones the running operator was installed from, plus what config/argocd adds.
func onTheLocalCluster(t *testing.T, root, path string) []*unstructured.Unstructured {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, "config", "local", "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var local map[string]any
	if err := sigsyaml.Unmarshal(raw, &local); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	base, err := filepath.Rel(dir, filepath.Join(root, path)) // kustomize takes no absolute resource paths
	if err != nil {
		t.Fatal(err)
	}
	local["resources"] = []string{base}
	overlay, err := sigsyaml.Marshal(local)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), overlay, 0o644); err != nil {
		t.Fatal(err)
	}
	return kustomizeBuild(t, dir)
}

// syncWave returns an object's Argo CD sync wave (0 without the annotation).
func syncWave(t *testing.T, obj *unstructured.Unstructured) int {
	t.Helper()
	value, ok := obj.GetAnnotations()["argocd.argoproj.io/sync-wave"]
	if !ok {
		return 0
	}
	wave, err := strconv.Atoi(value)
	if err != nil {
		t.Fatalf("%s %s: sync-wave %q: %v", obj.GetKind(), obj.GetName(), value, err)
	}
	return wave
}

// argoSync applies objs as Argo CD syncs an Application: wave by wave, each object by
// server-side apply, the next wave only once every object of this one is Healthy.
func argoSync(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	waves := map[int][]*unstructured.Unstructured{}
	for _, obj := range objs {
		waves[syncWave(t, obj)] = append(waves[syncWave(t, obj)], obj)
	}
	order := make([]int, 0, len(waves))
	for wave := range waves {
		order = append(order, wave)
	}
	slices.Sort(order)
	for _, wave := range order {
		for _, obj := range waves[wave] {
			if _, err := argoApply(context.Background(), obj, false); err != nil {
				t.Fatalf("wave %d: %v", wave, err)
			}
		}
		started := time.Now()
		testenv.Eventually(t, 3*time.Minute, func(ctx context.Context) (bool, string) {
			for _, obj := range waves[wave] {
				if h := liveHealth(t, ctx, obj); h.Status != argocd.StatusHealthy {
					return false, fmt.Sprintf("wave %d: %s %s is %s: %s", wave, obj.GetKind(), obj.GetName(), h.Status, h.Message)
				}
			}
			return true, ""
		})
		t.Logf("sync wave %d: %d objects applied and Healthy in %s", wave, len(waves[wave]), time.Since(started).Round(time.Millisecond))
	}
}

// dynamicClient is made once, by the first resourceFor (the e2e tests do not run in parallel).
var dynamicClient dynamic.Interface

func resourceFor(obj *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := obj.GroupVersionKind()
	mapping, err := k8s.RESTMapper().RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, fmt.Errorf("no resource for %s: %w", gvk, err)
	}
	if dynamicClient == nil {
		if dynamicClient, err = dynamic.NewForConfig(cfg); err != nil {
			return nil, err
		}
	}
	dyn := dynamicClient
	if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		return dyn.Resource(mapping.Resource).Namespace(obj.GetNamespace()), nil
	}
	return dyn.Resource(mapping.Resource), nil
}

// argoApply is Argo CD's server-side apply of one object (a dry run when dryRun).
func argoApply(ctx context.Context, obj *unstructured.Unstructured, dryRun bool) (*unstructured.Unstructured, error) {
	resource, err := resourceFor(obj)
	if err != nil {
		return nil, err
	}
	opts := metav1.ApplyOptions{FieldManager: argoFieldManager, Force: true}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	out, err := resource.Apply(ctx, obj.GetName(), obj, opts)
	if err != nil {
		return nil, fmt.Errorf("server-side apply of %s %s: %w", obj.GetKind(), obj.GetName(), err)
	}
	return out, nil
}

func getLive(ctx context.Context, obj *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	resource, err := resourceFor(obj)
	if err != nil {
		return nil, err
	}
	return resource.Get(ctx, obj.GetName(), metav1.GetOptions{})
}

// liveHealth is the health Argo CD gives the live object: the Lua checks of config/argocd for
// Meshlift's kinds, Argo CD's built-in rules for the kinds of the operator's install, and
// Healthy for kinds without a health check (RBAC, Services, webhook configurations).
func liveHealth(t *testing.T, ctx context.Context, obj *unstructured.Unstructured) argocd.Health {
	t.Helper()
	live, err := getLive(ctx, obj)
	if apierrors.IsNotFound(err) {
		return argocd.Health{Status: argocd.StatusMissing}
	}
	if err != nil {
		return argocd.Health{Status: argocd.StatusUnknown, Message: err.Error()}
	}
	if script, ok := meshHealthScripts(t)[live.GetKind()]; ok && live.GroupVersionKind().Group == "mesh.meshlift.io" {
		h, err := argocd.Evaluate(script, live.Object, argocd.ConfigMapLibraries)
		if err != nil {
			t.Fatalf("health of %s %s: %v", live.GetKind(), live.GetName(), err)
		}
		return h
	}
	switch live.GetKind() {
	case "CustomResourceDefinition":
		conditions, _, _ := unstructured.NestedSlice(live.Object, "status", "conditions")
		for _, c := range conditions {
			if c, ok := c.(map[string]any); ok && c["type"] == "Established" && c["status"] == "True" {
				return argocd.Health{Status: argocd.StatusHealthy}
			}
		}
		return argocd.Health{Status: argocd.StatusProgressing, Message: "not established yet"}
	case "Namespace":
		if phase, _, _ := unstructured.NestedString(live.Object, "status", "phase"); phase != "Active" {
			return argocd.Health{Status: argocd.StatusProgressing, Message: "namespace " + phase}
		}
	case "Deployment":
		generation, observed := live.GetGeneration(), nestedInt(live, "status", "observedGeneration")
		replicas, updated, available := nestedInt(live, "spec", "replicas"), nestedInt(live, "status", "updatedReplicas"), nestedInt(live, "status", "availableReplicas")
		if observed < generation || updated < replicas || available < replicas {
			return argocd.Health{Status: argocd.StatusProgressing, Message: fmt.Sprintf("%d of %d replicas updated, %d available", updated, replicas, available)}
		}
	}
	return argocd.Health{Status: argocd.StatusHealthy}
}

func nestedInt(obj *unstructured.Unstructured, fields ...string) int64 {
	v, _, _ := unstructured.NestedInt64(obj.Object, fields...)
	return v
}

var meshScripts map[string]string

func meshHealthScripts(t *testing.T) map[string]string {
	t.Helper()
	if meshScripts == nil {
		root, err := repo.Root()
		if err != nil {
			t.Fatal(err)
		}
		cs, err := argocd.LoadCustomizations(filepath.Join(root, "config", "argocd", "resource_customizations"))
		if err != nil {
			t.Fatal(err)
		}
		meshScripts = map[string]string{}
		for _, c := range cs {
			if c.Group == "mesh.meshlift.io" {
				meshScripts[c.Kind] = c.Script
			}
		}
	}
	return meshScripts
}

// appHealth is an Application's health as Argo CD sums it up: the worst of its resources.
func appHealth(t *testing.T, ctx context.Context, objs []*unstructured.Unstructured) argocd.Health {
	t.Helper()
	rank := map[string]int{argocd.StatusHealthy: 0, argocd.StatusSuspended: 1, argocd.StatusProgressing: 2, argocd.StatusMissing: 3, argocd.StatusDegraded: 4, argocd.StatusUnknown: 5}
	worst := argocd.Health{Status: argocd.StatusHealthy}
	for _, obj := range objs {
		if h := liveHealth(t, ctx, obj); rank[h.Status] > rank[worst.Status] {
			worst = argocd.Health{Status: h.Status, Message: obj.GetKind() + " " + obj.GetName() + ": " + h.Message}
		}
	}
	return worst
}

// argoDiff returns what Argo CD's server-side diff would report for objs: for each object, the
// JSON paths where a dry-run apply of it differs from the live object, ignoring managedFields,
// resourceVersion and the Application's ignoreDifferences.
func argoDiff(t *testing.T, objs []*unstructured.Unstructured, ignores []argoIgnore) []string {
	t.Helper()
	ctx := context.Background()
	var drift []string
	for _, obj := range objs {
		live, err := getLive(ctx, obj)
		if err != nil {
			t.Fatal(err)
		}
		predicted, err := argoApply(ctx, obj, true)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range []*unstructured.Unstructured{live, predicted} {
			unstructured.RemoveNestedField(o.Object, "metadata", "managedFields")
			unstructured.RemoveNestedField(o.Object, "metadata", "resourceVersion")
			for _, ignore := range ignores {
				gvk := obj.GroupVersionKind()
				if ignore.Group != gvk.Group || ignore.Kind != gvk.Kind || (ignore.Name != "" && ignore.Name != obj.GetName()) {
					continue
				}
				for _, expr := range ignore.JQPathExpressions {
					if err := removeJQPath(o.Object, expr); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		for _, path := range differences("", predicted.Object, live.Object) {
			drift = append(drift, fmt.Sprintf("%s %s: %s", obj.GetKind(), obj.GetName(), path))
		}
	}
	return drift
}

// differences lists the paths where a and b differ.
func differences(path string, a, b any) []string {
	am, aIsMap := a.(map[string]any)
	bm, bIsMap := b.(map[string]any)
	if aIsMap && bIsMap {
		var out []string
		keys := map[string]bool{}
		for k := range am {
			keys[k] = true
		}
		for k := range bm {
			keys[k] = true
		}
		for k := range keys {
			out = append(out, differences(path+"."+k, am[k], bm[k])...)
		}
		slices.Sort(out)
		return out
	}
	as, aIsSlice := a.([]any)
	bs, bIsSlice := b.([]any)
	if aIsSlice && bIsSlice && len(as) == len(bs) {
		var out []string
		for i := range as {
			out = append(out, differences(fmt.Sprintf("%s[%d]", path, i), as[i], bs[i])...)
		}
		return out
	}
	if reflect.DeepEqual(a, b) {
		return nil
	}
	return []string{fmt.Sprintf("%s: predicted %v, live %v", path, a, b)}
}

// removeJQPath removes what a jq path expression of ignoreDifferences selects, for the forms
// Meshlift's Applications use: .field, .list[], .list[]? chained (for example
// .webhooks[]?.clientConfig.caBundle).
func removeJQPath(obj map[string]any, expr string) error {
	if !strings.HasPrefix(expr, ".") {
		return fmt.Errorf("jq path %q: this test understands .a.b[]?.c forms only", expr)
	}
	var remove func(node any, segments []string) error
	remove = func(node any, segments []string) error {
		m, ok := node.(map[string]any)
		if !ok {
			return nil
		}
		segment := segments[0]
		iterate := strings.HasSuffix(segment, "[]") || strings.HasSuffix(segment, "[]?")
		field := strings.TrimSuffix(strings.TrimSuffix(segment, "?"), "[]")
		if field == "" || strings.ContainsAny(field, "[]()|?\"") {
			return fmt.Errorf("jq path %q: this test understands .a.b[]?.c forms only", expr)
		}
		child, found := m[field]
		if !found {
			return nil
		}
		rest := segments[1:]
		switch {
		case iterate:
			items, _ := child.([]any)
			for _, item := range items {
				if len(rest) == 0 {
					return fmt.Errorf("jq path %q: removing list items is not supported here", expr)
				}
				if err := remove(item, rest); err != nil {
					return err
				}
			}
		case len(rest) == 0:
			delete(m, field)
		default:
			return remove(child, rest)
		}
		return nil
	}
	return remove(obj, strings.Split(strings.TrimPrefix(expr, "."), "."))
}

// isolate moves the demo's mesh objects (config/argocd/mesh) and app (config/demo/app) into the
// test's namespace, so the test neither touches nor depends on a `make demo` on the same
// cluster: the Namespace object is left out (ns stands in for it), the cluster-scoped
// SidecarVersions are renamed after ns, and a default version becomes a pin of the
// MeshServices (a second default in the cluster would make both unusable).
func isolate(t *testing.T, objs []*unstructured.Unstructured, ns string) []*unstructured.Unstructured {
	t.Helper()
	rename := func(version string) string { return ns + "-" + version }
	defaultVersion := ""
	for _, obj := range objs {
		if obj.GetKind() == "SidecarVersion" {
			if isDefault, _, _ := unstructured.NestedBool(obj.Object, "spec", "default"); isDefault {
				defaultVersion = rename(obj.GetName())
			}
		}
	}
	var out []*unstructured.Unstructured
	for _, obj := range objs {
		obj = obj.DeepCopy()
		switch obj.GetKind() {
		case "Namespace":
			continue
		case "SidecarVersion":
			obj.SetName(rename(obj.GetName()))
			unstructured.RemoveNestedField(obj.Object, "spec", "default")
			out = append(out, obj)
			continue
		case "MeshService":
			if defaultVersion != "" {
				if err := unstructured.SetNestedField(obj.Object, defaultVersion, "spec", "sidecar", "version"); err != nil {
					t.Fatal(err)
				}
			}
		case "UpgradePlan":
			target, _, _ := unstructured.NestedString(obj.Object, "spec", "targetVersion")
			if err := unstructured.SetNestedField(obj.Object, rename(target), "spec", "targetVersion"); err != nil {
				t.Fatal(err)
			}
		}
		obj.SetNamespace(ns)
		out = append(out, obj)
	}
	return out
}

func deleteAll(objs []*unstructured.Unstructured) {
	for _, obj := range objs {
		if resource, err := resourceFor(obj); err == nil {
			_ = resource.Delete(context.Background(), obj.GetName(), metav1.DeleteOptions{})
		}
	}
}

// TestTheArgoCDApplicationsSyncInWavesStayInSyncAndShowAnUpgradeFromGit syncs the operator's
// Application over the running operator, then the demo's mesh and app Applications in a new
// namespace, each in wave order; shows that a server-side diff finds nothing outside
// ignoreDifferences once the operator has run; then changes the UpgradePlan's targetVersion "in
// Git" and follows the health of the plan and of its Application, as Argo CD would show them,
// from Progressing to Healthy.
func TestTheArgoCDApplicationsSyncInWavesStayInSyncAndShowAnUpgradeFromGit(t *testing.T) {
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	operatorApp := readApplication(t, root, "meshlift-operator.yaml")
	meshApp := readApplication(t, root, "meshlift-demo-mesh.yaml")
	demoApp := readApplication(t, root, "meshlift-demo-app.yaml")
	waveOf := func(app argoApplication) int {
		wave, _ := strconv.Atoi(app.Metadata.Annotations["argocd.argoproj.io/sync-wave"])
		return wave
	}
	if !(waveOf(operatorApp) < waveOf(meshApp) && waveOf(meshApp) < waveOf(demoApp)) {
		t.Errorf("the Applications' sync waves are %d, %d, %d: want the operator, then the mesh, then the app",
			waveOf(operatorApp), waveOf(meshApp), waveOf(demoApp))
	}

	// The operator: every object in its wave.
	operator := onTheLocalCluster(t, root, operatorApp.Spec.Source.Path)
	checkOperatorWaves(t, operator)
	argoSync(t, operator)
	if drift := argoDiff(t, operator, operatorApp.Spec.IgnoreDifferences); len(drift) > 0 {
		t.Errorf("the operator's Application is out of sync after the operator ran:\n%s", strings.Join(drift, "\n"))
	}

	// The demo's mesh objects and app in a namespace of their own.
	ns := createNamespace(t, "e2e-argocd")
	mesh := isolate(t, kustomizeBuild(t, filepath.Join(root, meshApp.Spec.Source.Path)), ns)
	app := isolate(t, kustomizeBuild(t, filepath.Join(root, demoApp.Spec.Source.Path)), ns)
	t.Cleanup(func() { deleteAll(mesh) })
	argoSync(t, mesh)
	argoSync(t, app)
	waitForMeshedPods(t, ns, "demo", 3)
	var plan *unstructured.Unstructured
	for _, obj := range mesh {
		if obj.GetKind() == "UpgradePlan" {
			plan = obj
		}
	}
	if plan == nil {
		t.Fatalf("%s has no UpgradePlan", meshApp.Spec.Source.Path)
	}
	for name, objs := range map[string][]*unstructured.Unstructured{"mesh": mesh, "app": app} {
		if drift := argoDiff(t, objs, nil); len(drift) > 0 {
			t.Errorf("the demo's %s Application is out of sync:\n%s", name, strings.Join(drift, "\n"))
		}
	}

	// The upgrade is a commit that changes targetVersion; Argo CD syncs it.
	from, _, _ := unstructured.NestedString(plan.Object, "spec", "targetVersion")
	to := ns + "-proxy-v2"
	if err := unstructured.SetNestedField(plan.Object, to, "spec", "targetVersion"); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	if _, err := argoApply(context.Background(), plan, false); err != nil {
		t.Fatal(err)
	}
	var timeline []string
	last := ""
	testenv.Eventually(t, 5*time.Minute, func(ctx context.Context) (bool, string) {
		planHealth, appH := liveHealth(t, ctx, plan), appHealth(t, ctx, mesh)
		now := "plan " + planHealth.Status + " (" + planHealth.Message + "), application " + appH.Status
		if appH.Status != argocd.StatusHealthy {
			now += " (" + appH.Message + ")"
		}
		if now != last {
			timeline = append(timeline, fmt.Sprintf("%5.1fs %s", time.Since(started).Seconds(), now))
			last = now
		}
		return planHealth.Status == argocd.StatusHealthy && appH.Status == argocd.StatusHealthy && len(timeline) > 1, now
	})
	t.Logf("health from %s to %s, as Argo CD would show it:\n%s", from, to, strings.Join(timeline, "\n"))
	var sawProgressing bool
	for _, line := range timeline {
		sawProgressing = sawProgressing || strings.Contains(line, "plan Progressing") && strings.Contains(line, "application Progressing")
		if strings.Contains(line, argocd.StatusDegraded) || strings.Contains(line, argocd.StatusSuspended) {
			t.Errorf("a plain hot upgrade was shown %s", line)
		}
	}
	if !sawProgressing {
		t.Errorf("the plan and its Application were never shown Progressing during the upgrade")
	}
	for name, objs := range map[string][]*unstructured.Unstructured{"operator": operator, "mesh": mesh, "app": app} {
		ignores := operatorApp.Spec.IgnoreDifferences
		if name != "operator" {
			ignores = nil
		}
		if drift := argoDiff(t, objs, ignores); len(drift) > 0 {
			t.Errorf("the %s Application is out of sync after the upgrade:\n%s", name, strings.Join(drift, "\n"))
		}
	}
}

// checkOperatorWaves checks that every object of an operator overlay has its sync wave: the
// namespace and CRDs first, then RBAC (and cert-manager's objects), then the rest.
func checkOperatorWaves(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	wantWave := map[string]int{"Namespace": -2, "CustomResourceDefinition": -2, "ServiceAccount": -1, "Role": -1, "RoleBinding": -1,
		"ClusterRole": -1, "ClusterRoleBinding": -1, "Issuer": -1, "Certificate": -1, "ValidatingAdmissionPolicy": -1, "ValidatingAdmissionPolicyBinding": -1,
		"Deployment": 0, "Service": 0, "PodDisruptionBudget": 0, "MutatingWebhookConfiguration": 0, "ValidatingWebhookConfiguration": 0}
	for _, obj := range objs {
		want, known := wantWave[obj.GetKind()]
		if _, annotated := obj.GetAnnotations()["argocd.argoproj.io/sync-wave"]; !known || !annotated || syncWave(t, obj) != want {
			t.Errorf("%s %s: sync wave %q, want %d", obj.GetKind(), obj.GetName(), obj.GetAnnotations()["argocd.argoproj.io/sync-wave"], want)
		}
	}
}

// TestTheCertManagerOverlayHasTheSameWaves builds config/argocd/operator-cert-manager (the local
// cluster has no cert-manager to apply it to): every object has its wave, and cert-manager's
// Issuer and Certificate come before the operator that mounts their Secret.
func TestTheCertManagerOverlayHasTheSameWaves(t *testing.T) {
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	objs := kustomizeBuild(t, filepath.Join(root, "config", "argocd", "operator-cert-manager"))
	checkOperatorWaves(t, objs)
	kinds := map[string]bool{}
	for _, obj := range objs {
		kinds[obj.GetKind()] = true
	}
	if !kinds["Certificate"] || !kinds["Issuer"] {
		t.Errorf("the cert-manager overlay has no Certificate or Issuer: %v", kinds)
	}
}

// TestTheArgoCDConfigMapSnippetMergesAsTheDocsSay runs the command of docs/argocd.md that
// merges config/argocd/argocd-cm.yaml into an existing argocd-cm, and checks that the health
// checks are in it and the keys it had are kept.
func TestTheArgoCDConfigMapSnippetMergesAsTheDocsSay(t *testing.T) {
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	kubectl := os.Getenv("E2E_KUBECTL")
	if kubectl == "" {
		t.Fatal("E2E_KUBECTL is not set: run the suite with `make test-e2e`")
	}
	ctx := context.Background()
	argo := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "argocd"}}}
	// A namespace argocd left by an earlier run of this test may still be terminating.
	testenv.Eventually(t, 2*time.Minute, func(ctx context.Context) (bool, string) {
		live, err := getLive(ctx, argo)
		if apierrors.IsNotFound(err) {
			return true, ""
		}
		if err == nil && live.GetDeletionTimestamp() == nil {
			t.Fatal("the cluster already has a namespace argocd; this test creates and deletes its own")
		}
		return false, fmt.Sprintf("namespace argocd is still there (%v)", err)
	})
	existing := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": "argocd-cm", "namespace": "argocd"}, "data": map[string]any{"url": "https://argocd.example.com"}}}
	for _, obj := range []*unstructured.Unstructured{argo, existing} {
		if _, err := argoApply(ctx, obj, false); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { deleteAll([]*unstructured.Unstructured{argo}) })
	cmd := exec.Command(kubectl, "-n", "argocd", "patch", "configmap", "argocd-cm", "--patch-file", "config/argocd/argocd-cm.yaml")
	cmd.Dir, cmd.Env = root, append(os.Environ(), "KUBECONFIG="+os.Getenv("E2E_KUBECONFIG"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, out)
	}
	live, err := getLive(ctx, existing)
	if err != nil {
		t.Fatal(err)
	}
	data, _, _ := unstructured.NestedStringMap(live.Object, "data")
	cs, err := argocd.LoadCustomizations(filepath.Join(root, "config", "argocd", "resource_customizations"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if data[c.ConfigMapKey()] != c.Script {
			t.Errorf("after the patch, argocd-cm's %s is not %s/health.lua", c.ConfigMapKey(), c.Dir)
		}
	}
	if data["url"] != "https://argocd.example.com" {
		t.Errorf("the patch lost argocd-cm's own keys: %v", data)
	}
}
