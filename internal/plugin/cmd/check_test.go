package cmd

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/plugin/preflight"
	"github.com/meshlift/meshlift/internal/testutil/gen"
	"github.com/meshlift/meshlift/internal/versions"
)

// checkTestCA is a CA made with crypto/x509 for the check test, independent of the operator's
// own issuing code.
type checkTestCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func checkTestKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func checkTestSign(t *testing.T, template, parent *x509.Certificate, pub *ecdsa.PublicKey, parentKey *ecdsa.PrivateKey) (*x509.Certificate, []byte) {
	t.Helper()
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	template.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, template, parent, pub, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func newCheckTestCA(t *testing.T, name string, lifetime time.Duration) checkTestCA {
	t.Helper()
	key := checkTestKey(t)
	template := &x509.Certificate{
		Subject: pkix.Name{CommonName: name}, NotBefore: testNow.Add(-time.Hour), NotAfter: testNow.Add(lifetime),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	cert, certPEM := checkTestSign(t, template, template, &key.PublicKey, key)
	return checkTestCA{cert: cert, key: key, pem: certPEM}
}

// serving issues a serving certificate for dnsName and returns it and its key, in PEM.
func (ca checkTestCA) serving(t *testing.T, dnsName string) (certPEM, keyPEM []byte) {
	t.Helper()
	key := checkTestKey(t)
	_, certPEM = checkTestSign(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: dnsName}, DNSNames: []string{dnsName},
		NotBefore: testNow.Add(-time.Hour), NotAfter: testNow.Add(365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca.cert, &key.PublicKey, ca.key)
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func checkCreate(t *testing.T, objs ...client.Object) {
	t.Helper()
	for _, obj := range objs {
		if err := testEnv.Client.Create(context.Background(), obj); err != nil {
			t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
		}
		if obj.GetNamespace() == "" {
			t.Cleanup(func() { _ = testEnv.Client.Delete(context.Background(), obj) })
		}
	}
}

// checkSetAvailable writes the operator Deployment's status as the Deployment controller would.
func checkSetAvailable(t *testing.T, deploy *appsv1.Deployment, available int32) {
	t.Helper()
	if err := testEnv.Client.Get(context.Background(), client.ObjectKeyFromObject(deploy), deploy); err != nil {
		t.Fatal(err)
	}
	deploy.Status = appsv1.DeploymentStatus{
		ObservedGeneration: deploy.Generation, Replicas: 1, UpdatedReplicas: 1,
		ReadyReplicas: available, AvailableReplicas: available, UnavailableReplicas: 1 - available,
	}
	if err := testEnv.Client.Status().Update(context.Background(), deploy); err != nil {
		t.Fatalf("writing the Deployment's status: %v", err)
	}
}

// checkOperatorObjects are what an installed, working operator leaves in namespace ns: its
// Deployment, the webhook configurations (with the names its flags give) whose caBundle verifies
// the serving certificate of its Secret, the control-plane Service with a ready endpoint, the
// built-in CA's Secret and the trust bundle of a namespace with a MeshService.
func checkOperatorObjects(t *testing.T, ns string) (*appsv1.Deployment, []client.Object) {
	t.Helper()
	webhookCA := newCheckTestCA(t, "meshlift-webhook-ca", 3650*24*time.Hour)
	servingCert, servingKey := webhookCA.serving(t, "meshlift-webhook-service."+ns+".svc")
	meshCA := newCheckTestCA(t, "meshlift-mesh-ca", 3650*24*time.Hour)

	deploy := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "meshlift-controller-manager", Labels: OperatorPodLabels},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: OperatorPodLabels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: OperatorPodLabels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "manager", Image: "meshlift/meshlift-operator:dev",
					Args: []string{
						"--leader-elect",
						"--mutating-webhook-configuration=" + ns + "-injector",
						"--validating-webhook-configuration=" + ns + "-validator",
						"--control-plane-address=meshlift-control-plane." + ns + ".svc:15012",
					},
				}}},
			},
		},
	}
	clientConfig := admissionregistrationv1.WebhookClientConfig{
		Service:  &admissionregistrationv1.ServiceReference{Namespace: ns, Name: "meshlift-webhook-service", Path: ptr.To("/check"), Port: ptr.To[int32](443)},
		CABundle: webhookCA.pem,
	}
	// Rules on a resource nobody creates: the API server never calls these webhooks.
	rules := []admissionregistrationv1.RuleWithOperations{{
		Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
		Rule:       admissionregistrationv1.Rule{APIGroups: []string{"test.meshlift.io"}, APIVersions: []string{"v1"}, Resources: []string{"widgets"}},
	}}
	sideEffects, ignore := ptr.To(admissionregistrationv1.SideEffectClassNone), ptr.To(admissionregistrationv1.Ignore)
	objs := []client.Object{
		&admissionregistrationv1.MutatingWebhookConfiguration{
			ObjectMeta: metav1.ObjectMeta{Name: ns + "-injector"},
			Webhooks: []admissionregistrationv1.MutatingWebhook{{Name: "inject.pods.meshlift.io", ClientConfig: clientConfig, Rules: rules,
				SideEffects: sideEffects, FailurePolicy: ignore, AdmissionReviewVersions: []string{"v1"}}},
		},
		&admissionregistrationv1.ValidatingWebhookConfiguration{
			ObjectMeta: metav1.ObjectMeta{Name: ns + "-validator"},
			Webhooks: []admissionregistrationv1.ValidatingWebhook{{Name: "upgradeplans.mesh.meshlift.io", ClientConfig: clientConfig, Rules: rules,
				SideEffects: sideEffects, FailurePolicy: ignore, AdmissionReviewVersions: []string{"v1"}}},
		},
		&corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "meshlift-webhook-certs"},
			Type:       corev1.SecretTypeTLS,
			Data:       map[string][]byte{"tls.crt": servingCert, "tls.key": servingKey, "ca.crt": webhookCA.pem},
		},
		&corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "meshlift-control-plane"},
			Spec:       corev1.ServiceSpec{Selector: OperatorPodLabels, Ports: []corev1.ServicePort{{Name: "grpc-tls", Port: 15012, Protocol: corev1.ProtocolTCP}}},
		},
		&discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: "meshlift-control-plane-x1", Labels: map[string]string{discoveryv1.LabelServiceName: "meshlift-control-plane"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.244.0.7"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("grpc-tls"), Port: ptr.To[int32](15012), Protocol: ptr.To(corev1.ProtocolTCP)}},
		},
		&corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "meshlift-ca"},
			Data:       map[string][]byte{"ca.crt": meshCA.pem, "ca.key": []byte("not read by check")},
		},
		gen.MeshService("web", gen.MeshServiceMeta(gen.SetNamespace(ns))),
	}
	// The operator's leader publishes the trust bundle in every namespace with a MeshService,
	// including those other tests of this package created.
	var meshServices meshv1alpha1.MeshServiceList
	if err := testEnv.Client.List(context.Background(), &meshServices); err != nil {
		t.Fatal(err)
	}
	namespaces := map[string]bool{ns: true}
	for _, ms := range meshServices.Items {
		namespaces[ms.Namespace] = true
	}
	for namespace := range namespaces {
		existing := &corev1.ConfigMap{}
		if err := testEnv.Client.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: preflight.TrustBundleConfigMap}, existing); err == nil {
			continue
		}
		objs = append(objs, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: preflight.TrustBundleConfigMap, Labels: map[string]string{"app.kubernetes.io/part-of": "meshlift"}},
			Data:       map[string]string{preflight.TrustBundleKey: string(meshCA.pem)},
		})
	}
	// Exactly one default SidecarVersion, unless another test of this package left one.
	var sidecarVersions meshv1alpha1.SidecarVersionList
	if err := testEnv.Client.List(context.Background(), &sidecarVersions); err != nil {
		t.Fatal(err)
	}
	switch defaults := versions.DefaultClaims(sidecarVersions.Items); len(defaults) {
	case 0:
		objs = append(objs, gen.SidecarVersion(ns+"-proxy", "1.0.0", gen.AsDefault()))
	case 1:
	default:
		t.Fatalf("other tests left %d default SidecarVersions (%v): the check cannot pass", len(defaults), defaults)
	}
	return deploy, objs
}

func TestCheckFailsWithoutTheOperatorPassesWithItAndFailsWhenItHasNoReadyReplica(t *testing.T) {
	const ns = "check-e2e"
	checkCreate(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})

	// The CRDs are installed (envtest), nothing else.
	env, out := newTestEnv(t, "default")
	err := run(t, env, "check", "--operator-namespace", ns)
	if ExitCode(err) != ExitPlanFailed {
		t.Fatalf("check without the operator: exit code %d (%v), want %d\n%s", ExitCode(err), err, ExitPlanFailed, out)
	}
	for _, want := range []string{
		"[ok]   CRD upgradeplans.mesh.meshlift.io is established and serves v1alpha1\n",
		"[ok]   CRD meshservices.mesh.meshlift.io is established and serves v1alpha1\n",
		"[ok]   CRD sidecarversions.mesh.meshlift.io is established and serves v1alpha1\n",
		"[FAIL] operator not found: no Deployment meshlift-controller-manager (nor one whose pods are the operator's) in namespace " + ns + "\n",
		"Status: [FAIL] ",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("check without the operator does not print %q:\n%s", want, out)
		}
	}

	t.Logf("a check without the operator:\n%s", out)

	deploy, objs := checkOperatorObjects(t, ns)
	checkCreate(t, append([]client.Object{deploy}, objs...)...)
	checkSetAvailable(t, deploy, 1)
	env, out = newTestEnv(t, "default")
	if err := run(t, env, "check", "--operator-namespace", ns); err != nil {
		t.Fatalf("check of a working installation: exit code %d (%v), want 0\n%s", ExitCode(err), err, out)
	}
	for _, want := range []string{
		"[ok]   operator Deployment " + ns + "/meshlift-controller-manager has 1 of 1 replicas available\n",
		"[ok]   MutatingWebhookConfiguration " + ns + "-injector: the caBundle of its 1 webhook verifies the serving certificate for meshlift-webhook-service." + ns + ".svc\n",
		"[ok]   ValidatingWebhookConfiguration " + ns + "-validator: the caBundle of its 1 webhook verifies the serving certificate for meshlift-webhook-service." + ns + ".svc\n",
		"[ok]   webhook serving certificate (Secret " + ns + "/meshlift-webhook-certs) is valid for 365d more",
		"[ok]   control-plane Service " + ns + "/meshlift-control-plane has 1 ready endpoint\n",
		`[ok]   mesh CA "meshlift-mesh-ca" (Secret ` + ns + `/meshlift-ca) is valid for 3650d more`,
		"[ok]   trust bundle ConfigMap meshlift-ca-root is published in ",
		"is the default\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("check of a working installation does not print %q:\n%s", want, out)
		}
	}
	t.Logf("a passing check:\n%s", out)

	// -o json: the same results, with stable fields.
	env, out = newTestEnv(t, "default")
	if err := run(t, env, "check", "--operator-namespace", ns, "-o", "json"); err != nil {
		t.Fatalf("check -o json: %v\n%s", err, out)
	}
	var report struct {
		Status  string `json:"status"`
		Errors  int    `json:"errors"`
		Results []struct {
			ID, Category, Description, Status, Hint string
		} `json:"results"`
	}
	if err := json.Unmarshal(out.Bytes(), &report); err != nil {
		t.Fatalf("check -o json prints no JSON report: %v\n%s", err, out)
	}
	if report.Status == "error" || report.Errors != 0 || len(report.Results) != 11 || report.Results[3].ID != "operator.available" || report.Results[3].Status != "ok" {
		t.Errorf("check -o json: %+v", report)
	}

	// Someone who may read everything check reads but Secrets: warnings, exit 0. The mesh CA is
	// then read from the published trust bundle.
	const viewer = "check-viewer"
	testEnv.Grant(t, "check-viewer", viewer, ns, []rbacv1.PolicyRule{{
		APIGroups: []string{"*"}, Verbs: []string{"get", "list"},
		Resources: []string{"customresourcedefinitions", "deployments", "mutatingwebhookconfigurations", "validatingwebhookconfigurations",
			"services", "endpointslices", "configmaps", "meshservices", "sidecarversions"},
	}}, nil)
	env, out = newTestEnv(t, "default")
	if env.Client, err = client.NewWithWatch(testEnv.As(viewer), client.Options{Scheme: Scheme()}); err != nil {
		t.Fatal(err)
	}
	if err := run(t, env, "check", "--operator-namespace", ns); err != nil {
		t.Fatalf("check without access to Secrets: exit code %d (%v), want 0\n%s", ExitCode(err), err, out)
	}
	for _, want := range []string{
		"[warn] cannot read Secret " + ns + "/meshlift-webhook-certs (forbidden): the webhook serving certificate and caBundle are not checked\n",
		"       run check with an account that may get secrets (kubectl auth can-i get secrets -n " + ns + ")\n",
		"[ok]   MutatingWebhookConfiguration " + ns + "-injector: 1 webhook has a caBundle (not verified: no serving certificate to verify)\n",
		`[ok]   mesh CA "meshlift-mesh-ca" (ConfigMap `,
		"Status: [warn] 1 warning, 10 ok\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("check without access to Secrets does not print %q:\n%s", want, out)
		}
	}

	// The operator scaled down to no ready replica (say, a crash loop).
	checkSetAvailable(t, deploy, 0)
	env, out = newTestEnv(t, "default")
	err = run(t, env, "check", "--operator-namespace", ns)
	if ExitCode(err) != ExitPlanFailed {
		t.Fatalf("check with no ready operator replica: exit code %d (%v), want %d\n%s", ExitCode(err), err, ExitPlanFailed, out)
	}
	for _, want := range []string{
		"[FAIL] operator has no ready replica: Deployment " + ns + "/meshlift-controller-manager has 0 of 1 replicas available\n",
		"       kubectl -n " + ns + " get pods -l app.kubernetes.io/name=meshlift,control-plane=controller-manager\n",
		"       kubectl -n " + ns + " logs deployment/meshlift-controller-manager -c manager\n",
		"Status: [FAIL] 1 error, ",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("check with no ready operator replica does not print %q:\n%s", want, out)
		}
	}
	t.Logf("a failing check:\n%s", out)
}

func TestCheckRefusesAnUnknownOutput(t *testing.T) {
	env, out := newTestEnv(t, "default")
	err := run(t, env, "check", "-o", "xml")
	if ExitCode(err) != ExitError || !strings.Contains(err.Error(), `--output "xml" is not supported`) {
		t.Errorf("check -o xml: exit code %d, %v\n%s", ExitCode(err), err, out)
	}
}
