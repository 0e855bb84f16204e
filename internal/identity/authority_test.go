package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"
)

func TestAuthoritySignsVerifiableWorkloadLeaves(t *testing.T) {
	now := time.Now()
	certPEM, keyPEM, err := NewRoot("example.org", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	a, err := NewAuthority(certPEM, keyPEM, nil, certPEM)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	id := SPIFFEID("example.org", "shop", "cart")
	leaf, err := a.SignWorkload(&key.PublicKey, id, 2*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(leaf.Cert.URIs) != 1 || leaf.Cert.URIs[0].String() != id || leaf.Cert.IsCA {
		t.Fatalf("leaf SANs %v, isCA %v", leaf.Cert.URIs, leaf.Cert.IsCA)
	}
	if !leaf.NotAfter.Equal(a.Signer().NotAfter) {
		t.Errorf("leaf outlives its signer: %v > %v", leaf.NotAfter, a.Signer().NotAfter)
	}
	if _, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: a.Roots(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("leaf does not verify as a client: %v", err)
	}
	if block, _ := pem.Decode(leaf.ChainPEM); block == nil || block.Type != "CERTIFICATE" {
		t.Error("chain is not PEM")
	}
	if _, err := a.SignWorkload(&key.PublicKey, "https://x", time.Hour, now); err == nil {
		t.Error("signed a non-SPIFFE ID")
	}
}

func TestAuthorityWithIntermediate(t *testing.T) {
	now := time.Now()
	rootPEM, rootKeyPEM, _ := NewRoot("example.org", time.Hour, now)
	root, err := NewAuthority(rootPEM, rootKeyPEM, nil, rootPEM)
	if err != nil {
		t.Fatal(err)
	}
	interKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	inter, err := root.sign(tmpl, &interKey.PublicKey, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(interKey)
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	a, err := NewAuthority(inter.ChainPEM, keyPEM, nil, rootPEM)
	if err != nil {
		t.Fatal(err)
	}
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf, err := a.SignWorkload(&leafKey.PublicKey, SPIFFEID("example.org", "a", "b"), time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	var certs []*x509.Certificate
	for rest := leaf.ChainPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c, _ := x509.ParseCertificate(b.Bytes)
		certs = append(certs, c)
	}
	if len(certs) != 2 {
		t.Fatalf("chain has %d certificates, want leaf + intermediate", len(certs))
	}
	pool := x509.NewCertPool()
	pool.AddCert(certs[1])
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: a.Roots(), Intermediates: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("leaf does not verify through the intermediate: %v", err)
	}
	otherPEM, _, _ := NewRoot("other.org", time.Hour, now)
	if _, err := NewAuthority(inter.ChainPEM, keyPEM, nil, otherPEM); err == nil {
		t.Error("accepted a signer that does not chain to the bundle")
	}
	if _, err := NewAuthority(inter.ChainPEM, rootKeyPEM, nil, rootPEM); err == nil {
		t.Error("accepted a key that is not the signer's")
	}
}

func TestHolderWakesWaiters(t *testing.T) {
	h := NewHolder()
	ch := h.Changed()
	if h.Current() != nil {
		t.Fatal("new holder has an authority")
	}
	h.Set(&Authority{})
	select {
	case <-ch:
	default:
		t.Fatal("Set did not close Changed")
	}
	if h.Current() == nil {
		t.Fatal("Current is nil after Set")
	}
}

func BenchmarkSignWorkload(b *testing.B) {
	now := time.Now()
	certPEM, keyPEM, _ := NewRoot("example.org", time.Hour, now)
	a, _ := NewAuthority(certPEM, keyPEM, nil, certPEM)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	id := SPIFFEID("example.org", "shop", "cart")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.SignWorkload(&key.PublicKey, id, time.Hour, now); err != nil {
			b.Fatal(err)
		}
	}
}
