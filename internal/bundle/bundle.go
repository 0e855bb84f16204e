// Package bundle turns the objects of config/default (the kustomize output: CRDs, RBAC, the
// manager Deployment, the webhook configurations, Services) and the samples of config/samples
// into an OLM registry+v1 bundle: the ClusterServiceVersion, one file per CRD and the other
// objects OLM may install, bundle/metadata/annotations.yaml, the scorecard configuration,
// bundle.Dockerfile and the file-based catalog catalog/meshlift (docs/olm.md). It is pure:
// objects in, file contents out, the same bytes for the same input. ImageSpec describes the
// bundle image of a bundle on disk for internal/images.
package bundle

import (
	"bytes"
	"cmp"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"

	"github.com/blang/semver/v4"
	"github.com/google/go-containerregistry/pkg/name"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// Package is the OLM package name, and the CSV is <Package>.v<version>.
const Package = "meshlift"

// Dir is the bundle's directory relative to the repository root; Dockerfile is beside it.
const (
	Dir        = "bundle"
	Dockerfile = "bundle.Dockerfile"
)

// Options are what a release chooses; everything else comes from the objects.
type Options struct {
	// Version is the operator's semantic version (no leading v), e.g. 0.1.0.
	Version string
	// Replaces is the CSV this one replaces in its channels (e.g. meshlift.v0.1.0), or empty.
	Replaces string
	// SkipRange is the olm.skipRange annotation; empty means ">=0.0.0 <Version": OLM may
	// upgrade any earlier release straight to this one.
	SkipRange string
	// Channels are the channels the bundle is in; DefaultChannel is the package's default.
	Channels       []string
	DefaultChannel string
	// OperatorImage is the operator's image, written into the Deployment and containerImage.
	OperatorImage string
	// CreatedAt is the createdAt annotation (RFC 3339). It is an input, never the clock, so that
	// generating twice gives the same bytes.
	CreatedAt string
	// BundleImage is the bundle image the catalog names (with a tag); empty means
	// DefaultBundleImage(Version).
	BundleImage string
}

// Files maps a slash-separated path relative to the repository root to its content.
type Files map[string][]byte

// Paths returns the paths in order.
func (f Files) Paths() []string { return slices.Sorted(maps.Keys(f)) }

func (o *Options) complete() error {
	if o.Version == "" {
		return fmt.Errorf("a version is required")
	}
	v, err := semver.Parse(o.Version)
	if err != nil {
		return fmt.Errorf("version %q is not a semantic version (MAJOR.MINOR.PATCH, no leading v): %w", o.Version, err)
	}
	if o.SkipRange == "" {
		o.SkipRange = ">=0.0.0 <" + v.String()
	}
	if _, err := semver.ParseRange(o.SkipRange); err != nil {
		return fmt.Errorf("skip range %q: %w", o.SkipRange, err)
	}
	if o.Replaces != "" {
		prev, ok := strings.CutPrefix(o.Replaces, Package+".v")
		if !ok {
			return fmt.Errorf("replaces %q is not a CSV name %s.v<version>", o.Replaces, Package)
		}
		pv, err := semver.Parse(prev)
		if err != nil {
			return fmt.Errorf("replaces %q: %w", o.Replaces, err)
		}
		if !pv.LT(v) {
			return fmt.Errorf("replaces %q is not older than %s", o.Replaces, v)
		}
	}
	if len(o.Channels) == 0 {
		return fmt.Errorf("at least one channel is required")
	}
	for _, ch := range o.Channels {
		if !validChannel(ch) {
			return fmt.Errorf("channel %q: use stable, fast or candidate (optionally with a -suffix), the names OLM recommends", ch)
		}
	}
	if o.DefaultChannel == "" {
		o.DefaultChannel = o.Channels[0]
	}
	if !slices.Contains(o.Channels, o.DefaultChannel) {
		return fmt.Errorf("default channel %q is not one of the channels %v", o.DefaultChannel, o.Channels)
	}
	if o.OperatorImage == "" {
		return fmt.Errorf("an operator image is required")
	}
	if o.CreatedAt == "" {
		return fmt.Errorf("createdAt is required (RFC 3339, e.g. 2026-12-01T00:00:00Z)")
	}
	if o.BundleImage == "" {
		o.BundleImage = DefaultBundleImage(v.String())
	}
	if _, err := name.NewTag(o.BundleImage, name.StrictValidation); err != nil {
		return fmt.Errorf("bundle image %q is not an image reference with a registry, repository and tag: %w", o.BundleImage, err)
	}
	return nil
}

func validChannel(ch string) bool {
	for _, prefix := range []string{"stable", "fast", "candidate"} {
		if rest, ok := strings.CutPrefix(ch, prefix); ok && (rest == "" || strings.HasPrefix(rest, "-")) {
			return true
		}
	}
	return false
}

// CSVName is the name of the ClusterServiceVersion of version.
func CSVName(version string) string { return Package + ".v" + version }

// Generate builds the bundle from the objects of config/default and the samples of
// config/samples.
func Generate(objects, samples []*unstructured.Unstructured, opts Options) (Files, error) {
	if err := opts.complete(); err != nil {
		return nil, err
	}
	in, err := sortObjects(objects)
	if err != nil {
		return nil, err
	}
	csv, err := buildCSV(in, samples, opts)
	if err != nil {
		return nil, err
	}
	files := Files{}
	add := func(name string, obj map[string]any) error {
		data, err := yaml.Marshal(obj)
		if err != nil {
			return fmt.Errorf("failed to render %s: %w", name, err)
		}
		files[path.Join(Dir, "manifests", name)] = data
		return nil
	}
	if err := add(Package+".clusterserviceversion.yaml", csv); err != nil {
		return nil, err
	}
	for _, crd := range in.crds {
		group, _, _ := unstructured.NestedString(crd.Object, "spec", "group")
		plural, _, _ := unstructured.NestedString(crd.Object, "spec", "names", "plural")
		if err := add(group+"_"+plural+".yaml", bundledObject(crd)); err != nil {
			return nil, err
		}
	}
	for _, obj := range in.others {
		gvk := obj.GroupVersionKind()
		name := strings.ToLower(strings.Join([]string{obj.GetName(), strings.ReplaceAll(gvk.GroupVersion().String(), "/", "_"), gvk.Kind}, "_"))
		if err := add(name+".yaml", bundledObject(obj)); err != nil {
			return nil, err
		}
	}
	files[path.Join(Dir, "metadata", "annotations.yaml")] = annotationsFile(opts)
	files[path.Join(Dir, "tests", "scorecard", "config.yaml")] = scorecardConfig(opts)
	files[Dockerfile] = dockerfile(opts)
	catalog, err := catalogFile(csv, opts)
	if err != nil {
		return nil, err
	}
	files[CatalogFile] = catalog
	return files, nil
}

// bundledObject is obj as the bundle holds it: without a namespace (OLM installs it into the
// OperatorGroup's) and without what the API server fills in.
func bundledObject(obj *unstructured.Unstructured) map[string]any {
	out := obj.DeepCopy()
	out.SetNamespace("")
	unstructured.RemoveNestedField(out.Object, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(out.Object, "status")
	return out.Object
}

// annotationKeys are the keys of bundle/metadata/annotations.yaml (and the LABELs of
// bundle.Dockerfile), in the order they are written.
var annotationKeys = []string{
	"operators.operatorframework.io.bundle.mediatype.v1",
	"operators.operatorframework.io.bundle.manifests.v1",
	"operators.operatorframework.io.bundle.metadata.v1",
	"operators.operatorframework.io.bundle.package.v1",
	"operators.operatorframework.io.bundle.channels.v1",
	"operators.operatorframework.io.bundle.channel.default.v1",
	"operators.operatorframework.io.test.mediatype.v1",
	"operators.operatorframework.io.test.config.v1",
}

// Annotations are the bundle annotations of opts, by key.
func Annotations(opts Options) map[string]string {
	return map[string]string{
		"operators.operatorframework.io.bundle.mediatype.v1":       "registry+v1",
		"operators.operatorframework.io.bundle.manifests.v1":       "manifests/",
		"operators.operatorframework.io.bundle.metadata.v1":        "metadata/",
		"operators.operatorframework.io.bundle.package.v1":         Package,
		"operators.operatorframework.io.bundle.channels.v1":        strings.Join(opts.Channels, ","),
		"operators.operatorframework.io.bundle.channel.default.v1": opts.DefaultChannel,
		"operators.operatorframework.io.test.mediatype.v1":         "scorecard+v1",
		"operators.operatorframework.io.test.config.v1":            "tests/scorecard/",
	}
}

func annotationsFile(opts Options) []byte {
	values := Annotations(opts)
	var b bytes.Buffer
	b.WriteString("# Generated by `make bundle` (hack/bundle); do not edit.\nannotations:\n")
	for _, key := range annotationKeys {
		fmt.Fprintf(&b, "  %s: %s\n", key, values[key])
	}
	return b.Bytes()
}

// ImageDir is a directory of the bundle that the bundle image carries, and where.
type ImageDir struct {
	// Source is the directory relative to the repository root, e.g. "bundle/manifests".
	Source string
	// Dest is the absolute directory in the image, e.g. "/manifests".
	Dest string
}

// ImageDirs are the directories bundle.Dockerfile copies into the bundle image, and
// ImageSpec too: the bundle's manifests, metadata and scorecard tests, at the image's root as
// annotations.yaml says.
var ImageDirs = []ImageDir{
	{Source: Dir + "/manifests", Dest: "/manifests"},
	{Source: Dir + "/metadata", Dest: "/metadata"},
	{Source: Dir + "/tests/scorecard", Dest: "/tests/scorecard"},
}

func dockerfile(opts Options) []byte {
	values := Annotations(opts)
	var b bytes.Buffer
	b.WriteString("# Generated by `make bundle` (hack/bundle); do not edit. The bundle image: `docker build -f bundle.Dockerfile .`\nFROM scratch\n\n")
	for _, key := range annotationKeys {
		fmt.Fprintf(&b, "LABEL %s=%s\n", key, values[key])
	}
	b.WriteString("\n")
	for _, dir := range ImageDirs {
		fmt.Fprintf(&b, "COPY %s %s/\n", dir.Source, dir.Dest)
	}
	return b.Bytes()
}

// scorecardImage is the image of the scorecard's built-in tests; its tag is the operator-sdk
// release the configuration format is from.
const scorecardImage = "quay.io/operator-framework/scorecard-test:v1.42.0"

func scorecardConfig(Options) []byte {
	tests := []struct{ name, suite string }{
		{"basic-check-spec", "basic"},
		{"olm-bundle-validation", "olm"},
		{"olm-crds-have-validation", "olm"},
		{"olm-crds-have-resources", "olm"},
		{"olm-spec-descriptors", "olm"},
		{"olm-status-descriptors", "olm"},
	}
	var b bytes.Buffer
	b.WriteString("# Generated by `make bundle` (hack/bundle); do not edit. Run with `operator-sdk scorecard bundle/`.\n")
	b.WriteString("apiVersion: scorecard.operatorframework.io/v1alpha3\nkind: Configuration\nmetadata:\n  name: config\nstages:\n- parallel: true\n  tests:\n")
	for _, t := range tests {
		fmt.Fprintf(&b, "  - entrypoint:\n    - scorecard-test\n    - %s\n    image: %s\n    labels:\n      suite: %s\n      test: %s-test\n", t.name, scorecardImage, t.suite, t.name)
	}
	return b.Bytes()
}

// objects are config/default's objects sorted by what the bundle does with them.
type objects struct {
	crds             []*unstructured.Unstructured
	serviceAccount   string
	clusterRoles     []*unstructured.Unstructured // bound to the ServiceAccount: clusterPermissions
	roles            []*unstructured.Unstructured // bound to the ServiceAccount: permissions
	deployment       *unstructured.Unstructured
	mutating         []*unstructured.Unstructured
	validating       []*unstructured.Unstructured
	webhookServices  map[string]bool // the Services the webhook configurations call: OLM makes its own
	others           []*unstructured.Unstructured
	namespaceDropped bool
}

// otherKinds are the kinds OLM installs from a registry+v1 bundle besides the CSV and CRDs.
var otherKinds = map[string]bool{
	"v1/ConfigMap": true, "v1/Secret": true, "v1/Service": true,
	"rbac.authorization.k8s.io/v1/ClusterRole": true, "rbac.authorization.k8s.io/v1/Role": true,
	"rbac.authorization.k8s.io/v1/ClusterRoleBinding": true, "rbac.authorization.k8s.io/v1/RoleBinding": true,
	"policy/v1/PodDisruptionBudget": true, "scheduling.k8s.io/v1/PriorityClass": true,
	"monitoring.coreos.com/v1/PrometheusRule": true, "monitoring.coreos.com/v1/ServiceMonitor": true,
}

func gvkKey(obj *unstructured.Unstructured) string {
	return obj.GetAPIVersion() + "/" + obj.GetKind()
}

// SelfManagedCertificatesComponent labels (app.kubernetes.io/component) the roles and bindings
// of config/rbac/webhook-certificates: what the operator needs to manage its own webhook
// certificates. The bundle runs it in external mode, where OLM does that, so it leaves them out.
const SelfManagedCertificatesComponent = "webhook-certificates"

func sortObjects(all []*unstructured.Unstructured) (*objects, error) {
	in := &objects{webhookServices: map[string]bool{}}
	var serviceAccounts []string
	var rest []*unstructured.Unstructured
	for _, obj := range all {
		if obj.GetLabels()["app.kubernetes.io/component"] == SelfManagedCertificatesComponent {
			continue
		}
		switch gvkKey(obj) {
		case "v1/Namespace":
			in.namespaceDropped = true // OLM installs into the OperatorGroup's namespace
		case "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy", "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding":
			// registry+v1 bundles cannot carry them (operator-sdk#7038): docs/olm.md installs
			// config/policy/olm next to the bundle.
			continue
		case "apiextensions.k8s.io/v1/CustomResourceDefinition":
			in.crds = append(in.crds, obj)
		case "v1/ServiceAccount":
			serviceAccounts = append(serviceAccounts, obj.GetName())
		case "apps/v1/Deployment":
			if in.deployment != nil {
				return nil, fmt.Errorf("two Deployments (%s, %s): the bundle installs one operator Deployment", in.deployment.GetName(), obj.GetName())
			}
			in.deployment = obj
		case "admissionregistration.k8s.io/v1/MutatingWebhookConfiguration":
			in.mutating = append(in.mutating, obj)
		case "admissionregistration.k8s.io/v1/ValidatingWebhookConfiguration":
			in.validating = append(in.validating, obj)
		default:
			rest = append(rest, obj)
		}
	}
	if len(serviceAccounts) != 1 {
		return nil, fmt.Errorf("want exactly one ServiceAccount (the operator's), found %v", serviceAccounts)
	}
	in.serviceAccount = serviceAccounts[0]
	if in.deployment == nil {
		return nil, fmt.Errorf("no Deployment: the bundle needs the operator's")
	}
	for _, cfg := range slices.Concat(in.mutating, in.validating) {
		hooks, _, _ := unstructured.NestedSlice(cfg.Object, "webhooks")
		for _, h := range hooks {
			name, _, _ := unstructured.NestedString(h.(map[string]any), "clientConfig", "service", "name")
			in.webhookServices[name] = true
		}
	}

	// The roles bound to the operator's ServiceAccount become the CSV's permissions; OLM creates
	// the ServiceAccount and the bindings itself.
	boundClusterRoles, boundRoles := map[string]bool{}, map[string]bool{}
	var unbound []*unstructured.Unstructured
	for _, obj := range rest {
		kind := obj.GetKind()
		if (kind == "ClusterRoleBinding" || kind == "RoleBinding") && bindsServiceAccount(obj, in.serviceAccount) {
			refKind, _, _ := unstructured.NestedString(obj.Object, "roleRef", "kind")
			refName, _, _ := unstructured.NestedString(obj.Object, "roleRef", "name")
			if refKind == "ClusterRole" && kind == "RoleBinding" {
				return nil, fmt.Errorf("RoleBinding %s grants ClusterRole %s in one namespace: the bundle cannot say that with permissions", obj.GetName(), refName)
			}
			if refKind == "ClusterRole" {
				boundClusterRoles[refName] = true
			} else {
				boundRoles[refName] = true
			}
			continue
		}
		unbound = append(unbound, obj)
	}
	for _, obj := range unbound {
		switch {
		case obj.GetKind() == "ClusterRole" && boundClusterRoles[obj.GetName()]:
			in.clusterRoles = append(in.clusterRoles, obj)
		case obj.GetKind() == "Role" && boundRoles[obj.GetName()]:
			in.roles = append(in.roles, obj)
		case gvkKey(obj) == "v1/Service" && in.webhookServices[obj.GetName()]:
			// OLM creates <deployment>-service for the webhooks and its certificate is for that name.
		case otherKinds[gvkKey(obj)]:
			in.others = append(in.others, obj)
		default:
			return nil, fmt.Errorf("%s %s cannot be in a registry+v1 bundle", gvkKey(obj), obj.GetName())
		}
	}
	byName := func(a, b *unstructured.Unstructured) int {
		return cmp.Or(cmp.Compare(a.GetKind(), b.GetKind()), cmp.Compare(a.GetName(), b.GetName()))
	}
	for _, list := range [][]*unstructured.Unstructured{in.crds, in.clusterRoles, in.roles, in.mutating, in.validating, in.others} {
		slices.SortFunc(list, byName)
	}
	return in, nil
}

func bindsServiceAccount(binding *unstructured.Unstructured, serviceAccount string) bool {
	subjects, _, _ := unstructured.NestedSlice(binding.Object, "subjects")
	for _, s := range subjects {
		subject := s.(map[string]any)
		if subject["kind"] == "ServiceAccount" && subject["name"] == serviceAccount {
			return true
		}
	}
	return false
}
