package rbac_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/cert-manager/cert-manager/pkg/util/pki"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshlift/meshlift/internal/identity"
	"github.com/meshlift/meshlift/internal/identity/certmanager"
	"github.com/meshlift/meshlift/internal/repo"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

// caCertManagerRole is the opt-in Role of config/rbac/ca-cert-manager, as the install names it.
const caCertManagerRole = "Role meshlift-ca-cert-manager"

// TestTheCertManagerCABackendsRoleIsExactlyWhatItUses runs the operator with the cert-manager CA
// backend (--ca-backend=cert-manager) and exactly the roles of config/default plus the opt-in
// Role of config/rbac/ca-cert-manager, with cert-manager's CertificateRequest CRD installed and
// the test playing cert-manager and its approver. It drives every path of the backend: an
// intermediate requested, read until issued and published with the trust anchor of a ConfigMap,
// then of a Secret (--ca-trust-anchor=secret/...), and old CertificateRequests of the replica
// deleted. The audit log must show no request refused, and every permission of the opt-in Role
// used.
func TestTheCertManagerCABackendsRoleIsExactlyWhatItUses(t *testing.T) {
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	// The copy of cert-manager's CRD from the module version in go.mod (its README says how).
	c := startCluster(t, "default", false,
		filepath.Join(root, "internal", "identity", "certmanager", "testdata", "crds", "cert-manager.io_certificaterequests.yaml"))
	c.applyRBAC(t, filepath.Join(root, "config", "rbac", "ca-cert-manager"))
	ctx := context.Background()

	const issuerName = "mesh-ca"
	iss := newIssuer(t, c, issuerName)
	anchor := map[string]string{certmanager.DefaultTrustAnchorKey: string(iss.rootPEM)}
	for _, obj := range []client.Object{
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: operatorNamespace, Name: certmanager.DefaultTrustAnchorName}, Data: anchor},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: operatorNamespace, Name: certmanager.DefaultTrustAnchorName}, StringData: anchor},
	} {
		if err := c.client.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	// Three CertificateRequests this replica made before (its replica label is the host name):
	// with the operator's new one it has four, one more than it keeps, so it deletes the oldest.
	hostname, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	var old []*cmapi.CertificateRequest
	for i := range 3 {
		cr := &cmapi.CertificateRequest{
			ObjectMeta: metav1.ObjectMeta{Namespace: operatorNamespace, Name: fmt.Sprintf("meshlift-ca-old-%d", i), Labels: map[string]string{
				identity.LabelPartOf: identity.PartOf, certmanager.LabelComponent: certmanager.Component, certmanager.LabelReplica: hostname,
			}},
			Spec: cmapi.CertificateRequestSpec{IssuerRef: cmmeta.IssuerReference{Name: "retired", Kind: "Issuer"}, Request: csrPEM(t), IsCA: true},
		}
		if err := c.client.Create(ctx, cr); err != nil {
			t.Fatal(err)
		}
		old = append(old, cr)
		time.Sleep(1100 * time.Millisecond) // creation timestamps have a resolution of a second
	}

	for run, anchorFlag := range []string{"--ca-trust-anchor=configmap/" + certmanager.DefaultTrustAnchorName, "--ca-trust-anchor=secret/" + certmanager.DefaultTrustAnchorName} {
		issued := iss.issued.Load()
		op := c.startOperator(t, []string{
			"--leader-elect=false", "--enable-webhooks=false", "--metrics-bind-address=0", "--control-plane-bind-address=0",
			"--ca-backend=cert-manager", "--ca-issuer-name=" + issuerName, anchorFlag,
		})
		// Ready means the intermediate is published: it was issued and chains to the anchor.
		op.waitReady(t)
		if iss.issued.Load() == issued {
			t.Fatalf("with %s the operator became ready without a new intermediate", anchorFlag)
		}
		// Each run adds a request: the oldest left goes.
		testenv.Eventually(t, time.Minute, func(ctx context.Context) (bool, string) {
			err := c.client.Get(ctx, client.ObjectKeyFromObject(old[run]), &cmapi.CertificateRequest{})
			return apierrors.IsNotFound(err), fmt.Sprintf("the replica's oldest CertificateRequest %s is still there: %v", old[run].Name, err)
		})
		op.stop()
	}

	requests := c.operatorRequests(t)
	logRequests(t, requests)
	c.checkRequests(t, requests, unreachable, func(p permission) bool { return p.role == caCertManagerRole })
	for _, r := range requests {
		if r.group == cmapi.SchemeGroupVersion.Group && r.namespace != operatorNamespace {
			t.Errorf("the cert-manager backend sent %s, outside the operator's namespace", r)
		}
	}
}

// issuer plays cert-manager with a namespaced CA Issuer, and its approver, for the
// CertificateRequests of the operator's namespace that name it: it approves them, then signs
// them with its root as cert-manager's CA issuer does.
type issuer struct {
	name    string
	root    *x509.Certificate
	rootKey crypto.Signer
	rootPEM []byte
	issued  atomic.Int32
}

func newIssuer(t *testing.T, c *cluster, name string) *issuer {
	t.Helper()
	rootPEM, keyPEM, err := identity.NewRoot(identity.DefaultTrustDomain, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key, err := identity.ParsePrivateKey(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(rootPEM)
	root, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	iss := &issuer{name: name, root: root, rootKey: key, rootPEM: rootPEM}

	watcher, err := client.NewWithWatch(c.cfg, client.Options{Scheme: c.client.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			w, err := watcher.Watch(ctx, &cmapi.CertificateRequestList{}, client.InNamespace(operatorNamespace))
			if err != nil {
				if ctx.Err() == nil {
					t.Errorf("the test issuer cannot watch CertificateRequests: %v", err)
				}
				return
			}
			for event := range w.ResultChan() {
				cr, ok := event.Object.(*cmapi.CertificateRequest)
				if !ok || (event.Type != watch.Added && event.Type != watch.Modified) || cr.Spec.IssuerRef.Name != name {
					continue
				}
				if err := iss.handle(ctx, c.client, cr); err != nil && ctx.Err() == nil {
					t.Errorf("the test issuer failed on CertificateRequest %s: %v", cr.Name, err)
				}
			}
			w.Stop()
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return iss
}

// handle moves a request one step: approve it, then sign it.
func (i *issuer) handle(ctx context.Context, c client.Client, cr *cmapi.CertificateRequest) error {
	for _, cond := range cr.Status.Conditions {
		if cond.Type == cmapi.CertificateRequestConditionReady || cond.Type == cmapi.CertificateRequestConditionDenied {
			return nil
		}
	}
	now := metav1.Now()
	approved := false
	for _, cond := range cr.Status.Conditions {
		approved = approved || (cond.Type == cmapi.CertificateRequestConditionApproved && cond.Status == cmmeta.ConditionTrue)
	}
	if !approved {
		cr.Status.Conditions = append(cr.Status.Conditions, cmapi.CertificateRequestCondition{Type: cmapi.CertificateRequestConditionApproved,
			Status: cmmeta.ConditionTrue, Reason: "cert-manager.io", Message: "approved by the test", LastTransitionTime: &now})
		return ignoreConflict(c.Status().Update(ctx, cr))
	}
	template, err := pki.CertificateTemplateFromCertificateRequest(cr)
	if err != nil {
		return fmt.Errorf("cert-manager would refuse the request: %w", err)
	}
	bundle, err := pki.SignCSRTemplate([]*x509.Certificate{i.root}, i.rootKey, template)
	if err != nil {
		return fmt.Errorf("signing: %w", err)
	}
	cr.Status.Certificate, cr.Status.CA = bundle.ChainPEM, bundle.CAPEM
	cr.Status.Conditions = append(cr.Status.Conditions, cmapi.CertificateRequestCondition{Type: cmapi.CertificateRequestConditionReady,
		Status: cmmeta.ConditionTrue, Reason: cmapi.CertificateRequestReasonIssued, Message: "issued by the test", LastTransitionTime: &now})
	if err := c.Status().Update(ctx, cr); err != nil {
		return ignoreConflict(err)
	}
	i.issued.Add(1)
	return nil
}

// ignoreConflict: the next watch event brings the request back.
func ignoreConflict(err error) error {
	if apierrors.IsConflict(err) {
		return nil
	}
	return err
}

// csrPEM is a CSR for CertificateRequests the test creates itself.
func csrPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "retired"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}
