package pki_test

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"testing"
	"time"

	"github.com/meshlift/meshlift/internal/webhookcert/pki"
)

var (
	t0  = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	svc = pki.Service{Namespace: "meshlift-system", Name: "meshlift-webhook-service"}
	day = 24 * time.Hour
)

func issue(t *testing.T, at time.Time) pki.Bundle {
	t.Helper()
	b, err := pki.Issue(svc, at)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func concat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// verify checks the serving certificate of b against its CA bundle for every DNS name of svc,
// the way the API server's TLS client does.
func verify(b pki.Bundle, s pki.Service, now time.Time) error {
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(b.CABundle) {
		return fmt.Errorf("the CA bundle holds no certificate")
	}
	block, _ := pem.Decode(b.Cert)
	if block == nil {
		return fmt.Errorf("tls.crt holds no PEM block")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return err
	}
	for _, name := range s.DNSNames() {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, CurrentTime: now}); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

func certificates(t *testing.T, data []byte) []*x509.Certificate {
	t.Helper()
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return certs
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, cert)
	}
}

func TestServiceDNSNames(t *testing.T) {
	want := []string{
		"meshlift-webhook-service",
		"meshlift-webhook-service.meshlift-system",
		"meshlift-webhook-service.meshlift-system.svc",
		"meshlift-webhook-service.meshlift-system.svc.cluster.local",
	}
	if got := svc.DNSNames(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("DNSNames() = %v, want %v", got, want)
	}
	if got := svc.ServerName(); got != want[2] {
		t.Errorf("ServerName() = %q, want %q", got, want[2])
	}
}

func TestIssue(t *testing.T) {
	b := issue(t, t0)
	if err := verify(b, svc, t0); err != nil {
		t.Fatalf("the serving certificate does not verify against the CA bundle: %v", err)
	}
	cas := certificates(t, b.CABundle)
	if len(cas) != 1 {
		t.Fatalf("the CA bundle holds %d certificates, want 1", len(cas))
	}
	serving := certificates(t, b.Cert)[0]
	tests := []struct {
		name string
		got  any
		want any
	}{
		{"the CA is an ECDSA P-256 key", cas[0].PublicKeyAlgorithm, x509.ECDSA},
		{"the CA lives 10 years", cas[0].NotAfter, t0.Add(pki.CALifetime)},
		{"the CA may only sign leaf certificates", cas[0].MaxPathLen == 0 && cas[0].MaxPathLenZero, true},
		{"the serving certificate is an ECDSA P-256 key", serving.PublicKeyAlgorithm, x509.ECDSA},
		{"the serving certificate lives 1 year", serving.NotAfter, t0.Add(pki.ServingLifetime)},
		{"the serving certificate is valid an hour before it was issued, for clocks that run behind", serving.NotBefore, t0.Add(-time.Hour)},
		{"the serving certificate is for the Service's DNS names", fmt.Sprint(serving.DNSNames), fmt.Sprint(svc.DNSNames())},
		{"the serving certificate is only for servers", fmt.Sprint(serving.ExtKeyUsage), fmt.Sprint([]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth})},
		{"the serving certificate is not a CA", serving.IsCA, false},
		{"a fresh bundle needs nothing", pki.Check(b, svc, t0), pki.Decision{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if fmt.Sprint(tt.got) != fmt.Sprint(tt.want) {
				t.Errorf("got %v, want %v", tt.got, tt.want)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	valid := issue(t, t0)
	other := issue(t, t0)
	// A CA that expired a year before t0.
	expired := issue(t, t0.Add(-pki.CALifetime-365*day))

	with := func(change func(*pki.Bundle)) pki.Bundle {
		b := valid
		change(&b)
		return b
	}
	tests := []struct {
		name   string
		bundle pki.Bundle
		svc    pki.Service
		now    time.Time
		want   pki.Decision
	}{
		{
			name:   "a valid bundle needs nothing",
			bundle: valid,
			want:   pki.Decision{},
		},
		{
			name:   "an empty Secret needs a CA and a serving certificate",
			bundle: pki.Bundle{},
			want:   pki.Decision{CA: pki.ReasonCAMissing, Serving: pki.ReasonCARotated},
		},
		{
			name: "an unparseable CA certificate replaces the CA",
			bundle: with(func(b *pki.Bundle) {
				b.CABundle = []byte("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
			}),
			want: pki.Decision{CA: pki.ReasonCAMissing, Serving: pki.ReasonCARotated},
		},
		{
			name:   "a missing CA key replaces the CA",
			bundle: with(func(b *pki.Bundle) { b.CAKey = nil }),
			want:   pki.Decision{CA: pki.ReasonCAMissing, Serving: pki.ReasonCARotated},
		},
		{
			name:   "a CA key that matches no CA certificate replaces the CA",
			bundle: with(func(b *pki.Bundle) { b.CAKey = other.CAKey }),
			want:   pki.Decision{CA: pki.ReasonCAKeyMismatch, Serving: pki.ReasonCARotated},
		},
		{
			name:   "a CA certificate that cannot sign certificates replaces the CA",
			bundle: with(func(b *pki.Bundle) { b.CABundle, b.CAKey = valid.Cert, valid.Key }),
			want:   pki.Decision{CA: pki.ReasonNotACA, Serving: pki.ReasonCARotated},
		},
		{
			name:   "a CA expiring within 90 days is replaced",
			bundle: valid,
			now:    t0.Add(pki.CALifetime - 89*day),
			want:   pki.Decision{CA: pki.ReasonCAExpiring, Serving: pki.ReasonCARotated},
		},
		{
			name:   "a CA expiring in exactly 90 days is replaced",
			bundle: valid,
			now:    t0.Add(pki.CALifetime - pki.CARenewBefore),
			want:   pki.Decision{CA: pki.ReasonCAExpiring, Serving: pki.ReasonCARotated},
		},
		{
			name:   "a CA expiring in 91 days stays while the expired serving certificate is reissued",
			bundle: valid,
			now:    t0.Add(pki.CALifetime - 91*day),
			want:   pki.Decision{Serving: pki.ReasonCertificateExpiring},
		},
		{
			name:   "a missing serving certificate is issued",
			bundle: with(func(b *pki.Bundle) { b.Cert = nil }),
			want:   pki.Decision{Serving: pki.ReasonCertificateMissing},
		},
		{
			name: "an unparseable serving key reissues the serving certificate",
			bundle: with(func(b *pki.Bundle) {
				b.Key = []byte("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
			}),
			want: pki.Decision{Serving: pki.ReasonCertificateMissing},
		},
		{
			name:   "a serving key that does not match the certificate reissues it",
			bundle: with(func(b *pki.Bundle) { b.Key = other.Key }),
			want:   pki.Decision{Serving: pki.ReasonCertificateKeyMismatch},
		},
		{
			name:   "a serving certificate signed by another CA is reissued",
			bundle: with(func(b *pki.Bundle) { b.Cert, b.Key = other.Cert, other.Key }),
			want:   pki.Decision{Serving: pki.ReasonNotSignedByCA},
		},
		{
			name:   "a serving certificate for another Service is reissued",
			bundle: valid,
			svc:    pki.Service{Namespace: svc.Namespace, Name: "renamed-webhook-service"},
			want:   pki.Decision{Serving: pki.ReasonDNSNameMissing},
		},
		{
			name:   "a serving certificate for the Service in another namespace is reissued",
			bundle: valid,
			svc:    pki.Service{Namespace: "elsewhere", Name: svc.Name},
			want:   pki.Decision{Serving: pki.ReasonDNSNameMissing},
		},
		{
			name:   "a serving certificate expiring within 30 days is reissued",
			bundle: valid,
			now:    t0.Add(pki.ServingLifetime - 29*day),
			want:   pki.Decision{Serving: pki.ReasonCertificateExpiring},
		},
		{
			name:   "a serving certificate expiring in 31 days stays",
			bundle: valid,
			now:    t0.Add(pki.ServingLifetime - 31*day),
			want:   pki.Decision{},
		},
		{
			name:   "a serving certificate that is not valid yet stays, so replicas with slow clocks do not fight",
			bundle: valid,
			now:    t0.Add(-2 * time.Hour),
			want:   pki.Decision{},
		},
		{
			name:   "a replaced CA that has not expired stays in the bundle",
			bundle: with(func(b *pki.Bundle) { b.CABundle = concat(valid.CABundle, other.CABundle) }),
			want:   pki.Decision{},
		},
		{
			name:   "a replaced CA that has expired is dropped from the bundle",
			bundle: with(func(b *pki.Bundle) { b.CABundle = concat(valid.CABundle, expired.CABundle) }),
			want:   pki.Decision{StaleCABundle: true},
		},
		{
			name:   "a certificate that is not a CA is dropped from the bundle",
			bundle: with(func(b *pki.Bundle) { b.CABundle = concat(valid.CABundle, other.Cert) }),
			want:   pki.Decision{StaleCABundle: true},
		},
		{
			name:   "a bundle with the current CA after a replaced one is rewritten current first",
			bundle: with(func(b *pki.Bundle) { b.CABundle = concat(other.CABundle, valid.CABundle) }),
			want:   pki.Decision{StaleCABundle: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := tt.now
			if now.IsZero() {
				now = t0
			}
			s := tt.svc
			if s == (pki.Service{}) {
				s = svc
			}
			got := pki.Check(tt.bundle, s, now)
			if got != tt.want {
				t.Fatalf("Check() = %+v, want %+v", got, tt.want)
			}
			if got.NeedsUpdate() != (tt.want != pki.Decision{}) {
				t.Errorf("NeedsUpdate() = %v for %+v", got.NeedsUpdate(), got)
			}
			renewed, decision, err := pki.Renew(tt.bundle, s, now)
			if err != nil {
				t.Fatal(err)
			}
			if decision != got {
				t.Errorf("Renew() decided %+v, Check() %+v", decision, got)
			}
			if after := pki.Check(renewed, s, now); after.NeedsUpdate() {
				t.Errorf("the renewed bundle still needs %+v", after)
			}
			// Verify where the certificates are valid even for the case whose clock runs behind.
			verifyAt := now
			if verifyAt.Before(t0) {
				verifyAt = t0
			}
			if err := verify(renewed, s, verifyAt); err != nil {
				t.Errorf("the renewed serving certificate does not verify against the renewed CA bundle: %v", err)
			}
			if !got.NeedsUpdate() && !renewed.Equal(tt.bundle) {
				t.Error("Renew() changed a bundle that needed nothing")
			}
		})
	}
}

func TestRenew(t *testing.T) {
	original := issue(t, t0)
	originalCA := certificates(t, original.CABundle)[0]

	t.Run("renewing an expiring serving certificate keeps the CA and its key", func(t *testing.T) {
		now := t0.Add(pki.ServingLifetime - 10*day)
		renewed, _, err := pki.Renew(original, svc, now)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(renewed.CABundle, original.CABundle) || !bytes.Equal(renewed.CAKey, original.CAKey) {
			t.Error("the CA changed")
		}
		if bytes.Equal(renewed.Cert, original.Cert) || bytes.Equal(renewed.Key, original.Key) {
			t.Error("the serving certificate and key were not replaced")
		}
		if got, want := certificates(t, renewed.Cert)[0].NotAfter, now.Add(pki.ServingLifetime); !got.Equal(want) {
			t.Errorf("the new serving certificate expires at %s, want %s", got, want)
		}
	})

	t.Run("rotating the CA keeps the replaced CA in the bundle until it expires", func(t *testing.T) {
		rotation := t0.Add(pki.CALifetime - 60*day)
		rotated, decision, err := pki.Renew(original, svc, rotation)
		if err != nil {
			t.Fatal(err)
		}
		if decision.CA != pki.ReasonCAExpiring {
			t.Fatalf("decision = %+v, want a CA rotation", decision)
		}
		cas := certificates(t, rotated.CABundle)
		if len(cas) != 2 || cas[0].Equal(originalCA) || !cas[1].Equal(originalCA) {
			t.Fatalf("the CA bundle holds %d certificates, want the new CA then the replaced one", len(cas))
		}
		if err := verify(rotated, svc, rotation); err != nil {
			t.Errorf("the new serving certificate does not verify against the bundle: %v", err)
		}
		// A replica still serving the certificate signed by the replaced CA stays trusted.
		stillServed := pki.Bundle{Cert: original.Cert, CABundle: rotated.CABundle}
		if err := verify(stillServed, svc, t0); err != nil {
			t.Errorf("a certificate signed by the replaced CA no longer verifies against the bundle: %v", err)
		}
		if next := pki.NextRenewal(rotated, svc, rotation); !next.Equal(originalCA.NotAfter) {
			t.Errorf("NextRenewal() = %s, want the replaced CA's expiry %s", next, originalCA.NotAfter)
		}

		afterExpiry := originalCA.NotAfter
		pruned, decision, err := pki.Renew(rotated, svc, afterExpiry)
		if err != nil {
			t.Fatal(err)
		}
		if decision != (pki.Decision{StaleCABundle: true}) {
			t.Fatalf("decision after the replaced CA expired = %+v, want only the bundle pruned", decision)
		}
		if got := certificates(t, pruned.CABundle); len(got) != 1 || !got[0].Equal(cas[0]) {
			t.Errorf("the pruned bundle holds %d certificates, want only the new CA", len(got))
		}
		if !bytes.Equal(pruned.Cert, rotated.Cert) || !bytes.Equal(pruned.CAKey, rotated.CAKey) {
			t.Error("pruning the bundle replaced a certificate")
		}
	})

	t.Run("a serving certificate never outlives its CA", func(t *testing.T) {
		// The CA has 100 days left, more than CARenewBefore: it stays and caps the new certificate.
		now := t0.Add(pki.CALifetime - 100*day)
		renewed, _, err := pki.Renew(original, svc, now)
		if err != nil {
			t.Fatal(err)
		}
		if got := certificates(t, renewed.Cert)[0].NotAfter; !got.Equal(originalCA.NotAfter) {
			t.Errorf("the serving certificate expires at %s, after its CA (%s)", got, originalCA.NotAfter)
		}
	})
}

func TestNextRenewal(t *testing.T) {
	valid := issue(t, t0)
	other := issue(t, t0.Add(-pki.CALifetime+200*day))
	tests := []struct {
		name   string
		bundle pki.Bundle
		want   time.Time
	}{
		{
			name:   "a fresh bundle renews its serving certificate 30 days before it expires",
			bundle: valid,
			want:   t0.Add(pki.ServingLifetime - pki.ServingRenewBefore),
		},
		{
			name:   "a replaced CA that expires first is dropped when it expires",
			bundle: pki.Bundle{Cert: valid.Cert, Key: valid.Key, CABundle: concat(valid.CABundle, other.CABundle), CAKey: valid.CAKey},
			want:   t0.Add(200 * day),
		},
		{
			name:   "a bundle that must change already is renewed now",
			bundle: pki.Bundle{},
			want:   t0,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := pki.NextRenewal(tt.bundle, svc, t0); !got.Equal(tt.want) {
				t.Errorf("NextRenewal() = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestSecretData(t *testing.T) {
	b := issue(t, t0)
	tests := []struct {
		name string
		data map[string][]byte
		want pki.Bundle
	}{
		{
			name: "the four keys of a Secret decode to the bundle they encode",
			data: b.SecretData(),
			want: b,
		},
		{
			name: "a Secret written by cert-manager decodes without a CA key",
			data: map[string][]byte{"tls.crt": b.Cert, "tls.key": b.Key, "ca.crt": b.CABundle},
			want: pki.Bundle{Cert: b.Cert, Key: b.Key, CABundle: b.CABundle},
		},
		{
			name: "an empty Secret decodes to an empty bundle",
			data: nil,
			want: pki.Bundle{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := pki.FromSecretData(tt.data); !got.Equal(tt.want) {
				t.Errorf("FromSecretData() = %+v, want %+v", got, tt.want)
			}
		})
	}
	if got := b.SecretData(); len(got) != 4 || !bytes.Equal(got["ca.key"], b.CAKey) || !bytes.Equal(got["tls.crt"], b.Cert) {
		t.Errorf("SecretData() = %v, want tls.crt, tls.key, ca.crt and ca.key", got)
	}
}
