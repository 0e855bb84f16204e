package preflight_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/plugin/preflight"
	"github.com/meshlift/meshlift/internal/testutil/gen"
)

// now is the clock of every test.
var now = time.Date(2026, 12, 6, 21, 0, 0, 0, time.UTC)

const day = 24 * time.Hour

var operatorPodLabels = map[string]string{"control-plane": "controller-manager", "app.kubernetes.io/name": "meshlift"}

// authority is a CA that signs test certificates.
type authority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

var serial int64

func sign(t *testing.T, template, parent *x509.Certificate, pub *ecdsa.PublicKey, parentKey *ecdsa.PrivateKey) (*x509.Certificate, []byte) {
	t.Helper()
	serial++
	template.SerialNumber = big.NewInt(serial)
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

// newCA is a self-signed CA valid from notBefore to notAfter.
func newCA(t *testing.T, name string, notBefore, notAfter time.Time) authority {
	t.Helper()
	key := newKey(t)
	template := &x509.Certificate{
		Subject: pkix.Name{CommonName: name}, NotBefore: notBefore, NotAfter: notAfter,
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	cert, certPEM := sign(t, template, template, &key.PublicKey, key)
	return authority{cert: cert, key: key, pem: certPEM}
}

// serve issues a serving certificate for dnsNames.
func (a authority) serve(t *testing.T, dnsNames []string, notBefore, notAfter time.Time) []byte {
	t.Helper()
	key := newKey(t)
	_, certPEM := sign(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: dnsNames[0]}, DNSNames: dnsNames, NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, a.cert, &key.PublicKey, a.key)
	return certPEM
}

var webhookDNSNames = []string{
	"meshlift-webhook-service", "meshlift-webhook-service.meshlift-system",
	"meshlift-webhook-service.meshlift-system.svc", "meshlift-webhook-service.meshlift-system.svc.cluster.local",
}

// certs are the certificates of a healthy installation, shared by the tests (generating keys
// is the slow part).
type certs struct {
	webhookCA authority
	serving   []byte
	meshCA    authority
}

func newCerts(t *testing.T) certs {
	t.Helper()
	webhookCA := newCA(t, "meshlift-webhook-ca", now.Add(-30*day), now.Add(3650*day))
	return certs{
		webhookCA: webhookCA,
		serving:   webhookCA.serve(t, webhookDNSNames, now.Add(-30*day), now.Add(335*day)),
		meshCA:    newCA(t, "meshlift-mesh-ca", now.Add(-30*day), now.Add(3620*day)),
	}
}

func crd(name string) *apiextensionsv1.CustomResourceDefinition {
	return &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{Name: "v1alpha1", Served: true, Storage: true}},
		},
		Status: apiextensionsv1.CustomResourceDefinitionStatus{Conditions: []apiextensionsv1.CustomResourceDefinitionCondition{
			{Type: apiextensionsv1.NamesAccepted, Status: apiextensionsv1.ConditionTrue},
			{Type: apiextensionsv1.Established, Status: apiextensionsv1.ConditionTrue},
		}},
	}
}

// operatorDeployment is config/manager's Deployment with available replicas of 1.
func operatorDeployment(available int32, args ...string) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: "meshlift-system", Name: "meshlift-controller-manager", Labels: operatorPodLabels},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: operatorPodLabels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "manager", Image: "meshlift/meshlift-operator:dev",
					Args: append([]string{"--leader-elect", "--health-probe-bind-address=:8081"}, args...),
				}}},
			},
		},
		Status: appsv1.DeploymentStatus{Replicas: 1, AvailableReplicas: available, ReadyReplicas: available},
	}
}

func clientConfig(caBundle []byte) admissionregistrationv1.WebhookClientConfig {
	return admissionregistrationv1.WebhookClientConfig{
		Service:  &admissionregistrationv1.ServiceReference{Namespace: "meshlift-system", Name: "meshlift-webhook-service", Path: ptr.To("/x")},
		CABundle: caBundle,
	}
}

func mutating(caBundle []byte) *admissionregistrationv1.MutatingWebhookConfiguration {
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "meshlift-mutating-webhook-configuration"},
		Webhooks:   []admissionregistrationv1.MutatingWebhook{{Name: "inject.pods.meshlift.io", ClientConfig: clientConfig(caBundle)}},
	}
}

func validating(caBundle []byte) *admissionregistrationv1.ValidatingWebhookConfiguration {
	c := &admissionregistrationv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "meshlift-validating-webhook-configuration"}}
	for _, name := range []string{"upgradeplans.mesh.meshlift.io", "meshservices.mesh.meshlift.io", "sidecarversions.mesh.meshlift.io"} {
		c.Webhooks = append(c.Webhooks, admissionregistrationv1.ValidatingWebhook{Name: name, ClientConfig: clientConfig(caBundle)})
	}
	return c
}

func secret(namespace, name string, data map[string][]byte) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}, Data: data}
}

func endpointSlice(service string, ready ...*bool) discoveryv1.EndpointSlice {
	s := discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "meshlift-system", Name: service + "-abcde", Labels: map[string]string{preflight.ServiceNameLabel: service}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for i, r := range ready {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses: []string{"10.0.0." + string(rune('1'+i))}, Conditions: discoveryv1.EndpointConditions{Ready: r},
		})
	}
	return s
}

func trustBundle(namespace string, bundle []byte) corev1.ConfigMap {
	return corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "meshlift-ca-root", Labels: map[string]string{"app.kubernetes.io/part-of": "meshlift"}},
		Data:       map[string]string{"ca.crt": string(bundle)},
	}
}

func meshServiceIn(namespace, name string) metav1.PartialObjectMetadata {
	return metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
}

// healthy is the input of an installation of config/default that works: every check passes.
func healthy(c certs) preflight.Input {
	in := preflight.Input{
		Now:                            now,
		OperatorPodLabels:              operatorPodLabels,
		CRDs:                           map[string]preflight.Got[apiextensionsv1.CustomResourceDefinition]{},
		Deployments:                    found(&appsv1.DeploymentList{Items: []appsv1.Deployment{*operatorDeployment(1)}}),
		MutatingWebhookConfiguration:   found(mutating(c.webhookCA.pem)),
		ValidatingWebhookConfiguration: found(validating(c.webhookCA.pem)),
		WebhookSecret: found(secret("meshlift-system", "meshlift-webhook-certs", map[string][]byte{
			"tls.crt": c.serving, "tls.key": []byte("unused"), "ca.crt": c.webhookCA.pem, "ca.key": []byte("unused"),
		})),
		ControlPlaneService: found(&corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "meshlift-system", Name: "meshlift-control-plane"},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "grpc-tls", Port: 15012}}},
		}),
		ControlPlaneEndpointSlices: found(&discoveryv1.EndpointSliceList{Items: []discoveryv1.EndpointSlice{endpointSlice("meshlift-control-plane", ptr.To(true))}}),
		CASecret:                   found(secret("meshlift-system", "meshlift-ca", map[string][]byte{"ca.crt": c.meshCA.pem, "ca.key": []byte("unused")})),
		TrustBundles:               found(&corev1.ConfigMapList{Items: []corev1.ConfigMap{trustBundle("shop", c.meshCA.pem)}}),
		MeshServices:               found(&metav1.PartialObjectMetadataList{Items: []metav1.PartialObjectMetadata{meshServiceIn("shop", "web")}}),
		SidecarVersions: found(&meshv1alpha1.SidecarVersionList{Items: []meshv1alpha1.SidecarVersion{
			*gen.SidecarVersion("proxy-v1", "1.0.0", gen.AsDefault()), *gen.SidecarVersion("proxy-v2", "2.0.0"),
		}}),
	}
	for _, name := range preflight.CRDNames {
		in.CRDs[name] = found(crd(name))
	}
	in.Settings = preflight.SettingsFor("meshlift-system", operatorDeployment(1))
	return in
}

func found[T any](obj *T) preflight.Got[T] { return preflight.Got[T]{Object: obj} }

func failed[T any](err error) preflight.Got[T] { return preflight.Got[T]{Err: err} }
