package certmanager

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/cert-manager/cert-manager/pkg/util/pki"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshlift/meshlift/internal/identity"
	"github.com/meshlift/meshlift/internal/identity/peertest"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

// requestFromIssuer has the issuer sign a CSR for key, as anyone allowed to create a
// CertificateRequest for it can (cert-manager's built-in approver approves them all), and
// returns status.certificate.
func requestFromIssuer(t *testing.T, ns, issuer string, key crypto.Signer, tmpl *x509.CertificateRequest, isCA bool) []*x509.Certificate {
	t.Helper()
	if isCA {
		bc, err := pki.MarshalBasicConstraints(true, nil)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, bc)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	usages := []cmapi.KeyUsage{cmapi.UsageDigitalSignature, cmapi.UsageClientAuth, cmapi.UsageServerAuth}
	if isCA {
		usages = []cmapi.KeyUsage{cmapi.UsageCertSign, cmapi.UsageDigitalSignature}
	}
	cr := &cmapi.CertificateRequest{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "someone-else-"},
		Spec: cmapi.CertificateRequestSpec{
			IssuerRef: cmmeta.IssuerReference{Name: issuer, Kind: cmapi.IssuerKind, Group: "cert-manager.io"},
			Request:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
			IsCA:      isCA,
			Usages:    usages,
			Duration:  &metav1.Duration{Duration: time.Hour},
		},
	}
	if err := env.Client.Create(context.Background(), cr); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, timeout, func(ctx context.Context) (bool, string) {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(cr), cr); err != nil {
			return false, err.Error()
		}
		return len(cr.Status.Certificate) > 0, "CertificateRequest " + cr.Name + " is not issued"
	})
	return decodeCerts(t, cr.Status.Certificate)
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func rawOf(certs ...*x509.Certificate) [][]byte {
	var der [][]byte
	for _, c := range certs {
		der = append(der, c.Raw)
	}
	return der
}

// TestAProxyRefusesACertificateOfTheSameIssuerThatIsNotForTheMesh: the mesh's issuer also signs
// for someone else who may create CertificateRequests for it. What they get (a leaf carrying a
// mesh SPIFFE ID, a CA of their own and the leaves it signs, a DNS serving certificate) chains to
// the pinned trust anchor, yet a proxy's verification (identity.VerifyPeer, over a real TLS
// handshake) refuses all of it and accepts the leaves of the mesh's intermediate.
func TestAProxyRefusesACertificateOfTheSameIssuerThatIsNotForTheMesh(t *testing.T) {
	ns := operatorNamespace(t, "attack")
	root, rootKey := newCA(t, "the issuer's root", nil, nil)
	issuer := &testIssuer{name: "mesh-ca", caCerts: []*x509.Certificate{root}, caKey: rootKey}
	issuer.run(t, ns)
	holder := identity.NewHolder()
	startCA(t, Options{
		Namespace: ns, TrustDomain: trustDomain, Replica: "operator-0",
		IssuerRef: cmmeta.IssuerReference{Name: issuer.name}, TrustAnchor: pinAnchor(t, ns, root),
	}, holder)
	authority := waitForAuthority(t, holder, nil)
	roots := authority.Roots()
	id := identity.SPIFFEID(trustDomain, "shop", "cart")
	uri, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("a leaf of the mesh's intermediate is accepted", func(t *testing.T) {
		key := newKey(t)
		leaf, err := authority.SignWorkload(&key.PublicKey, id, time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		got, err := peertest.Handshake(t, roots, trustDomain, rawOf(decodeCerts(t, leaf.ChainPEM)...), key)
		if err != nil || got != id {
			t.Fatalf("the proxy answered %q, %v; want %s accepted", got, err, id)
		}
	})

	t.Run("a leaf the issuer signed for a mesh SPIFFE ID is refused", func(t *testing.T) {
		key := newKey(t)
		chain := requestFromIssuer(t, ns, issuer.name, key, &x509.CertificateRequest{URIs: []*url.URL{uri}}, false)
		if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Fatalf("the attack is moot: the issuer's leaf does not chain to the trust anchor: %v", err)
		}
		if got, err := peertest.Handshake(t, roots, trustDomain, rawOf(chain...), key); !errors.Is(err, identity.ErrNotMeshSigned) {
			t.Errorf("the proxy answered %q, %v; want a refusal as not signed by a CA of the mesh", got, err)
		}
	})

	t.Run("a leaf of a CA the issuer signed for something else is refused", func(t *testing.T) {
		caKey := newKey(t)
		otherCA := requestFromIssuer(t, ns, issuer.name, caKey, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "another team's CA"}}, true)
		leafKey := newKey(t)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(42), URIs: []*url.URL{uri},
			NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, otherCA[0], &leafKey.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		chain := append([][]byte{der}, rawOf(otherCA...)...)
		if got, err := peertest.Handshake(t, roots, trustDomain, chain, leafKey); !errors.Is(err, identity.ErrNotMeshSigned) {
			t.Errorf("the proxy answered %q, %v; want a refusal as not signed by a CA of the mesh", got, err)
		}
	})

	t.Run("a serving certificate the issuer signed for a DNS name is refused", func(t *testing.T) {
		key := newKey(t)
		chain := requestFromIssuer(t, ns, issuer.name, key, &x509.CertificateRequest{DNSNames: []string{"shop.example.org"}}, false)
		if got, err := peertest.Handshake(t, roots, trustDomain, rawOf(chain...), key); err == nil {
			t.Errorf("the proxy accepted it as %q", got)
		}
	})
}

// TestTheTrustBundleIsThePinnedAnchorAndFollowsIt: the published bundle is the anchor's content,
// not status.ca; an anchor edited to other roots that still hold the intermediate's root is
// published with the intermediate in use, and one that no longer holds it is not.
func TestTheTrustBundleIsThePinnedAnchorAndFollowsIt(t *testing.T) {
	ns := operatorNamespace(t, "anchor")
	root, rootKey := newCA(t, "root", nil, nil)
	next, _ := newCA(t, "next root", nil, nil)
	issuer := &testIssuer{name: "mesh-ca", caCerts: []*x509.Certificate{root}, caKey: rootKey}
	issuer.run(t, ns)
	holder := identity.NewHolder()
	ca := startCA(t, Options{
		Namespace: ns, TrustDomain: trustDomain, IssuerRef: cmmeta.IssuerReference{Name: issuer.name},
		TrustAnchor: pinAnchor(t, ns, root, next),
	}, holder)
	first := waitForAuthority(t, holder, nil)
	if got := decodeCerts(t, first.TrustBundle()); len(got) != 2 || !got[0].Equal(root) || !got[1].Equal(next) {
		t.Fatalf("the bundle holds %d certificates, want the two pinned roots", len(got))
	}
	verifyLeaf(t, first, first.TrustBundle())

	// The next root goes (e.g. trust-manager's Bundle changed): published at once, same signer.
	pinAnchor(t, ns, root)
	second := waitForAuthority(t, holder, first)
	if !second.Signer().Equal(first.Signer()) || len(decodeCerts(t, second.TrustBundle())) != 1 {
		t.Error("the edited anchor was not published with the intermediate in use")
	}

	// An anchor without the intermediate's root would break every leaf: it is not published.
	pinAnchor(t, ns, next)
	time.Sleep(time.Second)
	if holder.Current() != second {
		t.Error("an anchor the intermediate does not chain to was published")
	}
	if err := ca.Ready(nil); err != nil {
		t.Errorf("Ready() = %v: the intermediate in use stays ready", err)
	}
	if n := issuer.issued.Load(); n != 1 {
		t.Errorf("%d intermediates issued, want 1: anchor changes need no new one", n)
	}
}

// TestAMissingTrustAnchorIsReportedAndNothingIsRequested: without the anchor's object the backend
// says what to create and asks cert-manager for nothing; once it exists, the intermediate is
// issued at once.
func TestAMissingTrustAnchorIsReportedAndNothingIsRequested(t *testing.T) {
	ns := operatorNamespace(t, "missing")
	root, rootKey := newCA(t, "root", nil, nil)
	issuer := &testIssuer{name: "mesh-ca", caCerts: []*x509.Certificate{root}, caKey: rootKey}
	issuer.run(t, ns)
	holder := identity.NewHolder()
	ca := startCA(t, Options{
		Namespace: ns, TrustDomain: trustDomain, IssuerRef: cmmeta.IssuerReference{Name: issuer.name},
		TrustAnchor: TrustAnchor{Kind: KindSecret, Name: DefaultTrustAnchorName},
	}, holder)
	waitForReadyError(t, ca, fmt.Sprintf("the trust anchor Secret %s/%s does not exist", ns, DefaultTrustAnchorName))
	if n := len(requestsOf(t, ns)); n != 0 {
		t.Errorf("%d CertificateRequests without a trust anchor, want none", n)
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: DefaultTrustAnchorName},
		Data:       map[string][]byte{DefaultTrustAnchorKey: pemOf(root)},
	}
	if err := env.Client.Create(context.Background(), secret); err != nil {
		t.Fatal(err)
	}
	authority := waitForAuthority(t, holder, nil)
	verifyLeaf(t, authority, pemOf(root))
}
