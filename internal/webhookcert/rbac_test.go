package webhookcert_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshlift/meshlift/internal/repo"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
	"github.com/meshlift/meshlift/internal/webhookcert/pki"
)

// These tests run the Manager as a user with only the permissions of
// config/rbac/webhook-certificates/role.yaml (generated from the +kubebuilder:rbac markers of
// this package), as the operator's ServiceAccount runs in self-managed mode; the rules name the
// test's own Secret and webhook configurations instead of the install's.

func TestTheGeneratedRBACIsEnough(t *testing.T) {
	ns := env.Namespace(t, "rbac")
	configs := createWebhookConfigurations(t, ns, nil)
	clusterRules, namespacedRules := generatedRules(t, configs)
	env.Grant(t, "manager", "operator", ns, clusterRules, namespacedRules)

	certs := startReplicaAs(t, env.As("operator"), selfManaged(ns, configs, nil))
	secret := waitForSecret(t, ns, secretExists)
	waitForCABundle(t, configs, secret.Data[pki.CACertKey])
	waitReady(t, certs)
}

func TestAReplicaKeepsItsCertificateUntilTheNewCAIsInCABundle(t *testing.T) {
	ns := env.Namespace(t, "ordering")
	configs := createWebhookConfigurations(t, ns, nil)
	clusterRules, namespacedRules := generatedRules(t, configs)
	// The same permissions, except that the webhook configurations can be read but not written.
	var readOnly []rbacv1.PolicyRule
	for _, rule := range clusterRules {
		if slices.Contains(rule.Resources, "mutatingwebhookconfigurations") || slices.Contains(rule.Resources, "validatingwebhookconfigurations") {
			rule = *rule.DeepCopy()
			rule.Verbs = slices.DeleteFunc(rule.Verbs, func(verb string) bool { return verb == "patch" || verb == "update" })
		}
		readOnly = append(readOnly, rule)
	}
	env.Grant(t, "read-only", "operator", ns, readOnly, namespacedRules)

	now := newClock()
	start := now.Now()
	certs := startReplicaAs(t, env.As("operator"), selfManaged(ns, configs, now.Now))
	// Nothing is served yet, so the first certificate is served even though its CA could not be
	// injected: a certificate nobody trusts is no worse than none.
	first := pki.FromSecretData(waitForSecret(t, ns, secretExists).Data)
	waitServing(t, certs, certificate(t, first.Cert), "the replica")
	if err := certs.Ready(nil); err != nil {
		t.Fatalf("Ready() = %v once a certificate is served", err)
	}

	// Every sync fails (the CA cannot be injected), so the replica backs off further each time; a
	// change to a webhook configuration wakes it, as a watch event does.
	touches := 0
	waitWaking := func(check func(ctx context.Context) (bool, string)) {
		t.Helper()
		testenv.Eventually(t, timeout, func(ctx context.Context) (bool, string) {
			ok, msg := check(ctx)
			if !ok {
				if err := configs.touch(ctx, &touches); err != nil {
					return false, err.Error()
				}
			}
			return ok, msg
		})
	}
	secretWhere := func(check func(pki.Bundle) error) func(context.Context) (bool, string) {
		return func(ctx context.Context) (bool, string) {
			secret := &corev1.Secret{}
			if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: secretName}, secret); err != nil {
				return false, err.Error()
			}
			if err := check(pki.FromSecretData(secret.Data)); err != nil {
				return false, err.Error()
			}
			return true, ""
		}
	}
	readSecret := func() pki.Bundle {
		secret := &corev1.Secret{}
		if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: secretName}, secret); err != nil {
			t.Fatal(err)
		}
		return pki.FromSecretData(secret.Data)
	}

	// 100 days before the CA expires, the serving certificate is renewed by the same CA: caBundle
	// does not change, so the replica serves it at once.
	now.Set(start.Add(pki.CALifetime - 100*24*time.Hour))
	waitWaking(secretWhere(func(b pki.Bundle) error {
		if bytes.Equal(b.Cert, first.Cert) {
			return errors.New("the serving certificate has not been renewed yet")
		}
		return nil
	}))
	renewedCert := certificate(t, readSecret().Cert)
	waitServing(t, certs, renewedCert, "the replica")

	// 89 days before, the CA is replaced. The replica cannot inject the new CA, so it keeps
	// serving the certificate of the old CA, which is valid for 89 more days.
	now.Set(start.Add(pki.CALifetime - 89*24*time.Hour))
	waitWaking(secretWhere(func(b pki.Bundle) error {
		if bytes.Equal(b.CAKey, first.CAKey) {
			return errors.New("the CA has not been replaced yet")
		}
		return nil
	}))
	rotated := readSecret()
	consistently(t, time.Second, func(ctx context.Context) error {
		if err := configs.touch(ctx, &touches); err != nil {
			return err
		}
		served, err := servedCertificate(certs)
		if err != nil {
			return err
		}
		if !served.Equal(renewedCert) {
			return fmt.Errorf("the replica serves certificate %s of the new CA, which caBundle does not hold", served.SerialNumber.Text(16))
		}
		return nil
	})

	// Once it may write the webhook configurations, it injects the new CA, then serves the new
	// certificate.
	env.Grant(t, "manager", "operator", ns, clusterRules, namespacedRules)
	waitWaking(func(ctx context.Context) (bool, string) {
		bundles, err := configs.caBundles(ctx)
		if err != nil {
			return false, err.Error()
		}
		if slices.ContainsFunc(bundles, func(b []byte) bool { return !bytes.Equal(b, rotated.CABundle) }) {
			return false, "the new CA is not in caBundle yet"
		}
		return true, ""
	})
	waitServing(t, certs, certificate(t, rotated.Cert), "the replica")
}

func certificate(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	cert, err := parseCertificate(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// touch changes an annotation of the ValidatingWebhookConfiguration, which wakes the Managers
// watching it.
func (c webhookConfigurations) touch(ctx context.Context, touches *int) error {
	*touches++
	patch := client.RawPatch(types.MergePatchType, fmt.Appendf(nil, `{"metadata":{"annotations":{"test.meshlift.io/touch":"%d"}}}`, *touches))
	config := &admissionregistrationv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: c.validating}}
	return env.Client.Patch(ctx, config, patch)
}

// generatedRules reads the ClusterRole and the Role of config/rbac/webhook-certificates/role.yaml
// with their resourceNames changed from the install's names to the test's.
func generatedRules(t *testing.T, configs webhookConfigurations) (clusterRules, namespacedRules []rbacv1.PolicyRule) {
	t.Helper()
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "config", "rbac", "webhook-certificates", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]string{
		"meshlift-mutating-webhook-configuration":   configs.mutating,
		"meshlift-validating-webhook-configuration": configs.validating,
		"meshlift-webhook-certs":                    secretName,
	}
	decoder := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		var role rbacv1.ClusterRole // a Role has the same rules
		if err := decoder.Decode(&role); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		for i := range role.Rules {
			for j, name := range role.Rules[i].ResourceNames {
				renamed, ok := names[name]
				if !ok {
					t.Fatalf("%s %s grants %s by the name %s, which this test does not know", role.Kind, role.Name, role.Rules[i].Resources, name)
				}
				role.Rules[i].ResourceNames[j] = renamed
			}
		}
		switch role.Kind {
		case "ClusterRole":
			clusterRules = role.Rules
		case "Role":
			namespacedRules = role.Rules
		}
	}
	if clusterRules == nil || namespacedRules == nil {
		t.Fatal("config/rbac/webhook-certificates/role.yaml holds no ClusterRole or no Role: run `make manifests`")
	}
	return clusterRules, namespacedRules
}
