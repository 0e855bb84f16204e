package webhookcert_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshlift/meshlift/internal/webhookcert"
	"github.com/meshlift/meshlift/internal/webhookcert/pki"
)

func TestSelfManagedIssuesInjectsAndServesTheCertificate(t *testing.T) {
	ns := env.Namespace(t, "selfmanaged")
	configs := createWebhookConfigurations(t, ns, nil)
	opts := selfManaged(ns, configs, nil)
	first := startReplica(t, opts)

	secret := waitForSecret(t, ns, func(s *corev1.Secret) error {
		bundle := pki.FromSecretData(s.Data)
		if d := pki.Check(bundle, service(ns), time.Now()); d.NeedsUpdate() {
			return fmt.Errorf("the stored bundle is not valid: %+v", d)
		}
		return verifyServing(bundle.CABundle, bundle.Cert, service(ns), time.Now())
	})
	if secret.Type != corev1.SecretTypeTLS || len(secret.Data[pki.CAKeyKey]) == 0 {
		t.Errorf("the Secret is of type %q with keys %v, want kubernetes.io/tls with tls.crt, tls.key, ca.crt and ca.key", secret.Type, keys(secret.Data))
	}
	stored := pki.FromSecretData(secret.Data)
	waitForCABundle(t, configs, stored.CABundle)
	waitReady(t, first)

	bundles, err := configs.caBundles(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	served, err := handshake(first, bundles[0], service(ns).ServerName(), time.Now)
	if err != nil {
		t.Fatalf("the API server could not call the webhook with the injected caBundle: %v", err)
	}
	if want, _ := parseCertificate(stored.Cert); !served.Equal(want) {
		t.Error("the served certificate is not the Secret's")
	}

	t.Run("a second replica serves the same certificate and rewrites nothing", func(t *testing.T) {
		ctx := context.Background()
		secretVersion := secret.ResourceVersion
		configVersions, err := configs.resourceVersions(ctx)
		if err != nil {
			t.Fatal(err)
		}
		second := startReplica(t, opts)
		waitReady(t, second)
		leaf, err := servedCertificate(second)
		if err != nil {
			t.Fatal(err)
		}
		if !leaf.Equal(served) {
			t.Error("the second replica serves another certificate than the first")
		}
		// Both replicas check every 100ms: in a second each had about ten chances to rewrite.
		consistently(t, time.Second, func(ctx context.Context) error {
			current := &corev1.Secret{}
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(secret), current); err != nil {
				return err
			}
			if current.ResourceVersion != secretVersion {
				return fmt.Errorf("the Secret was rewritten (resourceVersion %s, then %s)", secretVersion, current.ResourceVersion)
			}
			versions, err := configs.resourceVersions(ctx)
			if err != nil {
				return err
			}
			if versions != configVersions {
				return fmt.Errorf("the webhook configurations were rewritten (resourceVersions %s, then %s)", configVersions, versions)
			}
			return nil
		})
	})
}

func TestReplicasStartedTogetherConvergeOnOneSecret(t *testing.T) {
	ns := env.Namespace(t, "race")
	// Neither webhook configuration exists: the replicas still issue and serve.
	opts := selfManaged(ns, webhookConfigurations{mutating: ns + "-absent-mutating", validating: ns + "-absent-validating"}, nil)
	replicas := []*webhookcert.Manager{startReplica(t, opts), startReplica(t, opts), startReplica(t, opts)}
	secret := waitForSecret(t, ns, secretExists)
	stored, err := parseCertificate(secret.Data[pki.TLSCertKey])
	if err != nil {
		t.Fatal(err)
	}
	for i, replica := range replicas {
		waitReady(t, replica)
		waitServing(t, replica, stored, fmt.Sprintf("replica %d", i))
	}
	consistently(t, time.Second, func(ctx context.Context) error {
		current := &corev1.Secret{}
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(secret), current); err != nil {
			return err
		}
		if current.ResourceVersion != secret.ResourceVersion {
			return errors.New("the replicas keep rewriting the Secret")
		}
		return nil
	})
}

func TestExpiringCertificatesAreRotatedAhead(t *testing.T) {
	ns := env.Namespace(t, "rotate")
	configs := createWebhookConfigurations(t, ns, nil)
	now := newClock()
	start := now.Now()
	certs := startReplica(t, selfManaged(ns, configs, now.Now))
	original := pki.FromSecretData(waitForSecret(t, ns, secretExists).Data)
	waitForCABundle(t, configs, original.CABundle)
	waitReady(t, certs)

	t.Run("a serving certificate 29 days before expiry is reissued by the same CA", func(t *testing.T) {
		now.Set(start.Add(pki.ServingLifetime - 29*24*time.Hour))
		renewed := pki.FromSecretData(waitForSecret(t, ns, func(s *corev1.Secret) error {
			if bytes.Equal(s.Data[pki.TLSCertKey], original.Cert) {
				return errors.New("the serving certificate has not been reissued yet")
			}
			return nil
		}).Data)
		if !bytes.Equal(renewed.CABundle, original.CABundle) || !bytes.Equal(renewed.CAKey, original.CAKey) {
			t.Fatal("renewing the serving certificate changed the CA")
		}
		// Nothing to inject: the caBundle the API server has verifies the new certificate.
		bundles, err := configs.caBundles(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if err := verifyServing(bundles[0], renewed.Cert, service(ns), now.Now()); err != nil {
			t.Fatalf("the injected caBundle does not verify the new certificate: %v", err)
		}
		want, _ := parseCertificate(renewed.Cert)
		waitServing(t, certs, want, "the replica")
		served, err := handshake(certs, bundles[0], service(ns).ServerName(), now.Now)
		if err != nil {
			t.Fatal(err)
		}
		if !served.Equal(want) {
			t.Error("the handshake presented another certificate than the renewed one")
		}
	})

	t.Run("a CA 89 days before expiry is replaced and stays trusted next to the new one", func(t *testing.T) {
		now.Set(start.Add(pki.CALifetime - 89*24*time.Hour))
		rotated := pki.FromSecretData(waitForSecret(t, ns, func(s *corev1.Secret) error {
			if n := countCertificates(s.Data[pki.CACertKey]); n != 2 {
				return fmt.Errorf("ca.crt holds %d certificates, want the new CA and the replaced one", n)
			}
			return nil
		}).Data)
		if !bytes.HasSuffix(rotated.CABundle, original.CABundle) {
			t.Error("the replaced CA is not the second certificate of ca.crt")
		}
		waitForCABundle(t, configs, rotated.CABundle)
		want, _ := parseCertificate(rotated.Cert)
		waitServing(t, certs, want, "the replica")
		served, err := handshake(certs, rotated.CABundle, service(ns).ServerName(), now.Now)
		if err != nil {
			t.Fatalf("the injected caBundle does not verify the certificate of the new CA: %v", err)
		}
		if !served.Equal(want) {
			t.Error("the handshake presented another certificate than the one of the new CA")
		}
	})

	t.Run("the replaced CA leaves the bundle when it expires", func(t *testing.T) {
		now.Set(start.Add(pki.CALifetime + time.Minute))
		pruned := pki.FromSecretData(waitForSecret(t, ns, func(s *corev1.Secret) error {
			if n := countCertificates(s.Data[pki.CACertKey]); n != 1 {
				return fmt.Errorf("ca.crt holds %d certificates, want only the new CA", n)
			}
			return nil
		}).Data)
		waitForCABundle(t, configs, pruned.CABundle)
	})
}

func TestWatchesReactWithoutWaitingForTheCheckInterval(t *testing.T) {
	ns := env.Namespace(t, "watch")
	configs := createWebhookConfigurations(t, ns, nil)
	opts := selfManaged(ns, configs, nil)
	// Only watch events can explain a reaction within the test's timeout.
	opts.CheckInterval = time.Hour
	certs := startReplica(t, opts)
	original := waitForSecret(t, ns, secretExists)
	originalBundle := pki.FromSecretData(original.Data)
	waitForCABundle(t, configs, originalBundle.CABundle)
	waitReady(t, certs)

	t.Run("deleting the Secret rotates the CA and the served certificate", func(t *testing.T) {
		if err := env.Client.Delete(context.Background(), original); err != nil {
			t.Fatal(err)
		}
		replacement := pki.FromSecretData(waitForSecret(t, ns, func(s *corev1.Secret) error {
			if s.UID == original.UID {
				return errors.New("the Secret has not been deleted yet")
			}
			return nil
		}).Data)
		if bytes.Equal(replacement.CAKey, originalBundle.CAKey) || countCertificates(replacement.CABundle) != 1 {
			t.Fatal("the recreated Secret does not hold only a new CA")
		}
		waitForCABundle(t, configs, replacement.CABundle)
		want, _ := parseCertificate(replacement.Cert)
		waitServing(t, certs, want, "the replica")
		if _, err := handshake(certs, replacement.CABundle, service(ns).ServerName(), time.Now); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("emptying tls.crt reissues only the serving certificate", func(t *testing.T) {
		ctx := context.Background()
		before := waitForSecret(t, ns, secretExists)
		// What docs/webhook-certificates.md tells people to run.
		emptyCert := client.RawPatch(types.MergePatchType, []byte(`{"data":{"tls.crt":""}}`))
		if err := env.Client.Patch(ctx, before.DeepCopy(), emptyCert); err != nil {
			t.Fatal(err)
		}
		after := pki.FromSecretData(waitForSecret(t, ns, func(s *corev1.Secret) error {
			if len(s.Data[pki.TLSCertKey]) == 0 {
				return errors.New("tls.crt has not been reissued yet")
			}
			return nil
		}).Data)
		if !bytes.Equal(after.CABundle, before.Data[pki.CACertKey]) || !bytes.Equal(after.CAKey, before.Data[pki.CAKeyKey]) {
			t.Fatal("reissuing the serving certificate changed the CA")
		}
		if bytes.Equal(after.Cert, before.Data[pki.TLSCertKey]) {
			t.Fatal("the serving certificate was not reissued")
		}
		want, _ := parseCertificate(after.Cert)
		waitServing(t, certs, want, "the replica")
	})

	t.Run("a caBundle overwritten by someone else is injected again", func(t *testing.T) {
		ctx := context.Background()
		secret := waitForSecret(t, ns, secretExists)
		config := &admissionregistrationv1.ValidatingWebhookConfiguration{}
		if err := env.Client.Get(ctx, client.ObjectKey{Name: configs.validating}, config); err != nil {
			t.Fatal(err)
		}
		config.Webhooks[1].ClientConfig.CABundle = nil
		if err := env.Client.Update(ctx, config); err != nil {
			t.Fatal(err)
		}
		waitForCABundle(t, configs, secret.Data[pki.CACertKey])
	})
}

func TestSelfManagedModeLeavesACertManagerSecretAlone(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t, "guard")
	configs := createWebhookConfigurations(t, ns, nil)
	theirs, err := pki.Issue(service(ns), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: secretName, Annotations: map[string]string{"cert-manager.io/certificate-name": "webhook-serving-cert"}},
		Type:       corev1.SecretTypeTLS,
		// cert-manager writes no CA key.
		Data: map[string][]byte{pki.TLSCertKey: theirs.Cert, pki.TLSKeyKey: theirs.Key, pki.CACertKey: theirs.CABundle},
	}
	if err := env.Client.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	configVersions, err := configs.resourceVersions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	certs := startReplica(t, selfManaged(ns, configs, nil))
	waitNotReadyBecause(t, certs, "cert-manager")
	consistently(t, time.Second, func(ctx context.Context) error {
		current := &corev1.Secret{}
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(secret), current); err != nil {
			return err
		}
		if current.ResourceVersion != secret.ResourceVersion {
			return errors.New("the self-managed mode rewrote cert-manager's Secret")
		}
		if versions, err := configs.resourceVersions(ctx); err != nil || versions != configVersions {
			return fmt.Errorf("the webhook configurations were written (%s, then %s): %v", configVersions, versions, err)
		}
		if err := certs.Ready(nil); err == nil {
			return errors.New("the replica is ready without a certificate of its own")
		}
		return nil
	})
}

func TestCertManagerModeServesTheFilesAndLeavesCABundleAlone(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t, "certmanager")
	// What cert-manager would have issued, and injected into the webhook configurations.
	issued, err := pki.Issue(service(ns), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	configs := createWebhookConfigurations(t, ns, issued.CABundle)
	dir := t.TempDir()
	writeKeyPair(t, dir, issued)
	configVersions, err := configs.resourceVersions(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// Every self-managed option is set too: cert-manager mode must ignore them.
	opts := selfManaged(ns, configs, nil)
	opts.Mode = webhookcert.CertManager
	opts.CertDir = dir
	certs := startReplica(t, opts)
	waitReady(t, certs)
	served, err := handshake(certs, issued.CABundle, service(ns).ServerName(), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := parseCertificate(issued.Cert); !served.Equal(want) {
		t.Error("the served certificate is not the one in the directory")
	}

	consistently(t, time.Second, func(ctx context.Context) error {
		if versions, err := configs.resourceVersions(ctx); err != nil || versions != configVersions {
			return fmt.Errorf("the webhook configurations were written (%s, then %s): %v", configVersions, versions, err)
		}
		err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: secretName}, &corev1.Secret{})
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("cert-manager mode created or read a Secret: %v", err)
		}
		return nil
	})

	t.Run("a certificate renewed by cert-manager is served without a restart", func(t *testing.T) {
		renewed, _, err := pki.Renew(pki.Bundle{CABundle: issued.CABundle, CAKey: issued.CAKey}, service(ns), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		writeKeyPair(t, dir, renewed)
		want, _ := parseCertificate(renewed.Cert)
		waitServing(t, certs, want, "the replica")
		if _, err := handshake(certs, issued.CABundle, service(ns).ServerName(), time.Now); err != nil {
			t.Fatal(err)
		}
	})
}

func TestNewRejectsIncompleteOptions(t *testing.T) {
	complete := webhookcert.Options{Namespace: "meshlift-system", SecretName: "certs", ServiceName: "webhook-service"}
	tests := []struct {
		name    string
		change  func(*webhookcert.Options)
		wantErr string
	}{
		{name: "self-managed is the default mode", change: func(*webhookcert.Options) {}},
		{name: "self-managed needs the namespace", change: func(o *webhookcert.Options) { o.Namespace = "" }, wantErr: "namespace"},
		{name: "self-managed needs the Secret name", change: func(o *webhookcert.Options) { o.SecretName = "" }, wantErr: "Secret name"},
		{name: "self-managed needs the Service name", change: func(o *webhookcert.Options) { o.ServiceName = "" }, wantErr: "Service name"},
		{name: "self-managed works without webhook configurations", change: func(o *webhookcert.Options) {
			o.MutatingWebhookConfiguration, o.ValidatingWebhookConfiguration = "", ""
		}},
		{name: "cert-manager needs the certificate directory", change: func(o *webhookcert.Options) { o.Mode = webhookcert.CertManager }, wantErr: "directory"},
		{name: "cert-manager needs nothing else", change: func(o *webhookcert.Options) {
			*o = webhookcert.Options{Mode: webhookcert.CertManager, CertDir: "/certs"}
		}},
		{name: "external needs the certificate directory", change: func(o *webhookcert.Options) { o.Mode = webhookcert.External }, wantErr: "directory"},
		{name: "external needs nothing else", change: func(o *webhookcert.Options) {
			*o = webhookcert.Options{Mode: webhookcert.External, CertDir: webhookcert.DefaultExternalCertDir}
		}},
		{name: "an unknown mode is refused", change: func(o *webhookcert.Options) { o.Mode = "vault" }, wantErr: `not "vault"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := complete
			tt.change(&opts)
			_, err := webhookcert.New(opts)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("New() failed: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("New() error = %v, want one mentioning %q", err, tt.wantErr)
			}
		})
	}
}

func TestModeFlag(t *testing.T) {
	tests := []struct {
		name    string
		value   string
		want    webhookcert.Mode
		wantErr bool
	}{
		{name: "accepts self-managed", value: "self-managed", want: webhookcert.SelfManaged},
		{name: "accepts cert-manager", value: "cert-manager", want: webhookcert.CertManager},
		{name: "accepts external", value: "external", want: webhookcert.External},
		{name: "refuses anything else", value: "certmanager", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mode webhookcert.Mode
			err := mode.Set(tt.value)
			if (err != nil) != tt.wantErr || mode != tt.want {
				t.Fatalf("Set(%q) = %q, %v", tt.value, mode, err)
			}
		})
	}
}

func TestDefaultCertDir(t *testing.T) {
	for mode, want := range map[webhookcert.Mode]string{
		webhookcert.SelfManaged: "",
		webhookcert.CertManager: "/etc/meshlift/webhook-certs",
		// Where OLM mounts tls.crt and tls.key of the Secret it issues (docs/webhook-certificates.md).
		webhookcert.External: "/tmp/k8s-webhook-server/serving-certs",
	} {
		if got := webhookcert.DefaultCertDir(mode); got != want {
			t.Errorf("DefaultCertDir(%s) = %q, want %q", mode, got, want)
		}
	}
}

func TestGetCertificateFailsUntilACertificateIsLoaded(t *testing.T) {
	certs, err := webhookcert.New(webhookcert.Options{Mode: webhookcert.CertManager, CertDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := certs.GetCertificate(nil); err == nil {
		t.Error("GetCertificate() returned no error before a certificate was loaded")
	}
	if err := certs.Ready(nil); err == nil {
		t.Error("Ready() returned no error before a certificate was loaded")
	}
	if certs.NeedLeaderElection() {
		t.Error("every replica serves webhooks, so the Manager must run without leader election")
	}
}

func writeKeyPair(t *testing.T, dir string, b pki.Bundle) {
	t.Helper()
	// Between the two writes the files do not match; the watcher reloads once they do again.
	for _, file := range []struct {
		name string
		data []byte
	}{{pki.TLSKeyKey, b.Key}, {pki.TLSCertKey, b.Cert}} {
		if err := os.WriteFile(filepath.Join(dir, file.name), file.data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func keys(data map[string][]byte) []string {
	var names []string
	for name := range data {
		names = append(names, name)
	}
	return names
}
