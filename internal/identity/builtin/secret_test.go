package builtin

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/meshlift/meshlift/internal/identity"
)

func mustRoot(t *testing.T, trustDomain string, lifetime time.Duration, now time.Time) (certPEM, keyPEM []byte) {
	t.Helper()
	certPEM, keyPEM, err := identity.NewRoot(trustDomain, lifetime, now)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM
}

func TestAuthorityFromSecretData(t *testing.T) {
	now := time.Now()
	rootPEM, rootKeyPEM := mustRoot(t, "example.org", time.Hour, now)
	otherPEM, otherKeyPEM := mustRoot(t, "example.org", time.Hour, now)
	expiredPEM, expiredKeyPEM := mustRoot(t, "example.org", time.Hour, now.Add(-2*time.Hour))
	foreignPEM, foreignKeyPEM := mustRoot(t, "other.org", time.Hour, now)
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	root, err := identity.NewAuthority(rootPEM, rootKeyPEM, nil, rootPEM)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := root.SignWorkload(&leafKey.PublicKey, identity.SPIFFEID("example.org", "a", "b"), time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	leafKeyDER, _ := x509.MarshalECPrivateKey(leafKey)
	leafKeyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: leafKeyDER})

	tests := []struct {
		name       string
		data       map[string][]byte
		wantErr    string
		wantBundle []byte
	}{
		{name: "a root and its key are a CA", data: map[string][]byte{CertKey: rootPEM, KeyKey: rootKeyPEM}, wantBundle: rootPEM},
		{
			name:       "a second root in ca.crt is trusted while the key's own root signs",
			data:       map[string][]byte{CertKey: append(bytes.Clone(otherPEM), rootPEM...), KeyKey: rootKeyPEM},
			wantBundle: append(bytes.Clone(otherPEM), rootPEM...),
		},
		{name: "an empty Secret names both keys", data: nil, wantErr: "neither ca.crt nor ca.key"},
		{name: "a Secret without ca.key says so", data: map[string][]byte{CertKey: rootPEM}, wantErr: "ca.key is missing"},
		{name: "a Secret without ca.crt says so", data: map[string][]byte{KeyKey: rootKeyPEM}, wantErr: "ca.crt is missing"},
		{name: "a key that is not PEM is refused", data: map[string][]byte{CertKey: rootPEM, KeyKey: []byte("secret")}, wantErr: "ca.key is not a PEM private key"},
		{name: "ca.crt without PEM is refused", data: map[string][]byte{CertKey: []byte("not pem"), KeyKey: rootKeyPEM}, wantErr: "ca.crt holds no PEM certificate"},
		{
			name:    "a private key in ca.crt is refused",
			data:    map[string][]byte{CertKey: append(bytes.Clone(rootPEM), rootKeyPEM...), KeyKey: rootKeyPEM},
			wantErr: `ca.crt holds a PEM "PRIVATE KEY" block`,
		},
		{name: "a key of another root is refused", data: map[string][]byte{CertKey: rootPEM, KeyKey: otherKeyPEM}, wantErr: "no certificate of ca.crt belongs to the key in ca.key"},
		{name: "a leaf certificate is not a CA", data: map[string][]byte{CertKey: leaf.ChainPEM, KeyKey: leafKeyPEM}, wantErr: "not a CA"},
		{
			name:    "a root of another trust domain is refused",
			data:    map[string][]byte{CertKey: foreignPEM, KeyKey: foreignKeyPEM},
			wantErr: "is not a CA of trust domain example.org",
		},
		{name: "an expired root is refused", data: map[string][]byte{CertKey: expiredPEM, KeyKey: expiredKeyPEM}, wantErr: "expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			authority, err := authorityFromSecretData(tt.data, "example.org")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(authority.TrustBundle(), tt.wantBundle) {
				t.Error("the trust bundle is not ca.crt")
			}
			if !publicKeysEqual(authority.Signer().PublicKey, root.Signer().PublicKey) {
				t.Error("the signer is not the certificate of ca.key")
			}
		})
	}
}
