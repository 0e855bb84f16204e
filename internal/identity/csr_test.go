package identity_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"net"
	"net/url"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshlift/meshlift/internal/identity"
)

const caller = "spiffe://cluster.local/ns/shop/sa/web"

type csrOption func(*x509.CertificateRequest)

func withURIs(uris ...string) csrOption {
	return func(r *x509.CertificateRequest) {
		r.URIs = nil
		for _, u := range uris {
			parsed, _ := url.Parse(u)
			r.URIs = append(r.URIs, parsed)
		}
	}
}

func withExtension(id asn1.ObjectIdentifier, value any) csrOption {
	return func(r *x509.CertificateRequest) {
		der, err := asn1.Marshal(value)
		if err != nil {
			panic(err)
		}
		r.ExtraExtensions = append(r.ExtraExtensions, pkix.Extension{Id: id, Value: der})
	}
}

func newCSR(t testing.TB, key crypto.Signer, opts ...csrOption) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{}
	withURIs(caller)(tmpl)
	for _, opt := range opts {
		opt(tmpl)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func p256(t testing.TB) crypto.Signer {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func TestAValidWorkloadCSRIsAccepted(t *testing.T) {
	csr, err := identity.ValidateCSR(newCSR(t, p256(t),
		withExtension(asn1.ObjectIdentifier{2, 5, 29, 15}, asn1.BitString{Bytes: []byte{0x80}, BitLength: 1}),
		withExtension(asn1.ObjectIdentifier{2, 5, 29, 37}, []asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 1}, {1, 3, 6, 1, 5, 5, 7, 3, 2}}),
	), caller)
	if err != nil {
		t.Fatal(err)
	}
	if csr.URIs[0].String() != caller {
		t.Errorf("URI SAN = %s", csr.URIs[0])
	}
}

func TestTheRefusalMatrix(t *testing.T) {
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tampered := func() []byte {
		block, _ := pem.Decode(newCSR(t, p256(t)))
		block.Bytes[len(block.Bytes)-1] ^= 0xff
		return block.Bytes
	}()
	tests := []struct {
		name   string
		csr    []byte
		reason identity.Reason
		code   codes.Code
	}{
		{"an empty CSR", nil, identity.ReasonMalformedCSR, codes.InvalidArgument},
		{"a huge CSR", make([]byte, identity.MaxCSRSize+1), identity.ReasonMalformedCSR, codes.InvalidArgument},
		{"a PEM block that is not a CSR", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), identity.ReasonMalformedCSR, codes.InvalidArgument},
		{"garbage", []byte("not a csr"), identity.ReasonMalformedCSR, codes.InvalidArgument},
		{"a bad signature", tampered, identity.ReasonBadSignature, codes.InvalidArgument},
		{"another workload's SPIFFE ID", newCSR(t, p256(t), withURIs("spiffe://cluster.local/ns/shop/sa/admin")), identity.ReasonSANMismatch, codes.PermissionDenied},
		{"the caller's ID plus another", newCSR(t, p256(t), withURIs(caller, "spiffe://cluster.local/ns/kube-system/sa/default")), identity.ReasonSANMismatch, codes.PermissionDenied},
		{"no SAN at all", newCSR(t, p256(t), withURIs()), identity.ReasonSANMismatch, codes.PermissionDenied},
		{"a DNS SAN", newCSR(t, p256(t), func(r *x509.CertificateRequest) { r.DNSNames = []string{"web.shop.svc"} }), identity.ReasonForbiddenSAN, codes.InvalidArgument},
		{"an IP SAN", newCSR(t, p256(t), func(r *x509.CertificateRequest) { r.IPAddresses = []net.IP{net.IPv4(10, 0, 0, 1)} }), identity.ReasonForbiddenSAN, codes.InvalidArgument},
		{"an email SAN", newCSR(t, p256(t), func(r *x509.CertificateRequest) { r.EmailAddresses = []string{"a@b.c"} }), identity.ReasonForbiddenSAN, codes.InvalidArgument},
		{"a request to be a CA", newCSR(t, p256(t), withExtension(asn1.ObjectIdentifier{2, 5, 29, 19}, struct{ IsCA bool }{true})), identity.ReasonCARequested, codes.InvalidArgument},
		{"certificate signing key usage", newCSR(t, p256(t), withExtension(asn1.ObjectIdentifier{2, 5, 29, 15}, asn1.BitString{Bytes: []byte{0x04}, BitLength: 6})), identity.ReasonWrongKeyUsage, codes.InvalidArgument},
		{"code signing extended key usage", newCSR(t, p256(t), withExtension(asn1.ObjectIdentifier{2, 5, 29, 37}, []asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 3}})), identity.ReasonWrongKeyUsage, codes.InvalidArgument},
		{"a 1024-bit RSA key", newCSR(t, rsa1024), identity.ReasonWeakKey, codes.InvalidArgument},
		{"a P-224 key", newCSR(t, p224), identity.ReasonWeakKey, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run("refuses "+tt.name, func(t *testing.T) {
			_, err := identity.ValidateCSR(tt.csr, caller)
			var refusal *identity.Refusal
			if !errors.As(err, &refusal) {
				t.Fatalf("ValidateCSR() error = %v, want a *Refusal", err)
			}
			if refusal.Reason != tt.reason {
				t.Errorf("reason = %s (%s), want %s", refusal.Reason, refusal.Message, tt.reason)
			}
			// gRPC sends the refusal with its code.
			if st, ok := status.FromError(err); !ok || st.Code() != tt.code || st.Message() == "" {
				t.Errorf("gRPC status = %v, want code %s with a message", st, tt.code)
			}
		})
	}
}

func TestTokenRefusalsMapToUnauthenticatedAndPermissionDenied(t *testing.T) {
	for reason, want := range map[identity.Reason]codes.Code{
		identity.ReasonWrongAudience: codes.Unauthenticated, identity.ReasonExpiredToken: codes.Unauthenticated,
		identity.ReasonUnboundToken: codes.Unauthenticated, identity.ReasonWrongServiceAccount: codes.PermissionDenied,
		identity.ReasonForeignResource: codes.PermissionDenied,
	} {
		r := &identity.Refusal{Reason: reason, Message: "x"}
		if r.Code() != want {
			t.Errorf("%s maps to %s, want %s", reason, r.Code(), want)
		}
	}
}

func FuzzValidateCSR(f *testing.F) {
	f.Add(newCSR(f, p256(f)))
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"))
	f.Add([]byte{0x30, 0x82, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		csr, err := identity.ValidateCSR(data, caller)
		if err != nil {
			var refusal *identity.Refusal
			if !errors.As(err, &refusal) {
				t.Fatalf("error %v is not a *Refusal", err)
			}
			return
		}
		if len(csr.URIs) != 1 || csr.URIs[0].String() != caller || len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.EmailAddresses) != 0 {
			t.Fatalf("accepted a CSR for %v", csr.URIs)
		}
	})
}
