package rbac_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/meshlift/meshlift/internal/identity/certmanager"
	"github.com/meshlift/meshlift/internal/repo"
)

// TestTheDocumentedApproverPolicyIsValid creates the approver-policy objects that
// docs/control-plane.md ("cert-manager: who may mint mesh identities") tells admins to apply, with
// strict field validation, against approver-policy's CertificateRequestPolicy CRD (a copy from its
// Go module, testdata/crds): a field the CRD does not know, or a value of the wrong type, fails.
func TestTheDocumentedApproverPolicyIsValid(t *testing.T) {
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	objs := documentedApproverPolicy(t, filepath.Join(root, "docs", "control-plane.md"))
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		assets = repo.KubeBinDir(root)
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{filepath.Join("testdata", "crds", "policy.cert-manager.io_certificaterequestpolicies.yaml")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("failed to start envtest: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: operatorNamespace}}); err != nil {
		t.Fatal(err)
	}

	t.Run("a misspelled field is refused, so the check below can fail", func(t *testing.T) {
		policy := findKind(t, objs, "CertificateRequestPolicy").DeepCopy()
		policy.SetName("misspelled")
		if err := unstructured.SetNestedField(policy.Object, "720h", "spec", "constraints", "maxDurationn"); err != nil {
			t.Fatal(err)
		}
		err := c.Create(ctx, policy, client.FieldValidation(metav1.FieldValidationStrict))
		if err == nil || !strings.Contains(err.Error(), "maxDurationn") {
			t.Fatalf("creating a policy with an unknown field: %v, want a strict validation error naming it", err)
		}
	})

	for _, obj := range objs {
		if err := c.Create(ctx, obj.DeepCopy(), client.FieldValidation(metav1.FieldValidationStrict)); err != nil {
			t.Errorf("the %s %s of docs/control-plane.md is refused: %v", obj.GetKind(), obj.GetName(), err)
		}
	}

	// The policy must allow what the operator asks for: an intermediate of the default duration.
	policy := findKind(t, objs, "CertificateRequestPolicy")
	maxDuration, _, err := unstructured.NestedString(policy.Object, "spec", "constraints", "maxDuration")
	if err != nil {
		t.Fatal(err)
	}
	if d, err := time.ParseDuration(maxDuration); err != nil || d < certmanager.DefaultDuration {
		t.Errorf("the policy allows at most %q, less than the %s the operator requests (--ca-duration): %v", maxDuration, certmanager.DefaultDuration, err)
	}
	// It is bound to the ServiceAccount config/default installs, by the name of the policy.
	binding := findKind(t, objs, "RoleBinding")
	subjects, _, _ := unstructured.NestedSlice(binding.Object, "subjects")
	if len(subjects) != 1 || subjects[0].(map[string]any)["name"] != serviceAccount || subjects[0].(map[string]any)["namespace"] != operatorNamespace {
		t.Errorf("the policy is bound to %v, want only the ServiceAccount %s/%s", subjects, operatorNamespace, serviceAccount)
	}
	role := findKind(t, objs, "Role")
	rules, _, _ := unstructured.NestedSlice(role.Object, "rules")
	if len(rules) != 1 {
		t.Fatalf("the Role has %d rules, want one", len(rules))
	}
	names, _, _ := unstructured.NestedStringSlice(rules[0].(map[string]any), "resourceNames")
	if len(names) != 1 || names[0] != policy.GetName() {
		t.Errorf("the Role lets its subjects use the policies %v, want only %s", names, policy.GetName())
	}
}

// documentedApproverPolicy returns the objects of the YAML block of the doc at path that holds a
// CertificateRequestPolicy.
func documentedApproverPolicy(t *testing.T, path string) []*unstructured.Unstructured {
	t.Helper()
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var block []byte
	inYAML := false
	var current bytes.Buffer
	scanner := bufio.NewScanner(bytes.NewReader(doc))
	for scanner.Scan() {
		line := scanner.Text()
		switch {
		case !inYAML && strings.TrimSpace(line) == "```yaml":
			inYAML = true
			current.Reset()
		case inYAML && strings.TrimSpace(line) == "```":
			inYAML = false
			if strings.Contains(current.String(), "kind: CertificateRequestPolicy") {
				if block != nil {
					t.Fatalf("%s has two YAML blocks with a CertificateRequestPolicy; the test checks one", path)
				}
				block = bytes.Clone(current.Bytes())
			}
		case inYAML:
			current.WriteString(line + "\n")
		}
	}
	if block == nil {
		t.Fatalf("%s has no YAML block with a CertificateRequestPolicy", path)
	}
	var objs []*unstructured.Unstructured
	decoder := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(block), 4096)
	for {
		obj := &unstructured.Unstructured{}
		err := decoder.Decode(&obj.Object)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("the YAML of %s does not parse: %v", path, err)
		}
		if len(obj.Object) > 0 {
			objs = append(objs, obj)
		}
	}
	return objs
}

func findKind(t *testing.T, objs []*unstructured.Unstructured, kind string) *unstructured.Unstructured {
	t.Helper()
	for _, obj := range objs {
		if obj.GetKind() == kind {
			return obj
		}
	}
	t.Fatalf("the documented YAML has no %s", kind)
	return nil
}
