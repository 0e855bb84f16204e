package webhookcert_test

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshlift/meshlift/internal/testutil/testenv"
	"github.com/meshlift/meshlift/internal/webhookcert"
	"github.com/meshlift/meshlift/internal/webhookcert/pki"
)

// In external mode OLM (or whoever installs the operator) issues the serving certificate, mounts
// it into the pod and writes caBundle; the operator serves the files and writes nothing.

func TestExternalModeServesTheMountedCertificateAndWritesNothing(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t, "external")
	// What OLM would have issued, mounted and written into the webhook configurations.
	issued, err := pki.Issue(service(ns), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	configs := createWebhookConfigurations(t, ns, issued.CABundle)
	dir := t.TempDir()
	mountSecretVolume(t, dir, issued)
	configVersions, err := configs.resourceVersions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	secretVersions, err := secretsOf(ctx, ns)
	if err != nil {
		t.Fatal(err)
	}

	// Every self-managed option is set too, and the test's credentials may write anything:
	// external mode must still leave the Secrets and the webhook configurations alone.
	opts := selfManaged(ns, configs, nil)
	opts.Mode = webhookcert.External
	opts.CertDir = dir
	certs, addr := startServingReplica(t, opts)
	waitReady(t, certs)
	waitPresented(t, addr, issued, service(ns))

	unwritten := func(ctx context.Context) error {
		if versions, err := configs.resourceVersions(ctx); err != nil || versions != configVersions {
			return fmt.Errorf("the webhook configurations were written (resourceVersions %s, then %s): %v", configVersions, versions, err)
		}
		secrets, err := secretsOf(ctx, ns)
		if err != nil {
			return err
		}
		if !maps.Equal(secrets, secretVersions) {
			return fmt.Errorf("the Secrets of the namespace changed: %v, then %v", secretVersions, secrets)
		}
		return nil
	}
	// The self-managed options ask for a check every 100ms: in a second a replica that wrote
	// anything would have done it about ten times.
	consistently(t, time.Second, unwritten)

	t.Run("a certificate replaced in the volume is served without a restart", func(t *testing.T) {
		// OLM rotates by issuing a new CA and serving certificate; it writes the new caBundle
		// itself.
		rotated, err := pki.Issue(service(ns), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		mountSecretVolume(t, dir, rotated)
		waitPresented(t, addr, rotated, service(ns))
		waitReady(t, certs)
		if err := unwritten(context.Background()); err != nil {
			t.Error(err)
		}
	})
}

func TestExternalModeIsReadyOnceTheFilesArePresentAndParse(t *testing.T) {
	ns := env.Namespace(t, "external-files")
	dir := t.TempDir()
	certs := startReplica(t, webhookcert.Options{Mode: webhookcert.External, CertDir: dir})
	waitNotReadyBecause(t, certs, "no such file or directory")

	// Half-written or foreign files: the kubelet may still be writing the volume.
	for _, name := range []string{pki.TLSCertKey, pki.TLSKeyKey} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("not PEM"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	waitNotReadyBecause(t, certs, "PEM")
	if _, err := certs.GetCertificate(nil); err == nil {
		t.Error("a certificate is served from files that do not parse")
	}

	issued, err := pki.Issue(service(ns), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	mountSecretVolume(t, dir, issued)
	waitReady(t, certs)
	waitServing(t, certs, certificate(t, issued.Cert), "the replica")
}

// External mode needs no permission at all: it serves files and never calls the API server.
func TestExternalModeNeedsNoPermissions(t *testing.T) {
	ns := env.Namespace(t, "external-rbac")
	issued, err := pki.Issue(service(ns), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	mountSecretVolume(t, dir, issued)
	certs := startReplicaAs(t, env.As("operator-without-permissions"), webhookcert.Options{Mode: webhookcert.External, CertDir: dir})
	waitReady(t, certs)
	waitServing(t, certs, certificate(t, issued.Cert), "the replica")
}

// mountSecretVolume writes b's tls.crt and tls.key into dir as the kubelet projects a Secret
// volume, and as it updates one: the files are symlinks through ..data to a hidden payload
// directory; an update writes a new payload directory, swaps ..data atomically and removes the
// old one.
func mountSecretVolume(t *testing.T, dir string, b pki.Bundle) {
	t.Helper()
	payload, err := os.MkdirTemp(dir, "..payload-")
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{pki.TLSCertKey: b.Cert, pki.TLSKeyKey: b.Key} {
		if err := os.WriteFile(filepath.Join(payload, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	dataLink := filepath.Join(dir, "..data")
	previous, _ := os.Readlink(dataLink)
	swap := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(payload), swap); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(swap, dataLink); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{pki.TLSCertKey, pki.TLSKeyKey} {
		link := filepath.Join(dir, name)
		if target, err := os.Readlink(link); err == nil && target == filepath.Join("..data", name) {
			continue
		}
		_ = os.Remove(link) // a regular file left by a test
		if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
			t.Fatal(err)
		}
	}
	if previous != "" {
		if err := os.RemoveAll(filepath.Join(dir, previous)); err != nil {
			t.Fatal(err)
		}
	}
}

// waitPresented waits until the webhook server at addr presents b's certificate to a client that
// trusts only b's CA bundle and verifies svc's name, as the API server does.
func waitPresented(t *testing.T, addr string, b pki.Bundle, svc pki.Service) {
	t.Helper()
	want := certificate(t, b.Cert)
	testenv.Eventually(t, timeout, func(context.Context) (bool, string) {
		presented, err := dialWebhook(addr, b.CABundle, svc.ServerName(), time.Now)
		if err != nil {
			return false, err.Error()
		}
		if !presented.Equal(want) {
			return false, fmt.Sprintf("the webhook server presents certificate %s, want %s", presented.SerialNumber.Text(16), want.SerialNumber.Text(16))
		}
		return true, ""
	})
}

// secretsOf maps the name of every Secret of ns to its resourceVersion.
func secretsOf(ctx context.Context, ns string) (map[string]string, error) {
	secrets := &corev1.SecretList{}
	if err := env.Client.List(ctx, secrets, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	versions := map[string]string{}
	for _, s := range secrets.Items {
		versions[s.Name] = s.ResourceVersion
	}
	return versions, nil
}
