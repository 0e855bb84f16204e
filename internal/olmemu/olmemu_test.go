package olmemu

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

const ns = "meshlift-olm"

func install(t *testing.T) (*Bundle, []client.Object, []byte) {
	t.Helper()
	b, err := LoadBundle(filepath.Join("..", "..", "bundle", "manifests"))
	if err != nil {
		t.Fatal(err)
	}
	certs, err := IssueCertificates(b.CSV, ns, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Install(b, Options{Namespace: ns, Certificates: certs})
	if err != nil {
		t.Fatal(err)
	}
	return b, objs, certs["meshlift-controller-manager"].CABundle
}

func find[T client.Object](t *testing.T, objs []client.Object, name string) T {
	t.Helper()
	for _, o := range objs {
		if v, ok := o.(T); ok && o.GetName() == name {
			return v
		}
	}
	var zero T
	t.Fatalf("no %T %s", zero, name)
	return zero
}

func TestInstallOrderAndNames(t *testing.T) {
	b, objs, _ := install(t)
	var got []string
	for _, o := range objs {
		kind := o.GetObjectKind().GroupVersionKind().Kind
		got = append(got, kind+" "+o.GetNamespace()+"/"+o.GetName())
	}
	role, _ := generateName("meshlift.v0.1.0-meshlift-controller-manager", struct {
		Name       string `json:"name,omitempty"`
		Permission any    `json:"permission"`
	}{Name: b.CSV.Name, Permission: b.CSV.Spec.InstallStrategy.StrategySpec.Permissions[0]})
	clusterRole, _ := generateName(b.CSV.Name, struct {
		Name       string `json:"name,omitempty"`
		Namespace  string `json:"namespace,omitempty"`
		Permission any    `json:"permission"`
	}{Name: b.CSV.Name, Namespace: ns, Permission: b.CSV.Spec.InstallStrategy.StrategySpec.ClusterPermissions[0]})
	want := []string{
		"CustomResourceDefinition /meshservices.mesh.meshlift.io",
		"CustomResourceDefinition /sidecarversions.mesh.meshlift.io",
		"CustomResourceDefinition /upgradeplans.mesh.meshlift.io",
		"Service " + ns + "/meshlift-control-plane",
		"PodDisruptionBudget " + ns + "/meshlift-controller-manager",
		"ClusterRole /meshlift-editor-role",
		"ClusterRole /meshlift-metrics-reader",
		"ClusterRole /meshlift-viewer-role",
		"ServiceAccount " + ns + "/meshlift-controller-manager",
		"Role " + ns + "/" + role,
		"RoleBinding " + ns + "/" + role,
		"ClusterRole /" + clusterRole,
		"ClusterRoleBinding /" + clusterRole,
		"Service " + ns + "/meshlift-controller-manager-service",
		"Secret " + ns + "/meshlift-controller-manager-service-cert",
		"Role " + ns + "/meshlift-controller-manager-service-cert",
		"RoleBinding " + ns + "/meshlift-controller-manager-service-cert",
		"ClusterRoleBinding /meshlift-controller-manager-service-system:auth-delegator",
		"RoleBinding kube-system/meshlift-controller-manager-service-auth-reader",
		"Deployment " + ns + "/meshlift-controller-manager",
		"MutatingWebhookConfiguration /" + WebhookName(ns, b.CSV.Name, "inject.pods.meshlift.io"),
		"ValidatingWebhookConfiguration /" + WebhookName(ns, b.CSV.Name, "upgradeplans.mesh.meshlift.io"),
		"ValidatingWebhookConfiguration /" + WebhookName(ns, b.CSV.Name, "meshservices.mesh.meshlift.io"),
		"ValidatingWebhookConfiguration /" + WebhookName(ns, b.CSV.Name, "sidecarversions.mesh.meshlift.io"),
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("objects:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// OLM cuts the base so that base-hash fits in 63 characters.
	if !strings.HasPrefix(role, "meshlift.v0.1.0-meshlift-") || len(role) != 63 {
		t.Errorf("role name %q", role)
	}
	// Every object is Install's own copy, typed or not, with apiVersion and kind for apply.
	for _, o := range objs {
		if gvk := o.GetObjectKind().GroupVersionKind(); gvk.Kind == "" || gvk.Version == "" {
			t.Errorf("%s has no apiVersion/kind", o.GetName())
		}
	}
}

func TestRBACIsTheCSVs(t *testing.T) {
	b, objs, _ := install(t)
	strategy := b.CSV.Spec.InstallStrategy.StrategySpec
	for _, o := range objs {
		switch r := o.(type) {
		case *rbacv1.ClusterRole:
			if r.Labels[OwnerLabel] == "" {
				continue
			}
			if !reflect.DeepEqual(r.Rules, strategy.ClusterPermissions[0].Rules) {
				t.Errorf("ClusterRole %s rules differ from clusterPermissions", r.Name)
			}
			if r.Labels[OwnerNamespaceLabel] != ns || r.Labels[OwnerKindLabel] != "ClusterServiceVersion" || r.Labels[PermissionsHashLabel] == "" {
				t.Errorf("ClusterRole labels %v", r.Labels)
			}
		case *rbacv1.Role:
			if r.Labels[OwnerLabel] == "" {
				if want := []rbacv1.PolicyRule{{Verbs: []string{"get"}, APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{"meshlift-controller-manager-service-cert"}}}; !reflect.DeepEqual(r.Rules, want) {
					t.Errorf("secret Role rules %v", r.Rules)
				}
				continue
			}
			if !reflect.DeepEqual(r.Rules, strategy.Permissions[0].Rules) {
				t.Errorf("Role %s rules differ from permissions", r.Name)
			}
		case *rbacv1.ClusterRoleBinding:
			if len(r.Subjects) != 1 || r.Subjects[0].Name != "meshlift-controller-manager" || r.Subjects[0].Namespace != ns {
				t.Errorf("ClusterRoleBinding %s subjects %v", r.Name, r.Subjects)
			}
		case *rbacv1.RoleBinding:
			if len(r.Subjects) != 1 || r.Subjects[0].Name != "meshlift-controller-manager" || r.Subjects[0].Namespace != ns {
				t.Errorf("RoleBinding %s subjects %v", r.Name, r.Subjects)
			}
		}
	}
	crb := find[*rbacv1.ClusterRoleBinding](t, objs, "meshlift-controller-manager-service-system:auth-delegator")
	if crb.RoleRef.Name != "system:auth-delegator" || crb.RoleRef.Kind != "ClusterRole" {
		t.Errorf("auth-delegator roleRef %v", crb.RoleRef)
	}
	rb := find[*rbacv1.RoleBinding](t, objs, "meshlift-controller-manager-service-auth-reader")
	if rb.Namespace != "kube-system" || rb.RoleRef.Name != "extension-apiserver-authentication-reader" {
		t.Errorf("auth-reader %s/%s roleRef %v", rb.Namespace, rb.Name, rb.RoleRef)
	}
}

func TestHashesAreOLMs(t *testing.T) {
	// base62(sha224(json)): the same function as OLM's hashutil.DeepHashObject (with the
	// encoder's newline) and PolicyRuleHashLabelValue (without).
	h, err := deepHashObject(map[string]string{"a": "b"})
	if err != nil {
		t.Fatal(err)
	}
	if h != toBase62(sha224(`{"a":"b"}`+"\n")) {
		t.Errorf("deepHashObject %s", h)
	}
	rules := []rbacv1.PolicyRule{{Verbs: []string{"get"}}}
	if p, _ := policyRuleHash(rules); p != toBase62(sha224(`[{"verbs":["get"]}]`)) {
		t.Errorf("policyRuleHash %s", p)
	}
	if got, _ := generateName(strings.Repeat("x", 70), 1); len(got) != 63 {
		t.Errorf("generateName is %d long", len(got))
	}
}

func TestCertResources(t *testing.T) {
	_, objs, ca := install(t)
	svc := find[*corev1.Service](t, objs, "meshlift-controller-manager-service")
	if want := []corev1.ServicePort{{Name: "9443", Port: 9443, TargetPort: intstr.FromInt(9443)}}; !reflect.DeepEqual(svc.Spec.Ports, want) {
		t.Errorf("ports %v", svc.Spec.Ports)
	}
	if want := map[string]string{"app.kubernetes.io/name": "meshlift", "control-plane": "controller-manager"}; !reflect.DeepEqual(svc.Spec.Selector, want) {
		t.Errorf("selector %v", svc.Spec.Selector)
	}
	secret := find[*corev1.Secret](t, objs, "meshlift-controller-manager-service-cert")
	if secret.Type != corev1.SecretTypeTLS || !bytes.Equal(secret.Data[CAKey], ca) || len(secret.Data["tls.crt"]) == 0 || len(secret.Data["tls.key"]) == 0 {
		t.Errorf("secret %s: type %s, keys %d", secret.Name, secret.Type, len(secret.Data))
	}
	// The serving certificate is valid for the name the API server verifies.
	block, _ := pem.Decode(secret.Data["tls.crt"])
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.VerifyHostname("meshlift-controller-manager-service." + ns + ".svc"); err != nil {
		t.Error(err)
	}
	dep := find[*appsv1.Deployment](t, objs, "meshlift-controller-manager")
	if dep.Spec.Template.Annotations[CAHashAnnotation] != secret.Annotations[CAHashAnnotation] || len(secret.Annotations[CAHashAnnotation]) != 64 {
		t.Errorf("olmcahash %q on the pod template, %q on the Secret", dep.Spec.Template.Annotations[CAHashAnnotation], secret.Annotations[CAHashAnnotation])
	}
	vols := map[string]corev1.Volume{}
	for _, v := range dep.Spec.Template.Spec.Volumes {
		vols[v.Name] = v
	}
	for name, paths := range map[string][]string{"webhook-cert": {"tls.crt", "tls.key"}, "apiservice-cert": {"apiserver.crt", "apiserver.key"}} {
		v, ok := vols[name]
		if !ok || v.Secret == nil || v.Secret.SecretName != secret.Name || len(v.Secret.Items) != 2 || v.Secret.Items[0].Path != paths[0] || v.Secret.Items[1].Path != paths[1] {
			t.Errorf("volume %s: %+v", name, v)
		}
	}
	for _, c := range dep.Spec.Template.Spec.Containers {
		mounts := map[string]string{}
		for _, m := range c.VolumeMounts {
			mounts[m.Name] = m.MountPath
		}
		if mounts["webhook-cert"] != WebhookCertMountPath || mounts["apiservice-cert"] != APIServiceCertMountPath {
			t.Errorf("container %s mounts %v", c.Name, mounts)
		}
	}
}

func TestDeploymentIsOLMs(t *testing.T) {
	b, objs, _ := install(t)
	dep := find[*appsv1.Deployment](t, objs, "meshlift-controller-manager")
	a := dep.Spec.Template.Annotations
	if v, ok := a["olm.targetNamespaces"]; !ok || v != "" {
		t.Errorf("olm.targetNamespaces %q (present %v), want \"\"", v, ok)
	}
	if a["olm.operatorGroup"] != DefaultOperatorGroup || a["olm.operatorNamespace"] != ns || a["alm-examples"] != b.CSV.Annotations["alm-examples"] {
		t.Errorf("pod template annotations %v", a)
	}
	l := dep.Labels
	if l["control-plane"] != "controller-manager" || l[ManagedLabel] != "true" || l[OwnerLabel] != b.CSV.Name || l[DeploymentSpecHashLabel] == "" {
		t.Errorf("labels %v", l)
	}
	if dep.Spec.RevisionHistoryLimit == nil || *dep.Spec.RevisionHistoryLimit != 1 {
		t.Errorf("revisionHistoryLimit %v", dep.Spec.RevisionHistoryLimit)
	}
	c := dep.Spec.Template.Spec.Containers[0]
	if last := c.Env[len(c.Env)-1]; last.Name != OperatorConditionEnv || last.Value != b.CSV.Name || c.Env[0].Name != "POD_NAMESPACE" {
		t.Errorf("env %v", c.Env)
	}
	csvSpec := b.CSV.Spec.InstallStrategy.StrategySpec.DeploymentSpecs[0].Spec
	if c.Image != csvSpec.Template.Spec.Containers[0].Image || !reflect.DeepEqual(c.Args, csvSpec.Template.Spec.Containers[0].Args) {
		t.Errorf("container %s: image or args differ from the CSV's", c.Name)
	}
	// Install does not change the bundle it was given.
	if len(csvSpec.Template.Spec.Volumes) != 0 || b.CSV.Namespace != "" {
		t.Error("Install modified the bundle's CSV")
	}
}

func TestWebhooksAreTheCSVs(t *testing.T) {
	b, objs, ca := install(t)
	for _, desc := range b.CSV.Spec.WebhookDefinitions {
		name := WebhookName(ns, b.CSV.Name, desc.GenerateName)
		var hookName string
		var rules []admissionregistrationv1.RuleWithOperations
		var cc admissionregistrationv1.WebhookClientConfig
		var selector any
		var labels map[string]string
		if desc.Type == "MutatingAdmissionWebhook" {
			m := find[*admissionregistrationv1.MutatingWebhookConfiguration](t, objs, name)
			if len(m.Webhooks) != 1 {
				t.Fatalf("%s: %d webhooks", name, len(m.Webhooks))
			}
			w := m.Webhooks[0]
			hookName, rules, cc, labels = w.Name, w.Rules, w.ClientConfig, m.Labels
			if w.NamespaceSelector != nil {
				selector = w.NamespaceSelector
			}
			if !reflect.DeepEqual(w.ReinvocationPolicy, desc.ReinvocationPolicy) || !reflect.DeepEqual(w.FailurePolicy, desc.FailurePolicy) ||
				!reflect.DeepEqual(w.SideEffects, desc.SideEffects) || !reflect.DeepEqual(w.TimeoutSeconds, desc.TimeoutSeconds) {
				t.Errorf("%s: policies differ from the CSV's", name)
			}
		} else {
			v := find[*admissionregistrationv1.ValidatingWebhookConfiguration](t, objs, name)
			if len(v.Webhooks) != 1 {
				t.Fatalf("%s: %d webhooks", name, len(v.Webhooks))
			}
			w := v.Webhooks[0]
			hookName, rules, cc, labels = w.Name, w.Rules, w.ClientConfig, v.Labels
			if w.NamespaceSelector != nil {
				selector = w.NamespaceSelector
			}
			if !reflect.DeepEqual(w.FailurePolicy, desc.FailurePolicy) || !reflect.DeepEqual(w.SideEffects, desc.SideEffects) {
				t.Errorf("%s: policies differ from the CSV's", name)
			}
		}
		if hookName != desc.GenerateName || !reflect.DeepEqual(rules, desc.Rules) {
			t.Errorf("%s: webhook %s, rules %v", name, hookName, rules)
		}
		// AllNamespaces: OLM sets no namespaceSelector at all (every namespace).
		if selector != nil {
			t.Errorf("%s: namespaceSelector %v, want none", name, selector)
		}
		if !bytes.Equal(cc.CABundle, ca) || cc.Service == nil || cc.Service.Name != "meshlift-controller-manager-service" ||
			cc.Service.Namespace != ns || *cc.Service.Port != 9443 || *cc.Service.Path != *desc.WebhookPath {
			t.Errorf("%s: clientConfig %+v", name, cc.Service)
		}
		if labels[WebhookDescLabel] != desc.GenerateName || labels[WebhookHashLabel] == "" || labels[OwnerLabel] != b.CSV.Name {
			t.Errorf("%s: labels %v", name, labels)
		}
		if !strings.HasPrefix(name, desc.GenerateName+"-") || len(name) != len(desc.GenerateName)+6 {
			t.Errorf("name %s", name)
		}
	}
}

func TestRefusals(t *testing.T) {
	b, err := LoadBundle(filepath.Join("..", "..", "bundle", "manifests"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Install(b, Options{Namespace: ns}); err == nil || !strings.Contains(err.Error(), "no certificate") {
		t.Errorf("no certificates: %v", err)
	}
	broken := *b
	broken.CSV = b.CSV.DeepCopy()
	broken.CSV.Spec.WebhookDefinitions[0].Rules[0].APIGroups = []string{"*"}
	certs, _ := IssueCertificates(b.CSV, ns, time.Now())
	if _, err := Install(&broken, Options{Namespace: ns, Certificates: certs}); err == nil || !strings.Contains(err.Error(), "all groups") {
		t.Errorf("a \"*\" group: %v", err)
	}
	og := Options{Namespace: ns, Certificates: certs}.operatorGroup()
	og.Spec.TargetNamespaces = []string{"a"}
	if _, err := Install(b, Options{Namespace: ns, Certificates: certs, OperatorGroup: og}); err == nil {
		t.Error("a SingleNamespace OperatorGroup was accepted")
	}
}

func TestAdaptForLocalCluster(t *testing.T) {
	_, objs, _ := install(t)
	lc := LocalCluster{Deployment: "meshlift-controller-manager", Container: "manager", Image: "meshlift/meshlift-operator:dev",
		PullPolicy: corev1.PullNever, ControlPlaneService: "meshlift-control-plane", ControlPlaneIP: "10.96.0.21"}
	if err := AdaptForLocalCluster(objs, lc); err != nil {
		t.Fatal(err)
	}
	dep := find[*appsv1.Deployment](t, objs, "meshlift-controller-manager")
	c := dep.Spec.Template.Spec.Containers[0]
	if c.Image != lc.Image || c.ImagePullPolicy != corev1.PullNever {
		t.Errorf("image %s %s", c.Image, c.ImagePullPolicy)
	}
	if !contains(c.Args, "--control-plane-address=10.96.0.21:15012") {
		t.Errorf("args %v", c.Args)
	}
	svc := find[*unstructured.Unstructured](t, objs, "meshlift-control-plane")
	if ip, _, _ := unstructured.NestedString(svc.Object, "spec", "clusterIP"); ip != "10.96.0.21" {
		t.Errorf("clusterIP %q", ip)
	}
	lc.ControlPlaneService = "nope"
	if err := AdaptForLocalCluster(objs, lc); err == nil {
		t.Error("a missing Service was not reported")
	}
}

func TestToUnstructured(t *testing.T) {
	_, objs, _ := install(t)
	for _, o := range objs {
		u, err := toUnstructured(o)
		if err != nil {
			t.Fatal(err)
		}
		if _, found, _ := unstructured.NestedFieldNoCopy(u.Object, "metadata", "creationTimestamp"); found {
			t.Errorf("%s keeps creationTimestamp", describe(u))
		}
		if _, found, _ := unstructured.NestedFieldNoCopy(u.Object, "status"); found {
			t.Errorf("%s keeps status", describe(u))
		}
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func sha224(s string) [28]byte {
	return sha256.Sum224([]byte(s))
}
