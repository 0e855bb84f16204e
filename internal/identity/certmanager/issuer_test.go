package certmanager

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"sync/atomic"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/cert-manager/cert-manager/pkg/util/pki"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// testIssuer plays cert-manager for the CertificateRequests of one namespace that name it: its
// approver (Approved, or Denied) and then its CA issuer, which signs with the key of the CA
// Secret through cert-manager's own pki helpers, as pkg/controller/certificaterequests/ca does,
// and writes status.certificate, status.ca and Ready through the status subresource.
type testIssuer struct {
	name string
	// caCerts is the issuer's CA Secret: the signing CA first, then the chain above it.
	caCerts []*x509.Certificate
	caKey   crypto.Signer
	// deny makes the approver deny every request; omitCA leaves status.ca empty, as issuers
	// that cannot tell their CA do.
	deny   bool
	omitCA bool

	// answered counts the requests approved or denied, issued those signed.
	answered atomic.Int32
	issued   atomic.Int32
}

// newCA returns a CA certificate and key: self-signed when parent is nil, else signed by
// parent's key.
func newCA(t *testing.T, name string, parent *x509.Certificate, parentKey crypto.Signer) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	_, cert, err := pki.SignCertificate(tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// run handles the issuer's requests in ns until the test ends.
func (i *testIssuer) run(t *testing.T, ns string) {
	t.Helper()
	watcher, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			w, err := watcher.Watch(ctx, &cmapi.CertificateRequestList{}, client.InNamespace(ns))
			if err != nil {
				if ctx.Err() == nil {
					t.Errorf("the test issuer cannot watch CertificateRequests: %v", err)
				}
				return
			}
			for event := range w.ResultChan() {
				cr, ok := event.Object.(*cmapi.CertificateRequest)
				if !ok || (event.Type != watch.Added && event.Type != watch.Modified) || cr.Spec.IssuerRef.Name != i.name {
					continue
				}
				if err := i.handle(ctx, cr); err != nil && ctx.Err() == nil {
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
}

// handle moves a request one step: approve (or deny) it, then sign it.
func (i *testIssuer) handle(ctx context.Context, cr *cmapi.CertificateRequest) error {
	if condition(cr, cmapi.CertificateRequestConditionDenied) != nil || condition(cr, cmapi.CertificateRequestConditionReady) != nil {
		return nil
	}
	now := metav1.Now()
	if condition(cr, cmapi.CertificateRequestConditionApproved) == nil {
		if i.deny {
			setCondition(cr, cmapi.CertificateRequestConditionDenied, cmmeta.ConditionTrue, "test.meshlift.io", "denied by the test approver")
			setCondition(cr, cmapi.CertificateRequestConditionReady, cmmeta.ConditionFalse, cmapi.CertificateRequestReasonDenied, "The CertificateRequest was denied by an approval controller")
			cr.Status.FailureTime = &now
		} else {
			setCondition(cr, cmapi.CertificateRequestConditionApproved, cmmeta.ConditionTrue, "cert-manager.io", "Certificate request has been approved by cert-manager.io")
		}
		if err := env.Client.Status().Update(ctx, cr); err != nil {
			return ignoreConflict(err)
		}
		i.answered.Add(1)
		return nil
	}
	tmpl, err := pki.CertificateTemplateFromCertificateRequest(cr)
	if err != nil {
		setCondition(cr, cmapi.CertificateRequestConditionReady, cmmeta.ConditionFalse, cmapi.CertificateRequestReasonFailed, "Error generating certificate template: "+err.Error())
		cr.Status.FailureTime = &now
		return errors.Join(fmt.Errorf("cert-manager would refuse the request: %w", err), ignoreConflict(env.Client.Status().Update(ctx, cr)))
	}
	bundle, err := pki.SignCSRTemplate(i.caCerts, i.caKey, tmpl)
	if err != nil {
		return fmt.Errorf("signing: %w", err)
	}
	cr.Status.Certificate = bundle.ChainPEM
	if !i.omitCA {
		cr.Status.CA = bundle.CAPEM
	}
	setCondition(cr, cmapi.CertificateRequestConditionReady, cmmeta.ConditionTrue, cmapi.CertificateRequestReasonIssued, "Certificate fetched from issuer successfully")
	if err := env.Client.Status().Update(ctx, cr); err != nil {
		return ignoreConflict(err)
	}
	i.issued.Add(1)
	return nil
}

// ignoreConflict drops a conflict: the watch brings the newer version, which is handled again.
func ignoreConflict(err error) error {
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func setCondition(cr *cmapi.CertificateRequest, conditionType cmapi.CertificateRequestConditionType, status cmmeta.ConditionStatus, reason, message string) {
	now := metav1.Now()
	cr.Status.Conditions = append(cr.Status.Conditions, cmapi.CertificateRequestCondition{
		Type: conditionType, Status: status, Reason: reason, Message: message, LastTransitionTime: &now,
	})
}
