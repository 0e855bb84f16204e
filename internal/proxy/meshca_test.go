package proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/meshlift/meshlift/internal/identity"
	"github.com/meshlift/meshlift/internal/proxyconfig"
)

// upstreamCA is an issuer outside the mesh (a cert-manager CA issuer, say) that signs the mesh's
// intermediate and may sign other certificates for other users.
type upstreamCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newUpstreamCA(tb testing.TB) upstreamCA {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "company issuer"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return upstreamCA{cert: cert, key: key}
}

// sign issues a certificate of tmpl for pub, signed by the upstream CA.
func (u upstreamCA) sign(tb testing.TB, tmpl *x509.Certificate, pub any) []byte {
	tb.Helper()
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Minute), time.Now().Add(time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, u.cert, pub, u.key)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func (u upstreamCA) pem() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: u.cert.Raw})
}

// TestAProxyRefusesALeafTheMeshsIssuerSignedForSomethingElse is the cert-manager backend's attack:
// the mesh's intermediate (URI SAN spiffe://<trust domain>) is signed by an upstream issuer, whose
// CA is the trust anchor; anyone else that issuer signs for gets a leaf that chains to the anchor.
// A STRICT proxy accepts a client whose leaf the mesh's intermediate signed, and refuses one with
// the same SPIFFE ID that the issuer signed directly, or that another CA of the same issuer
// signed: neither is a mesh workload.
func TestAProxyRefusesALeafTheMeshsIssuerSignedForSomethingElse(t *testing.T) {
	upstream := newUpstreamCA(t)
	caTemplate := func(uri string) *x509.Certificate {
		tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: "ca"}, IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
		if uri != "" {
			u, err := url.Parse(uri)
			if err != nil {
				t.Fatal(err)
			}
			tmpl.URIs = []*url.URL{u}
		}
		return tmpl
	}
	authorityUnder := func(uri string) *identity.Authority {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		certPEM := upstream.sign(t, caTemplate(uri), &key.PublicKey)
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		authority, err := identity.NewAuthority(certPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), certPEM, upstream.pem())
		if err != nil {
			t.Fatal(err)
		}
		return authority
	}
	mesh := &testPKI{tb: t, trustDomain: testTrustDomain, authority: authorityUnder("spiffe://" + testTrustDomain)}
	otherTeam := &testPKI{tb: t, trustDomain: testTrustDomain, authority: authorityUnder("")}
	f := &fixture{tb: t, pki: mesh}
	appPort := startHTTPApp(t, echoApp("app"), false)
	p, addr := f.serverProxy("STRICT", Options{}, proxyconfig.Port{Name: "http", Port: appPort, Protocol: "HTTP"})

	call := func(leaf testLeaf) error {
		config := clientTLS(t, &leaf, upstream.pem(), sni("http"), mesh.id(serverService))
		roots := x509.NewCertPool()
		roots.AddCert(upstream.cert)
		config.VerifyConnection = func(cs tls.ConnectionState) error { // the server's chain has the intermediate
			_, err := identity.VerifyPeer(roots, cs.PeerCertificates, testTrustDomain, x509.ExtKeyUsageServerAuth)
			return err
		}
		res, err := mtlsClient(config, false).Get("https://" + addr + "/hello")
		if err == nil {
			_ = res.Body.Close()
		}
		return err
	}
	if err := call(mesh.leaf(mesh.id("client"))); err != nil {
		t.Fatalf("a client whose leaf the mesh's intermediate signed was refused: %v", err)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := url.Parse(mesh.id("client"))
	if err != nil {
		t.Fatal(err)
	}
	direct := upstream.sign(t, &x509.Certificate{Subject: pkix.Name{CommonName: "client"}, URIs: []*url.URL{id},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}, &key.PublicKey)
	block, _ := pem.Decode(direct)
	directCert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	refused := p.metrics.handshakeFailures.WithLabelValues("inbound", "untrusted_certificate")
	for i, attack := range []struct {
		name string
		leaf testLeaf
	}{
		{"a leaf with a mesh SPIFFE ID signed by the issuer directly", testLeaf{chainPEM: direct, key: key, cert: directCert}},
		{"a leaf with a mesh SPIFFE ID signed by another CA of the issuer", otherTeam.leaf(mesh.id("client"))},
	} {
		if err := call(attack.leaf); err == nil {
			t.Errorf("%s was accepted", attack.name)
		}
		eventually(t, "the refusal is counted as an untrusted certificate", func() bool { return counter(refused) == float64(i+1) })
	}
}
