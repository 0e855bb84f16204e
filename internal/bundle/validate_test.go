package bundle_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/operator-framework/api/pkg/manifests"
	"github.com/operator-framework/api/pkg/operators/v1alpha1"
	"github.com/operator-framework/api/pkg/validation"
	interfaces "github.com/operator-framework/api/pkg/validation/interfaces"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/meshlift/meshlift/internal/bundle"
	"github.com/meshlift/meshlift/internal/bundle/kustomize"
	"github.com/meshlift/meshlift/internal/repo"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

func root(t *testing.T) string {
	t.Helper()
	r, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestTheCommittedBundleIsCurrent generates the bundle again from config/ with the options the
// committed one was made with, and fails when anything differs (like make verify-generated).
func TestTheCommittedBundleIsCurrent(t *testing.T) {
	r := root(t)
	opts, err := bundle.OptionsOf(r)
	if err != nil {
		t.Fatalf("cannot read the committed bundle (run make bundle): %v", err)
	}
	files, err := kustomize.GenerateBundle(r, opts)
	if err != nil {
		t.Fatal(err)
	}
	diffs, err := files.Diff(r)
	if err != nil {
		t.Fatal(err)
	}
	if len(diffs) > 0 {
		t.Errorf("bundle/ or catalog/ is stale: run `make bundle BUNDLE_VERSION=%s` and commit it:\n  %s", opts.Version, strings.Join(diffs, "\n  "))
	}
}

// TestGeneratingTwiceGivesTheSameBytes guards the determinism the stale check relies on.
func TestGeneratingTwiceGivesTheSameBytes(t *testing.T) {
	r := root(t)
	opts := bundle.Options{Version: "1.2.3", Channels: []string{"stable", "candidate"}, OperatorImage: "example.com/meshlift:1.2.3", CreatedAt: "2026-01-02T03:04:05Z"}
	first, err := kustomize.GenerateBundle(r, opts)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := first.Write(dir); err != nil {
		t.Fatal(err)
	}
	second, err := kustomize.GenerateBundle(r, opts)
	if err != nil {
		t.Fatal(err)
	}
	if diffs, err := second.Diff(dir); err != nil || len(diffs) > 0 {
		t.Errorf("a second run differs: %v %v", diffs, err)
	}
	got, err := bundle.OptionsOf(dir)
	if err != nil {
		t.Fatal(err)
	}
	opts.SkipRange, opts.DefaultChannel, opts.BundleImage = ">=0.0.0 <1.2.3", "stable", "docker.io/meshlift/meshlift-operator-bundle:v1.2.3"
	if !equality.Semantic.DeepEqual(got, opts) {
		t.Errorf("OptionsOf the written bundle = %+v, want %+v", got, opts)
	}
}

// expectedWarnings are the validators' warnings docs/olm.md explains; any other warning fails.
var expectedWarnings = []string{}

// validators are operator-framework/api's validators as `operator-sdk bundle validate
// --select-optional suite=operatorframework` runs them, plus the object validators.
var validators = slices.Concat(validation.DefaultBundleValidators, interfaces.Validators{
	validation.OperatorHubV2Validator,
	validation.StandardCapabilitiesValidator,
	validation.StandardCategoriesValidator,
	validation.GoodPracticesValidator,
	validation.AlphaDeprecatedAPIsValidator,
	validation.ObjectValidator,
})

func validate(t *testing.T, dir string) (b *manifests.Bundle, errs, warnings []string) {
	t.Helper()
	b, err := manifests.GetBundleFromDir(dir)
	if err != nil {
		t.Fatalf("OLM cannot load the bundle: %v", err)
	}
	objs := append(b.ObjectsToValidate(), map[string]string{"k8s-version": repo.KubeVersion})
	for _, result := range validators.Validate(objs...) {
		for _, e := range result.Errors {
			errs = append(errs, e.Error())
		}
		for _, w := range result.Warnings {
			warnings = append(warnings, w.Error())
		}
	}
	return b, errs, warnings
}

// TestTheBundlePassesOLMValidation: no error, and no warning that docs/olm.md does not explain.
func TestTheBundlePassesOLMValidation(t *testing.T) {
	b, errs, warnings := validate(t, filepath.Join(root(t), bundle.Dir))
	for _, e := range errs {
		t.Errorf("error: %s", e)
	}
	for _, w := range warnings {
		if !slices.ContainsFunc(expectedWarnings, func(s string) bool { return strings.Contains(w, s) }) {
			t.Errorf("unexplained warning (fix it, or explain it in docs/olm.md and add it to expectedWarnings): %s", w)
		}
	}
	if b.CompressedSize >= 1<<20 {
		t.Errorf("the bundle is %d bytes compressed: OLM refuses bundles of 1 MiB and more", b.CompressedSize)
	}
	t.Logf("bundle %s: %d bytes, %d compressed; %d errors, %d warnings", b.Name, b.Size, b.CompressedSize, len(errs), len(warnings))
}

// TestTheValidatorsCatchWhatOperatorHubRefuses makes sure the validation above is not vacuous:
// the same validators on a copy of the bundle with an unknown category, no icon and no
// minKubeVersion report them.
func TestTheValidatorsCatchWhatOperatorHubRefuses(t *testing.T) {
	src := filepath.Join(root(t), bundle.Dir)
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	csvPath := filepath.Join(dir, "manifests", bundle.Package+".clusterserviceversion.yaml")
	data, err := os.ReadFile(csvPath)
	if err != nil {
		t.Fatal(err)
	}
	var csv map[string]any
	if err := yaml.Unmarshal(data, &csv); err != nil {
		t.Fatal(err)
	}
	_ = unstructured.SetNestedField(csv, "Networking,Teleportation", "metadata", "annotations", "categories")
	unstructured.RemoveNestedField(csv, "spec", "icon")
	unstructured.RemoveNestedField(csv, "spec", "minKubeVersion")
	if data, err = yaml.Marshal(csv); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(csvPath, data, 0o644); err != nil {
		t.Fatal(err)
	}
	_, errs, warnings := validate(t, dir)
	for _, want := range []string{`"Teleportation" is not in the set of standard categories`, "csv.Spec.Icon not specified", "minKubeVersion is not informed"} {
		if !slices.ContainsFunc(slices.Concat(errs, warnings), func(s string) bool { return strings.Contains(s, want) }) {
			t.Errorf("no error or warning says %q; got errors %q, warnings %q", want, errs, warnings)
		}
	}
}

func TestTheBundleAnnotationsNameThePackageAndItsChannels(t *testing.T) {
	r := root(t)
	data, err := os.ReadFile(filepath.Join(r, bundle.Dir, "metadata", "annotations.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		Annotations map[string]string `json:"annotations"`
	}
	if err := yaml.UnmarshalStrict(data, &meta); err != nil {
		t.Fatal(err)
	}
	a := meta.Annotations
	want := map[string]string{
		"operators.operatorframework.io.bundle.mediatype.v1": "registry+v1",
		"operators.operatorframework.io.bundle.manifests.v1": "manifests/",
		"operators.operatorframework.io.bundle.metadata.v1":  "metadata/",
		"operators.operatorframework.io.bundle.package.v1":   "meshlift",
		"operators.operatorframework.io.test.mediatype.v1":   "scorecard+v1",
		"operators.operatorframework.io.test.config.v1":      "tests/scorecard/",
	}
	for key, value := range want {
		if a[key] != value {
			t.Errorf("%s = %q, want %q", key, a[key], value)
		}
	}
	channels := strings.Split(a["operators.operatorframework.io.bundle.channels.v1"], ",")
	for _, ch := range channels {
		if ch != "stable" && ch != "candidate" && ch != "fast" {
			t.Errorf("channel %q is none of stable, fast, candidate", ch)
		}
	}
	if def := a["operators.operatorframework.io.bundle.channel.default.v1"]; !slices.Contains(channels, def) {
		t.Errorf("default channel %q is not one of %v", def, channels)
	}
	if len(a) != len(want)+2 {
		t.Errorf("annotations.yaml has %d keys, want %d: %v", len(a), len(want)+2, a)
	}
	dockerfile, err := os.ReadFile(filepath.Join(r, bundle.Dockerfile))
	if err != nil {
		t.Fatal(err)
	}
	for key, value := range a {
		if !strings.Contains(string(dockerfile), "LABEL "+key+"="+value+"\n") {
			t.Errorf("bundle.Dockerfile does not label %s=%s", key, value)
		}
	}
}

// TestThePermissionsAreConfigRBACs checks that OLM grants the operator's ServiceAccount exactly
// what config/rbac grants it: the generated ClusterRole cluster-wide; the generated Role and
// the leader-election Role in its namespace.
func TestThePermissionsAreConfigRBACs(t *testing.T) {
	r := root(t)
	csv := loadCSV(t)
	clusterRules, namespacedRules := testenv.GeneratedRules(t)
	var leaderElection rbacv1.Role
	data, err := os.ReadFile(filepath.Join(r, "config", "rbac", "leader_election_role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &leaderElection); err != nil {
		t.Fatal(err)
	}
	strategy := csv.Spec.InstallStrategy.StrategySpec
	if len(strategy.ClusterPermissions) != 1 || len(strategy.Permissions) != 1 {
		t.Fatalf("want one clusterPermissions and one permissions entry, got %d and %d", len(strategy.ClusterPermissions), len(strategy.Permissions))
	}
	if got := strategy.ClusterPermissions[0].Rules; !equality.Semantic.DeepEqual(got, clusterRules) {
		t.Errorf("clusterPermissions = %v, want config/rbac/role.yaml's ClusterRole %v", got, clusterRules)
	}
	if got, want := strategy.Permissions[0].Rules, slices.Concat(leaderElection.Rules, namespacedRules); !equality.Semantic.DeepEqual(got, want) {
		t.Errorf("permissions = %v, want the leader-election Role and config/rbac/role.yaml's Role %v", got, want)
	}
	sa := strategy.DeploymentSpecs[0].Spec.Template.Spec.ServiceAccountName
	for _, p := range slices.Concat(strategy.ClusterPermissions, strategy.Permissions) {
		if p.ServiceAccountName != sa {
			t.Errorf("permissions for %s, but the Deployment runs as %s", p.ServiceAccountName, sa)
		}
	}
}

// TestTheDeploymentRunsInExternalCertificateMode checks what OLM needs from the manager.
func TestTheDeploymentRunsInExternalCertificateMode(t *testing.T) {
	csv := loadCSV(t)
	deployments := csv.Spec.InstallStrategy.StrategySpec.DeploymentSpecs
	if len(deployments) != 1 {
		t.Fatalf("%d deployments, want 1", len(deployments))
	}
	manager := deployments[0].Spec.Template.Spec.Containers[0]
	if !slices.Contains(manager.Args, "--webhook-cert-mode=external") {
		t.Errorf("args %v lack --webhook-cert-mode=external", manager.Args)
	}
	for _, arg := range manager.Args {
		for _, refused := range []string{"--webhook-secret-name", "--webhook-service-name", "--mutating-webhook-configuration", "--validating-webhook-configuration", "--webhook-cert-dir"} {
			if strings.HasPrefix(arg, refused) {
				t.Errorf("arg %s: the operator refuses it in external mode (or OLM's mount would not be read)", arg)
			}
		}
	}
	if !slices.ContainsFunc(manager.Ports, func(p corev1.ContainerPort) bool { return p.ContainerPort == 9443 }) {
		t.Errorf("no container port 9443 for the webhooks: %v", manager.Ports)
	}
	for _, w := range csv.Spec.WebhookDefinitions {
		if w.DeploymentName != deployments[0].Name || w.ContainerPort != 9443 || w.TargetPort == nil || w.TargetPort.IntValue() != 9443 {
			t.Errorf("webhook %s: deployment %s, ports %d→%v; want %s, 9443→9443", w.GenerateName, w.DeploymentName, w.ContainerPort, w.TargetPort, deployments[0].Name)
		}
		for _, rule := range w.Rules {
			if slices.Contains(rule.APIGroups, "*") {
				t.Errorf("webhook %s matches every API group", w.GenerateName)
			}
		}
	}
	if csv.Annotations["containerImage"] != manager.Image {
		t.Errorf("containerImage %q is not the manager's image %q", csv.Annotations["containerImage"], manager.Image)
	}
}

// TestTheExamplesAreValidObjects sends every alm-examples object through the API server's
// validation of our CRDs (a server-side dry run against envtest).
func TestTheExamplesAreValidObjects(t *testing.T) {
	csv := loadCSV(t)
	var examples []map[string]any
	if err := json.Unmarshal([]byte(csv.Annotations["alm-examples"]), &examples); err != nil {
		t.Fatalf("alm-examples is not a JSON list: %v", err)
	}
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	ctx := context.Background()
	ns := env.Namespace(t, "examples")
	kinds := map[string]bool{}
	for _, example := range examples {
		obj := &unstructured.Unstructured{Object: example}
		kinds[obj.GetKind()] = true
		if obj.GetKind() != "SidecarVersion" {
			obj.SetNamespace(ns)
		}
		if err := env.Client.Create(ctx, obj, client.DryRunAll); err != nil {
			t.Errorf("%s %s: %v", obj.GetKind(), obj.GetName(), err)
		}
	}
	for _, owned := range csv.Spec.CustomResourceDefinitions.Owned {
		if !kinds[owned.Kind] {
			t.Errorf("alm-examples has no %s", owned.Kind)
		}
	}
}

func loadCSV(t *testing.T) *v1alpha1.ClusterServiceVersion {
	t.Helper()
	b, err := manifests.GetBundleFromDir(filepath.Join(root(t), bundle.Dir))
	if err != nil {
		t.Fatal(err)
	}
	return b.CSV
}
