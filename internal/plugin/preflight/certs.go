package preflight

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"
	"time"
)

// Thresholds of the certificate checks.
const (
	// WebhookCertificateWarnBefore: a webhook serving certificate (or a CA of its chain) that
	// expires sooner is a warning. Both the operator and config/certmanager renew it 30 days
	// ahead, so a certificate this close to expiry means renewal is stuck. Certificates with a
	// lifetime under six times this warn in the last sixth of their lifetime instead.
	WebhookCertificateWarnBefore = 7 * 24 * time.Hour
	// CAWarnBefore: a mesh CA (trust bundle) that expires sooner is a warning.
	CAWarnBefore = 30 * 24 * time.Hour
)

// parseCertificates returns the certificates of a PEM bundle, in order; blocks of another type
// are skipped, a CERTIFICATE block that does not parse is an error.
func parseCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("a certificate that does not parse (%w)", err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("no PEM certificate")
	}
	return certs, nil
}

// sameCertificates reports whether both bundles hold the same certificates, in any order.
func sameCertificates(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for _, c := range a {
		if !slices.ContainsFunc(b, c.Equal) {
			return false
		}
	}
	return true
}

// verifyServing verifies the serving certificate chain (leaf first, then intermediates) the way
// the API server does when it calls a webhook: against caBundle only, for dnsName, at now. It
// returns the verified chain.
func verifyServing(chain []*x509.Certificate, caBundle []*x509.Certificate, dnsName string, now time.Time) ([]*x509.Certificate, error) {
	roots := x509.NewCertPool()
	for _, ca := range caBundle {
		roots.AddCert(ca)
	}
	intermediates := x509.NewCertPool()
	for _, c := range chain[1:] {
		intermediates.AddCert(c)
	}
	chains, err := chain[0].Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: intermediates, DNSName: dnsName, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return nil, err
	}
	return chains[0], nil
}

// firstExpiry is the certificate of chain that expires first.
func firstExpiry(chain []*x509.Certificate) *x509.Certificate {
	return slices.MinFunc(chain, func(a, b *x509.Certificate) int { return a.NotAfter.Compare(b.NotAfter) })
}

// lastExpiry is the certificate of bundle that expires last: a trust bundle is useful as long
// as one of its CAs is.
func lastExpiry(bundle []*x509.Certificate) *x509.Certificate {
	return slices.MaxFunc(bundle, func(a, b *x509.Certificate) int { return a.NotAfter.Compare(b.NotAfter) })
}

// webhookWarnBefore is WebhookCertificateWarnBefore, or a sixth of the lifetime of a shorter
// certificate (a 24h certificate renewed every 16h would otherwise always warn).
func webhookWarnBefore(cert *x509.Certificate) time.Duration {
	return min(WebhookCertificateWarnBefore, cert.NotAfter.Sub(cert.NotBefore)/6)
}

// left says how long until t, coarsely: 364d, 30h, 12m.
func left(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
	case d >= 2*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	default:
		return fmt.Sprintf("%dm", int(max(d, 0)/time.Minute))
	}
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func subject(cert *x509.Certificate) string {
	if cert.Subject.CommonName != "" {
		return cert.Subject.CommonName
	}
	return cert.Subject.String()
}
