package identity

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"slices"
)

// MaxCSRSize bounds a CSR a client may send.
const MaxCSRSize = 16 << 10

var (
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidExtKeyUsage      = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidServerAuth       = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 1}
	oidClientAuth       = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 2}
)

// Key usage bits (RFC 5280) a workload leaf may ask for.
const (
	keyUsageDigitalSignature = 1 << 0
	keyUsageKeyEncipherment  = 1 << 2
	keyUsageKeyAgreement     = 1 << 4
	allowedKeyUsage          = keyUsageDigitalSignature | keyUsageKeyEncipherment | keyUsageKeyAgreement
)

// ValidateCSR parses a CSR (PEM or DER) sent by the workload whose SPIFFE ID is spiffeID and
// returns it if a leaf may be signed for it: a valid self-signature with a strong key, exactly
// one URI SAN equal to spiffeID and no other SAN, no CA, and only workload key usages. Anything
// else is a *Refusal.
func ValidateCSR(data []byte, spiffeID string) (*x509.CertificateRequest, error) {
	if len(data) == 0 || len(data) > MaxCSRSize {
		return nil, refuse(ReasonMalformedCSR, "the CSR must be 1 to %d bytes, got %d", MaxCSRSize, len(data))
	}
	der := data
	if block, _ := pem.Decode(data); block != nil {
		if block.Type != "CERTIFICATE REQUEST" {
			return nil, refuse(ReasonMalformedCSR, "the PEM block is a %q, want a CERTIFICATE REQUEST", block.Type)
		}
		der = block.Bytes
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, refuse(ReasonMalformedCSR, "the CSR cannot be parsed: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, refuse(ReasonBadSignature, "the CSR's signature does not verify with its own key: %v", err)
	}
	if err := checkKey(csr.PublicKey); err != nil {
		return nil, err
	}
	switch {
	case len(csr.DNSNames) > 0 || len(csr.IPAddresses) > 0 || len(csr.EmailAddresses) > 0:
		return nil, refuse(ReasonForbiddenSAN, "the CSR asks for DNS, IP or email SANs; a workload certificate carries only its SPIFFE ID")
	case len(csr.URIs) != 1 || csr.URIs[0].String() != spiffeID:
		got := make([]string, len(csr.URIs))
		for i, u := range csr.URIs {
			got[i] = u.String()
		}
		return nil, refuse(ReasonSANMismatch, "the CSR asks for URI SANs %v; the caller may have exactly %s", got, spiffeID)
	}
	for _, ext := range csr.Extensions {
		if err := checkRequestedExtension(ext.Id, ext.Value); err != nil {
			return nil, err
		}
	}
	return csr, nil
}

func checkKey(key any) error {
	switch k := key.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return refuse(ReasonWeakKey, "ECDSA keys must use P-256 or P-384")
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return refuse(ReasonWeakKey, "RSA keys must have at least 2048 bits, got %d", k.N.BitLen())
		}
	case ed25519.PublicKey:
	default:
		return refuse(ReasonWeakKey, "unsupported key type %T", key)
	}
	return nil
}

func checkRequestedExtension(id asn1.ObjectIdentifier, value []byte) error {
	switch {
	case id.Equal(oidBasicConstraints):
		var constraints struct {
			IsCA       bool `asn1:"optional"`
			MaxPathLen int  `asn1:"optional,default:-1"`
		}
		if rest, err := asn1.Unmarshal(value, &constraints); err != nil || len(rest) > 0 {
			return refuse(ReasonMalformedCSR, "the requested basic constraints cannot be parsed")
		}
		if constraints.IsCA {
			return refuse(ReasonCARequested, "the CSR asks to be a CA; workloads get leaf certificates only")
		}
	case id.Equal(oidKeyUsage):
		var bits asn1.BitString
		if rest, err := asn1.Unmarshal(value, &bits); err != nil || len(rest) > 0 {
			return refuse(ReasonMalformedCSR, "the requested key usage cannot be parsed")
		}
		var usage int
		for i := range bits.BitLength {
			if bits.At(i) != 0 {
				usage |= 1 << i
			}
		}
		if usage&^allowedKeyUsage != 0 {
			return refuse(ReasonWrongKeyUsage, "the CSR asks for key usages beyond digital signature, key encipherment and key agreement")
		}
	case id.Equal(oidExtKeyUsage):
		var usages []asn1.ObjectIdentifier
		if rest, err := asn1.Unmarshal(value, &usages); err != nil || len(rest) > 0 {
			return refuse(ReasonMalformedCSR, "the requested extended key usage cannot be parsed")
		}
		for _, u := range usages {
			if !slices.ContainsFunc([]asn1.ObjectIdentifier{oidServerAuth, oidClientAuth}, u.Equal) {
				return refuse(ReasonWrongKeyUsage, "the CSR asks for extended key usage %s; only server and client authentication are allowed", u)
			}
		}
	}
	return nil
}
