package identity_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/meshlift/meshlift/internal/identity"
	"github.com/meshlift/meshlift/internal/identity/peertest"
)

const verifyDomain = "example.org"

// testCA is a certificate and its key, signed by a parent (self-signed when parent is nil).
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func issue(t *testing.T, parent *testCA, tmpl *x509.Certificate) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Minute)
	tmpl.NotAfter = time.Now().Add(time.Hour)
	tmpl.BasicConstraintsValid = true
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key}
}

func caTemplate(name string, uris ...string) *x509.Certificate {
	tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: name}, IsCA: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	for _, u := range uris {
		parsed, _ := url.Parse(u)
		tmpl.URIs = append(tmpl.URIs, parsed)
	}
	return tmpl
}

func leafTemplate(dnsNames []string, uris ...string) *x509.Certificate {
	tmpl := caTemplate("leaf", uris...)
	tmpl.IsCA = false
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	tmpl.DNSNames = dnsNames
	return tmpl
}

// handshake presents chain (leaf first) in a real TLS handshake to a server that verifies it
// with identity.VerifyPeer, as a proxy verifies a client.
func handshake(t *testing.T, roots *x509.CertPool, chain []*testCA) (string, error) {
	t.Helper()
	var der [][]byte
	for _, c := range chain {
		der = append(der, c.cert.Raw)
	}
	return peertest.Handshake(t, roots, verifyDomain, der, chain[0].key)
}

// TestAProxyRefusesCertificatesOfTheSameIssuerThatAreNotForTheMesh plays a cert-manager issuer
// shared with other users: its CA (the pinned trust anchor) signed the mesh's intermediate
// (URI SAN spiffe://example.org), and signs other things for whoever may ask it.
func TestAProxyRefusesCertificatesOfTheSameIssuerThatAreNotForTheMesh(t *testing.T) {
	issuerCA := issue(t, nil, caTemplate("the issuer's CA"))
	mesh := issue(t, issuerCA, caTemplate("meshlift intermediate", "spiffe://"+verifyDomain))
	otherCA := issue(t, issuerCA, caTemplate("another team's CA"))
	otherDomainCA := issue(t, issuerCA, caTemplate("another mesh's CA", "spiffe://other.org"))
	roots := x509.NewCertPool()
	roots.AddCert(issuerCA.cert)
	id := identity.SPIFFEID(verifyDomain, "shop", "cart")

	tests := []struct {
		name  string
		chain func() []*testCA
		want  error
	}{
		{"a workload leaf of the mesh intermediate", func() []*testCA {
			return []*testCA{issue(t, mesh, leafTemplate(nil, id)), mesh}
		}, nil},
		{"a leaf with the same SPIFFE ID signed directly by the issuer", func() []*testCA {
			return []*testCA{issue(t, issuerCA, leafTemplate(nil, id))}
		}, identity.ErrNotMeshSigned},
		{"a leaf with the same SPIFFE ID signed by another CA of the issuer", func() []*testCA {
			return []*testCA{issue(t, otherCA, leafTemplate(nil, id)), otherCA}
		}, identity.ErrNotMeshSigned},
		{"a leaf signed by a CA of the issuer for another trust domain", func() []*testCA {
			return []*testCA{issue(t, otherDomainCA, leafTemplate(nil, id)), otherDomainCA}
		}, identity.ErrNotMeshSigned},
		{"a serving certificate of the issuer for a DNS name", func() []*testCA {
			return []*testCA{issue(t, issuerCA, leafTemplate([]string{"shop.example.org"}))}
		}, identity.ErrNotMeshSigned},
		{"a leaf of the mesh intermediate without a SPIFFE ID", func() []*testCA {
			return []*testCA{issue(t, mesh, leafTemplate([]string{"shop.example.org"})), mesh}
		}, identity.ErrBadPeerIdentity},
		{"a leaf of the mesh intermediate in another trust domain", func() []*testCA {
			return []*testCA{issue(t, mesh, leafTemplate(nil, identity.SPIFFEID("other.org", "shop", "cart"))), mesh}
		}, identity.ErrBadPeerIdentity},
		{"the mesh intermediate itself", func() []*testCA {
			return []*testCA{mesh}
		}, identity.ErrNotMeshSigned}, // the issuer's CA signed it
		{"a leaf of a CA outside the bundle", func() []*testCA {
			stranger := issue(t, nil, caTemplate("stranger", "spiffe://"+verifyDomain))
			return []*testCA{issue(t, stranger, leafTemplate(nil, id)), stranger}
		}, identity.ErrUntrustedPeer},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := handshake(t, roots, tt.chain())
			switch {
			case tt.want == nil && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want == nil && got != id:
				t.Errorf("accepted as %q, want %q", got, id)
			case tt.want != nil && !errors.Is(err, tt.want):
				t.Errorf("handshake error %v, want %v", err, tt.want)
			}
		})
	}
}

// TestTheBuiltInRootIsAMeshCA: the built-in CA's leaves, signed by the root itself, pass.
func TestTheBuiltInRootIsAMeshCA(t *testing.T) {
	now := time.Now()
	certPEM, keyPEM, err := identity.NewRoot(verifyDomain, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	a, err := identity.NewAuthority(certPEM, keyPEM, nil, certPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !identity.IsMeshCA(a.Signer(), verifyDomain) || identity.IsMeshCA(a.Signer(), "other.org") {
		t.Fatal("identity.IsMeshCA does not recognise the built-in root of its own trust domain only")
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	id := identity.SPIFFEID(verifyDomain, "shop", "cart")
	leaf, err := a.SignWorkload(&key.PublicKey, id, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	got, err := identity.VerifyPeer(a.Roots(), []*x509.Certificate{leaf.Cert}, verifyDomain, x509.ExtKeyUsageClientAuth)
	if err != nil || got != id {
		t.Fatalf("identity.VerifyPeer = %q, %v; want %q", got, err, id)
	}
	// An empty chain is refused.
	if _, err := identity.VerifyPeer(a.Roots(), nil, verifyDomain, x509.ExtKeyUsageClientAuth); !errors.Is(err, identity.ErrUntrustedPeer) {
		t.Errorf("an empty chain: %v", err)
	}
}

// FuzzVerifyPeer feeds VerifyPeer chains built from arbitrary DER (what a peer sends in its
// Certificate message) next to a real mesh chain: it must never panic, and never accept a chain
// whose leaf is not one of the mesh's leaves.
func FuzzVerifyPeer(f *testing.F) {
	now := time.Now()
	certPEM, keyPEM, err := identity.NewRoot(verifyDomain, time.Hour, now)
	if err != nil {
		f.Fatal(err)
	}
	a, err := identity.NewAuthority(certPEM, keyPEM, nil, certPEM)
	if err != nil {
		f.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf, err := a.SignWorkload(&key.PublicKey, identity.SPIFFEID(verifyDomain, "shop", "cart"), time.Hour, now)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(leaf.Cert.Raw, a.Signer().Raw)
	f.Add(a.Signer().Raw, leaf.Cert.Raw)
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00}, []byte{})
	f.Fuzz(func(t *testing.T, first, second []byte) {
		var chain []*x509.Certificate
		for _, der := range [][]byte{first, second} {
			if c, err := x509.ParseCertificate(der); err == nil {
				chain = append(chain, c)
			}
		}
		id, err := identity.VerifyPeer(a.Roots(), chain, verifyDomain, x509.ExtKeyUsageClientAuth)
		if err == nil && (len(chain) == 0 || chain[0].CheckSignatureFrom(a.Signer()) != nil || id == "") {
			t.Fatalf("accepted a chain whose leaf the mesh did not sign, as %q", id)
		}
	})
}
