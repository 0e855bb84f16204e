// Package pki is the pure part of the operator's webhook serving certificates: it issues a
// self-signed CA and a serving certificate for the webhook Service, decides when a stored pair
// must be renewed (and why), and encodes both as the data of a Secret. It never talks to the API
// server; internal/webhookcert stores what it decides.
package pki

import (
	"bytes"
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
	"strconv"
	"time"
)

// Lifetimes and how long before expiry a certificate is replaced.
const (
	CALifetime         = 10 * 365 * 24 * time.Hour
	ServingLifetime    = 365 * 24 * time.Hour
	CARenewBefore      = 90 * 24 * time.Hour
	ServingRenewBefore = 30 * 24 * time.Hour

	// backdate makes a new certificate valid for replicas and an API server whose clocks run a
	// little behind the issuer's.
	backdate = time.Hour
)

// Secret data keys. tls.crt and tls.key are what a kubernetes.io/tls Secret requires; ca.crt is
// what the API server must trust (the caBundle); ca.key lets any replica sign the next serving
// certificate.
const (
	TLSCertKey = "tls.crt"
	TLSKeyKey  = "tls.key"
	CACertKey  = "ca.crt"
	CAKeyKey   = "ca.key"
)

// Service is the Service the API server reaches the webhooks through.
type Service struct {
	Namespace string
	Name      string
}

// DNSNames are the names the serving certificate must be valid for.
func (s Service) DNSNames() []string {
	return []string{
		s.Name,
		s.Name + "." + s.Namespace,
		s.ServerName(),
		s.ServerName() + ".cluster.local",
	}
}

// ServerName is the name the API server verifies when it calls a webhook through the Service.
func (s Service) ServerName() string {
	return s.Name + "." + s.Namespace + ".svc"
}

// Bundle is the PEM-encoded content of the webhook certificate Secret.
type Bundle struct {
	// Cert and Key are the serving certificate and its private key.
	Cert []byte
	Key  []byte
	// CABundle is the current CA certificate followed by the CAs it replaced that have not expired
	// yet: the caBundle of the webhook configurations. Replicas that still serve a certificate
	// signed by a replaced CA stay trusted while they pick up the new one.
	CABundle []byte
	// CAKey is the private key of the current CA (the first certificate of CABundle).
	CAKey []byte
}

// FromSecretData decodes the data of a Secret; missing keys leave fields empty.
func FromSecretData(data map[string][]byte) Bundle {
	return Bundle{
		Cert:     data[TLSCertKey],
		Key:      data[TLSKeyKey],
		CABundle: data[CACertKey],
		CAKey:    data[CAKeyKey],
	}
}

// SecretData encodes the bundle as the data of a Secret.
func (b Bundle) SecretData() map[string][]byte {
	return map[string][]byte{
		TLSCertKey: b.Cert,
		TLSKeyKey:  b.Key,
		CACertKey:  b.CABundle,
		CAKeyKey:   b.CAKey,
	}
}

// Equal reports whether both bundles hold the same bytes.
func (b Bundle) Equal(other Bundle) bool {
	return bytes.Equal(b.Cert, other.Cert) && bytes.Equal(b.Key, other.Key) &&
		bytes.Equal(b.CABundle, other.CABundle) && bytes.Equal(b.CAKey, other.CAKey)
}

// Reason says why a certificate must be replaced.
type Reason string

// Reasons to replace the CA.
const (
	ReasonCAMissing     Reason = "CAMissing"
	ReasonCAKeyMismatch Reason = "CAKeyMismatch"
	ReasonNotACA        Reason = "NotACA"
	ReasonCAExpiring    Reason = "CAExpiring"
)

// Reasons to replace the serving certificate.
const (
	ReasonCARotated              Reason = "CARotated"
	ReasonCertificateMissing     Reason = "CertificateMissing"
	ReasonCertificateKeyMismatch Reason = "CertificateKeyMismatch"
	ReasonNotSignedByCA          Reason = "NotSignedByCA"
	ReasonDNSNameMissing         Reason = "DNSNameMissing"
	ReasonCertificateExpiring    Reason = "CertificateExpiring"
)

// Decision is what must change in a stored bundle.
type Decision struct {
	// CA is why the CA must be replaced; empty when it stays.
	CA Reason
	// Serving is why the serving certificate must be reissued; empty when it stays. It is
	// ReasonCARotated whenever the CA is replaced.
	Serving Reason
	// StaleCABundle is set when the CA stays but the bundle is not exactly the current CA followed
	// by the replaced CAs that are still valid (one of them expired, or something else is in it).
	StaleCABundle bool
}

// NeedsUpdate reports whether the bundle must be rewritten.
func (d Decision) NeedsUpdate() bool {
	return d.CA != "" || d.Serving != "" || d.StaleCABundle
}

// Check decides what must change in b for the webhooks of svc to be served at now.
func Check(b Bundle, svc Service, now time.Time) Decision {
	ca, _, caReason := currentCA(b, now)
	if caReason != "" {
		return Decision{CA: caReason, Serving: ReasonCARotated}
	}
	return Decision{
		Serving:       checkServing(b, ca, svc, now),
		StaleCABundle: !bytes.Equal(b.CABundle, encodeCertificates(trustedCAs(ca, parseCertificates(b.CABundle), now))),
	}
}

// Issue creates a new CA and a serving certificate for svc.
func Issue(svc Service, now time.Time) (Bundle, error) {
	b, _, err := Renew(Bundle{}, svc, now)
	return b, err
}

// Renew returns b with what Check asks for replaced, and the decision; b itself when nothing
// must change. A replaced CA stays in the CA bundle until it expires.
func Renew(b Bundle, svc Service, now time.Time) (Bundle, Decision, error) {
	decision := Check(b, svc, now)
	if !decision.NeedsUpdate() {
		return b, decision, nil
	}
	renewed := b
	ca, caKey, _ := currentCA(b, now)
	if decision.CA != "" {
		var err error
		ca, caKey, err = newCA(now)
		if err != nil {
			return Bundle{}, decision, err
		}
		if renewed.CAKey, err = encodePrivateKey(caKey); err != nil {
			return Bundle{}, decision, err
		}
	}
	renewed.CABundle = encodeCertificates(trustedCAs(ca, parseCertificates(b.CABundle), now))
	if decision.Serving != "" {
		var err error
		if renewed.Cert, renewed.Key, err = newServingCertificate(ca, caKey, svc, now); err != nil {
			return Bundle{}, decision, err
		}
	}
	return renewed, decision, nil
}

// NextRenewal is when Check will next ask for a change if nothing else happens: the earliest of
// the CA's and the serving certificate's renewal times and the expiry of a replaced CA. It is
// now for a bundle that must change already.
func NextRenewal(b Bundle, svc Service, now time.Time) time.Time {
	if Check(b, svc, now).NeedsUpdate() {
		return now
	}
	ca, _, _ := currentCA(b, now)
	cert, _ := parseCertificate(b.Cert)
	next := ca.NotAfter.Add(-CARenewBefore)
	if at := cert.NotAfter.Add(-ServingRenewBefore); at.Before(next) {
		next = at
	}
	for _, replaced := range trustedCAs(ca, parseCertificates(b.CABundle), now)[1:] {
		if replaced.NotAfter.Before(next) {
			next = replaced.NotAfter
		}
	}
	return next
}

// currentCA finds the CA certificate of the bundle that matches the CA key and says why it
// cannot be used to sign serving certificates.
func currentCA(b Bundle, now time.Time) (*x509.Certificate, crypto.Signer, Reason) {
	certs := parseCertificates(b.CABundle)
	key, err := parsePrivateKey(b.CAKey)
	if len(certs) == 0 || err != nil {
		return nil, nil, ReasonCAMissing
	}
	var ca *x509.Certificate
	for _, cert := range certs {
		if publicKeysEqual(cert.PublicKey, key.Public()) {
			ca = cert
			break
		}
	}
	switch {
	case ca == nil:
		return nil, nil, ReasonCAKeyMismatch
	case !isCA(ca):
		return nil, nil, ReasonNotACA
	case !now.Before(ca.NotAfter.Add(-CARenewBefore)):
		return nil, nil, ReasonCAExpiring
	}
	return ca, key, ""
}

// checkServing says why the serving certificate of b cannot serve svc at now.
func checkServing(b Bundle, ca *x509.Certificate, svc Service, now time.Time) Reason {
	cert, err := parseCertificate(b.Cert)
	if err != nil {
		return ReasonCertificateMissing
	}
	key, err := parsePrivateKey(b.Key)
	if err != nil {
		return ReasonCertificateMissing
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return ReasonCertificateKeyMismatch
	}
	if err := cert.CheckSignatureFrom(ca); err != nil {
		return ReasonNotSignedByCA
	}
	for _, name := range svc.DNSNames() {
		if cert.VerifyHostname(name) != nil {
			return ReasonDNSNameMissing
		}
	}
	// Only the end of the validity is checked: a replica whose clock runs behind must not see a
	// fresh certificate as "not valid yet" and replace it, or replicas would fight.
	if !now.Before(cert.NotAfter.Add(-ServingRenewBefore)) {
		return ReasonCertificateExpiring
	}
	return ""
}

// trustedCAs is the CA bundle: ca first, then the other CA certificates of candidates that have
// not expired, each once.
func trustedCAs(ca *x509.Certificate, candidates []*x509.Certificate, now time.Time) []*x509.Certificate {
	trusted := []*x509.Certificate{ca}
	for _, cert := range candidates {
		if !isCA(cert) || !now.Before(cert.NotAfter) || containsCertificate(trusted, cert) {
			continue
		}
		trusted = append(trusted, cert)
	}
	return trusted
}

func containsCertificate(certs []*x509.Certificate, cert *x509.Certificate) bool {
	for _, c := range certs {
		if c.Equal(cert) {
			return true
		}
	}
	return false
}

func isCA(cert *x509.Certificate) bool {
	return cert.BasicConstraintsValid && cert.IsCA && cert.KeyUsage&x509.KeyUsageCertSign != 0
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	key, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && key.Equal(b)
}

func newCA(now time.Time) (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to generate the CA key: %w", err)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, nil, err
	}
	template := &x509.Certificate{
		SerialNumber: serial,
		// The issue time in the name tells a CA from the one it replaced in a bundle.
		Subject:               pkix.Name{CommonName: "meshlift-webhook-ca@" + strconv.FormatInt(now.Unix(), 10)},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(CALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to create the CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to parse the new CA certificate: %w", err)
	}
	return cert, key, nil
}

func newServingCertificate(ca *x509.Certificate, caKey crypto.Signer, svc Service, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to generate the serving key: %w", err)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, nil, err
	}
	notAfter := now.Add(ServingLifetime)
	if ca.NotAfter.Before(notAfter) {
		notAfter = ca.NotAfter
	}
	template := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: svc.ServerName()},
		DNSNames:     svc.DNSNames(),
		NotBefore:    now.Add(-backdate),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, template, ca, key.Public(), caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to sign the serving certificate: %w", err)
	}
	keyPEM, err = encodePrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

func serialNumber() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("failed to generate a serial number: %w", err)
	}
	return serial, nil
}

func encodePrivateKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("failed to encode the private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func encodeCertificates(certs []*x509.Certificate) []byte {
	var out []byte
	for _, cert := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})...)
	}
	return out
}

// parseCertificates returns the certificates of a PEM bundle that parse, in order.
func parseCertificates(data []byte) []*x509.Certificate {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return certs
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		if cert, err := x509.ParseCertificate(block.Bytes); err == nil {
			certs = append(certs, cert)
		}
	}
}

// parseCertificate returns the first certificate of a PEM bundle.
func parseCertificate(data []byte) (*x509.Certificate, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no PEM certificate found")
		}
		if block.Type == "CERTIFICATE" {
			return x509.ParseCertificate(block.Bytes)
		}
	}
}

// parsePrivateKey reads the first private key of a PEM file, in PKCS#8, SEC 1 or PKCS#1 form.
func parsePrivateKey(data []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no PEM private key found")
		}
		var key any
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("failed to parse the %s: %w", block.Type, err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("a %T cannot sign", key)
		}
		return signer, nil
	}
}
