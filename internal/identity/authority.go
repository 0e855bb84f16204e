package identity

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"sync"
	"time"
)

// Clock skew the leaves tolerate: NotBefore is set this far in the past.
const backdate = time.Minute

// Authority signs workload leaves with a CA key held in memory. The signer is either the root
// itself (built-in CA) or an intermediate whose chain leads to a root in the trust bundle
// (cert-manager). An Authority never changes; a backend that rotates publishes a new one
// through a Holder.
type Authority struct {
	signer    *x509.Certificate
	key       crypto.Signer
	chainDER  [][]byte // the signer and the intermediates above it, not the root
	bundlePEM []byte
	roots     *x509.CertPool
}

// Leaf is a signed workload certificate.
type Leaf struct {
	// ChainPEM is the leaf followed by the intermediates, as a TLS peer presents it.
	ChainPEM  []byte
	Cert      *x509.Certificate
	NotBefore time.Time
	NotAfter  time.Time
}

// NewAuthority builds an Authority from a signing certificate and key (PEM), the intermediates
// between the signer and a root (PEM, may be empty; the signer itself is added when it is not a
// root) and the trust bundle (PEM roots). The signer must be a CA that chains to the bundle.
func NewAuthority(signerPEM, keyPEM, intermediatesPEM, bundlePEM []byte) (*Authority, error) {
	signer, err := parseCert(signerPEM)
	if err != nil {
		return nil, fmt.Errorf("signing certificate: %w", err)
	}
	if !signer.IsCA || signer.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("signing certificate is not a CA allowed to sign certificates")
	}
	key, err := ParsePrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	if !publicKeysEqual(key.Public(), signer.PublicKey) {
		return nil, errors.New("signing key does not belong to the signing certificate")
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundlePEM) {
		return nil, errors.New("trust bundle holds no PEM certificate")
	}
	a := &Authority{signer: signer, key: key, bundlePEM: bytes.Clone(bundlePEM), roots: roots}
	intermediates := x509.NewCertPool()
	if !isSelfSigned(signer) {
		a.chainDER = append(a.chainDER, signer.Raw)
	}
	for rest := intermediatesPEM; len(rest) > 0; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("intermediate certificate: %w", err)
		}
		if bytes.Equal(c.Raw, signer.Raw) || isSelfSigned(c) {
			continue
		}
		intermediates.AddCert(c)
		a.chainDER = append(a.chainDER, c.Raw)
	}
	if _, err := signer.Verify(x509.VerifyOptions{Roots: roots, Intermediates: intermediates,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("signing certificate does not chain to the trust bundle: %w", err)
	}
	return a, nil
}

// TrustBundle is the PEM bundle of roots peers verify leaves with.
func (a *Authority) TrustBundle() []byte { return a.bundlePEM }

// Roots is the trust bundle as a pool.
func (a *Authority) Roots() *x509.CertPool { return a.roots }

// Signer is the certificate that signs leaves.
func (a *Authority) Signer() *x509.Certificate { return a.signer }

// SignWorkload issues a leaf for spiffeID (the only SAN) with the given public key, valid for
// lifetime from now and never beyond the signer. Usable for both TLS client and server auth.
func (a *Authority) SignWorkload(pub crypto.PublicKey, spiffeID string, lifetime time.Duration, now time.Time) (*Leaf, error) {
	uri, err := ParseSPIFFEID(spiffeID)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		URIs:                  []*url.URL{uri},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	return a.sign(tmpl, pub, lifetime, now)
}

// SignServing issues a TLS server certificate for names, DNS names or IP addresses (the control
// plane's own serving certificate, so proxies verify it with the same trust bundle).
func (a *Authority) SignServing(pub crypto.PublicKey, names []string, lifetime time.Duration, now time.Time) (*Leaf, error) {
	if len(names) == 0 {
		return nil, errors.New("a serving certificate needs at least one name")
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: names[0]},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, name := range names {
		if ip := net.ParseIP(name); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, name)
		}
	}
	return a.sign(tmpl, pub, lifetime, now)
}

func (a *Authority) sign(tmpl *x509.Certificate, pub crypto.PublicKey, lifetime time.Duration, now time.Time) (*Leaf, error) {
	if lifetime <= 0 {
		return nil, errors.New("certificate lifetime must be positive")
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = now.Add(-backdate)
	tmpl.NotAfter = now.Add(lifetime)
	if tmpl.NotAfter.After(a.signer.NotAfter) {
		tmpl.NotAfter = a.signer.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.signer, pub, a.key)
	if err != nil {
		return nil, fmt.Errorf("signing certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing the certificate just signed: %w", err)
	}
	chain := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	for _, c := range a.chainDER {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c})...)
	}
	return &Leaf{ChainPEM: chain, Cert: cert, NotBefore: cert.NotBefore, NotAfter: cert.NotAfter}, nil
}

// NewRoot creates a self-signed ECDSA P-256 root CA for the trust domain, valid for lifetime.
// It returns the certificate and the PKCS#8 key, both PEM.
func NewRoot(trustDomain string, lifetime time.Duration, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	uri := &url.URL{Scheme: "spiffe", Host: trustDomain}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"meshlift"}, CommonName: "meshlift root CA " + trustDomain},
		URIs:                  []*url.URL{uri},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(lifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("self-signing CA certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding CA key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

// ParsePrivateKey reads a PEM private key in PKCS#8, SEC1 (EC) or PKCS#1 (RSA) form.
func ParsePrivateKey(keyPEM []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil, errors.New("no PEM block")
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
		return nil, fmt.Errorf("PEM block %q is not a private key", block.Type)
	}
	if err != nil {
		return nil, err
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key of type %T cannot sign", key)
	}
	return signer, nil
}

func parseCert(certPEM []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	return x509.ParseCertificate(block.Bytes)
}

func isSelfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ae, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ae.Equal(b)
}

func randomSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generating serial number: %w", err)
	}
	return serial, nil
}

// BundleFingerprint identifies a trust bundle (for logs, metrics and version strings).
func BundleFingerprint(bundlePEM []byte) string {
	sum := sha256.Sum256(bundlePEM)
	return fmt.Sprintf("%x", sum[:8])
}

// Holder publishes the current Authority of a CA backend. Readers take Current and wait on
// Changed for the next one; backends call Set when they create, load, renew or rotate.
type Holder struct {
	mu      sync.Mutex
	current *Authority
	changed chan struct{}
}

// NewHolder returns an empty Holder.
func NewHolder() *Holder { return &Holder{changed: make(chan struct{})} }

// Current is the Authority in use, nil until the backend has one.
func (h *Holder) Current() *Authority {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.current
}

// Changed returns a channel closed by the next Set.
func (h *Holder) Changed() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.changed
}

// Set publishes a new Authority and wakes every waiter.
func (h *Holder) Set(a *Authority) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.current = a
	close(h.changed)
	h.changed = make(chan struct{})
}
