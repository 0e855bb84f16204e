package bundle

import (
	"os"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

func object(t *testing.T, doc string) *unstructured.Unstructured {
	t.Helper()
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(doc), &obj.Object); err != nil {
		t.Fatal(err)
	}
	return obj
}

// minimal is the least config/default-like input Generate accepts.
func minimal(t *testing.T, extra ...string) []*unstructured.Unstructured {
	docs := append([]string{
		`{apiVersion: v1, kind: ServiceAccount, metadata: {name: op, namespace: ns}}`,
		`{apiVersion: apps/v1, kind: Deployment, metadata: {name: op, namespace: ns}, spec: {selector: {matchLabels: {a: b}}, template: {metadata: {labels: {a: b}}, spec: {serviceAccountName: op, containers: [{name: manager, image: x, args: [--leader-elect, --webhook-secret-name=s, --webhook-cert-mode=self-managed], env: [{name: POD_NAMESPACE}], ports: [{name: webhook, containerPort: 9443}]}]}}}}`,
		`{apiVersion: v1, kind: Service, metadata: {name: cp, namespace: ns}, spec: {ports: [{port: 15012, targetPort: control-plane}]}}`,
	}, extra...)
	var out []*unstructured.Unstructured
	for _, d := range docs {
		out = append(out, object(t, d))
	}
	return out
}

var testOptions = Options{Version: "0.2.0", Channels: []string{"stable"}, OperatorImage: "op:0.2.0", CreatedAt: "2026-01-01T00:00:00Z"}

func TestGenerateRefuses(t *testing.T) {
	for _, tc := range []struct {
		name  string
		extra []string
		opts  func(*Options)
		want  string
	}{
		{"a webhook that matches every API group", []string{`{apiVersion: admissionregistration.k8s.io/v1, kind: ValidatingWebhookConfiguration, metadata: {name: v}, webhooks: [{name: a.b.c, admissionReviewVersions: [v1], sideEffects: None, clientConfig: {service: {name: ws, namespace: ns, path: /v}}, rules: [{operations: [CREATE], apiGroups: ["*"], apiVersions: [v1], resources: [pods]}]}]}`}, nil, "every API group"},
		{"a webhook with matchConditions, which webhookdefinitions cannot carry", []string{`{apiVersion: admissionregistration.k8s.io/v1, kind: ValidatingWebhookConfiguration, metadata: {name: v}, webhooks: [{name: a.b.c, admissionReviewVersions: [v1], sideEffects: None, clientConfig: {service: {name: ws, namespace: ns, path: /v}}, matchConditions: [{name: x, expression: "true"}]}]}`}, nil, "matchConditions"},
		{"a kind OLM does not install", []string{`{apiVersion: batch/v1, kind: Job, metadata: {name: j}}`}, nil, "cannot be in a registry+v1 bundle"},
		{"a version that is not semver", nil, func(o *Options) { o.Version = "v1" }, "not a semantic version"},
		{"a replaced version that is not older", nil, func(o *Options) { o.Replaces = "meshlift.v0.2.0" }, "not older"},
		{"a channel name OLM does not recommend", nil, func(o *Options) { o.Channels = []string{"beta"} }, "channel"},
		{"a default channel the bundle is not in", nil, func(o *Options) { o.DefaultChannel = "candidate" }, "default channel"},
		{"no createdAt (the clock is never read)", nil, func(o *Options) { o.CreatedAt = "" }, "createdAt"},
		{"a bundle image without a tag", nil, func(o *Options) { o.BundleImage = "docker.io/meshlift/bundle" }, "bundle image"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := testOptions
			opts.Channels = slices.Clone(opts.Channels)
			if tc.opts != nil {
				tc.opts(&opts)
			}
			_, err := Generate(minimal(t, tc.extra...), nil, opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one that says %q", err, tc.want)
			}
		})
	}
}

func TestTheDeploymentDropsSelfManagedFlagsAndUsesExternalMode(t *testing.T) {
	in, err := sortObjects(minimal(t))
	if err != nil {
		t.Fatal(err)
	}
	d, err := csvDeployment(in)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"--leader-elect", "--webhook-cert-mode=external", "--control-plane-address=cp.$(POD_NAMESPACE).svc:15012"}
	if got := d.Spec.Template.Spec.Containers[0].Args; !slices.Equal(got, want) {
		t.Errorf("args = %q, want %q", got, want)
	}
}

func TestTheServiceAccountAndItsBindingsAreLeftToOLM(t *testing.T) {
	objs := minimal(t,
		`{apiVersion: rbac.authorization.k8s.io/v1, kind: ClusterRole, metadata: {name: bound}, rules: [{apiGroups: [""], resources: [pods], verbs: [get]}]}`,
		`{apiVersion: rbac.authorization.k8s.io/v1, kind: ClusterRoleBinding, metadata: {name: bound}, roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: bound}, subjects: [{kind: ServiceAccount, name: op, namespace: ns}]}`,
		`{apiVersion: rbac.authorization.k8s.io/v1, kind: ClusterRole, metadata: {name: for-people}, rules: [{apiGroups: [""], resources: [pods], verbs: [list]}]}`,
	)
	files, err := Generate(objs, nil, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	var manifests []string
	for _, p := range files.Paths() {
		if name, ok := strings.CutPrefix(p, "bundle/manifests/"); ok {
			manifests = append(manifests, name)
		}
	}
	want := []string{"cp_v1_service.yaml", "for-people_rbac.authorization.k8s.io_v1_clusterrole.yaml", "meshlift.clusterserviceversion.yaml"}
	if !slices.Equal(manifests, want) {
		t.Errorf("manifests = %q, want %q", manifests, want)
	}
	if !strings.Contains(string(files["bundle/manifests/meshlift.clusterserviceversion.yaml"]), "serviceAccountName: op\n") {
		t.Error("the CSV grants the bound ClusterRole to no ServiceAccount op")
	}
	if strings.Contains(string(files["bundle/manifests/cp_v1_service.yaml"]), "namespace:") {
		t.Error("a bundled object keeps its namespace; OLM installs it into the OperatorGroup's")
	}
}

func TestTheSelfManagedCertificateRolesAreLeftOut(t *testing.T) {
	labels := `labels: {app.kubernetes.io/component: webhook-certificates}`
	objs := minimal(t,
		`{apiVersion: rbac.authorization.k8s.io/v1, kind: ClusterRole, metadata: {name: webhook-certificates, `+labels+`}, rules: [{apiGroups: [admissionregistration.k8s.io], resources: [mutatingwebhookconfigurations], verbs: [patch]}]}`,
		`{apiVersion: rbac.authorization.k8s.io/v1, kind: ClusterRoleBinding, metadata: {name: webhook-certificates, `+labels+`}, roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: webhook-certificates}, subjects: [{kind: ServiceAccount, name: op, namespace: ns}]}`,
		`{apiVersion: rbac.authorization.k8s.io/v1, kind: Role, metadata: {name: webhook-certificates, namespace: ns, `+labels+`}, rules: [{apiGroups: [""], resources: [secrets], verbs: [create]}]}`,
		`{apiVersion: rbac.authorization.k8s.io/v1, kind: RoleBinding, metadata: {name: webhook-certificates, namespace: ns, `+labels+`}, roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: webhook-certificates}, subjects: [{kind: ServiceAccount, name: op, namespace: ns}]}`,
	)
	files, err := Generate(objs, nil, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	for path, content := range files {
		if strings.Contains(string(content), "webhookconfigurations") || strings.Contains(string(content), "secrets") {
			t.Errorf("%s grants what only the self-managed mode needs:\n%s", path, content)
		}
	}
}

// TestEveryDescriptorPathIsInTheCRDSchema keeps descriptors.go in step with the API types.
func TestEveryDescriptorPathIsInTheCRDSchema(t *testing.T) {
	for _, file := range []string{"mesh.meshlift.io_meshservices.yaml", "mesh.meshlift.io_sidecarversions.yaml", "mesh.meshlift.io_upgradeplans.yaml"} {
		crd := readCRD(t, "../../config/crd/bases/"+file)
		kind, _, _ := unstructured.NestedString(crd, "spec", "names", "kind")
		versions, _, _ := unstructured.NestedSlice(crd, "spec", "versions")
		schema, _, _ := unstructured.NestedMap(versions[0].(map[string]any), "schema", "openAPIV3Schema")
		d, ok := kinds[kind]
		if !ok {
			t.Errorf("no descriptors for %s", kind)
			continue
		}
		check := func(section, path string, xs []string) {
			field, ok := schemaAt(schema, append([]string{section}, strings.Split(path, ".")...))
			if !ok {
				t.Errorf("%s %s descriptor %q is not a field of the CRD", kind, section, path)
				return
			}
			var options []string
			for _, x := range xs {
				if o, ok := strings.CutPrefix(x, selectPrefix); ok {
					options = append(options, o)
				}
			}
			if len(options) > 0 {
				var enum []string
				for _, e := range field["enum"].([]any) {
					enum = append(enum, e.(string))
				}
				if !slices.Equal(options, enum) {
					t.Errorf("%s %s: select options %q, want the enum %q", kind, path, options, enum)
				}
			}
		}
		for _, s := range d.spec {
			check("spec", s.Path, s.XDescriptors)
		}
		for _, s := range d.status {
			check("status", s.Path, s.XDescriptors)
		}
	}
}

func schemaAt(schema map[string]any, path []string) (map[string]any, bool) {
	for _, p := range path {
		props, _, _ := unstructured.NestedMap(schema, "properties")
		next, ok := props[p].(map[string]any)
		if !ok {
			return nil, false
		}
		schema = next
	}
	return schema, true
}

func readCRD(t *testing.T, name string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	var crd map[string]any
	if err := yaml.Unmarshal(data, &crd); err != nil {
		t.Fatal(err)
	}
	return crd
}
