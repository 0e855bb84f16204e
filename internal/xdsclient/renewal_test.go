package xdsclient

import (
	"context"
	"crypto"
	"strconv"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshlift/meshlift/internal/identity"
)

func TestRenewalTime(t *testing.T) {
	now := time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		notAfter time.Time
		fraction float64
		want     time.Time
	}{
		{"a 24h certificate is renewed after 9.6h, before the control plane's rotation at 12h ±10%", now.Add(24 * time.Hour), DefaultRenewFraction, now.Add(576 * time.Minute)},
		{"the fraction counts from the arrival, not from the backdated NotBefore", now.Add(time.Hour), 0.5, now.Add(30 * time.Minute)},
		{"an expired certificate is due at once", now.Add(-time.Minute), DefaultRenewFraction, now.Add(-24 * time.Second)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := renewalTime(now, tt.notAfter, tt.fraction); !got.Equal(tt.want) {
				t.Fatalf("renewalTime = %v, want %v", got, tt.want)
			}
		})
	}
}

func csrOf(r *discoveryv3.DiscoveryRequest) string {
	return r.GetNode().GetMetadata().GetFields()[MetaCSR].GetStringValue()
}

// TestEachRenewalUsesANewKey lets the client renew its certificate twice over real gRPC and TLS:
// each renewal sends the CSR of a key generated for it, and the certificate signed for that CSR
// replaces the old one. Also when the control plane rotates first and signs the old key again,
// the client still renews on the first certificate's schedule, so no key outlives it.
func TestEachRenewalUsesANewKey(t *testing.T) {
	f := start(t)
	c := f.client(t)
	rec := newRecorder()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = c.Run(ctx, rec) }()
	stream := <-f.server.streams

	// sign is the control plane's answer to a CSR: a certificate for its key.
	sign := func(csrPEM string, lifetime time.Duration) *anypb.Any {
		t.Helper()
		csr, err := identity.ValidateCSR([]byte(csrPEM), testID)
		if err != nil {
			t.Fatalf("the control plane would refuse the client's CSR: %v", err)
		}
		leaf, err := f.server.authority.SignWorkload(csr.PublicKey, testID, lifetime, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return secretAny(t, &tlsv3.Secret{Name: SecretCertificate, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline(leaf.ChainPEM),
		}}})
	}
	seen := map[string]bool{}
	first := waitRequest(t, f.server, func(r *discoveryv3.DiscoveryRequest) bool { return r.GetTypeUrl() == TypeSecret && csrOf(r) != "" })
	seen[csrOf(first)] = true
	send(t, stream, TypeSecret, "1", sign(csrOf(first), 2*time.Second), bundleAny(t, f.server.authority.TrustBundle()))
	rec.wait(t, func() bool { return len(rec.certs) == 1 })
	// The control plane rotates first: the same key, signed for an hour.
	send(t, stream, TypeSecret, "2", sign(csrOf(first), time.Hour))
	rec.wait(t, func() bool { return len(rec.certs) == 2 })

	version := 2
	for renewal := 1; renewal <= 2; renewal++ {
		started := time.Now()
		req := waitRequest(t, f.server, func(r *discoveryv3.DiscoveryRequest) bool {
			return r.GetTypeUrl() == TypeSecret && csrOf(r) != "" && !seen[csrOf(r)]
		})
		seen[csrOf(req)] = true
		t.Logf("renewal %d: a new CSR after %s", renewal, time.Since(started).Round(time.Millisecond))
		if got, want := req.GetResponseNonce(), "n-"+strconv.Itoa(version); got != want || req.GetVersionInfo() != strconv.Itoa(version) {
			t.Errorf("renewal %d acknowledges nonce %q version %q, want %q %q (the subscription unchanged)", renewal, got, req.GetVersionInfo(), want, strconv.Itoa(version))
		}
		if names := req.GetResourceNames(); len(names) != 2 || names[0] != SecretCertificate || names[1] != SecretTrustBundle {
			t.Errorf("renewal %d asks for %v", renewal, names)
		}
		version++
		send(t, stream, TypeSecret, strconv.Itoa(version), sign(csrOf(req), 2*time.Second))
		rec.wait(t, func() bool { return len(rec.certs) == version })
	}

	rec.mu.Lock()
	certs := append([]*Certificate(nil), rec.certs...)
	rec.mu.Unlock()
	// certs: key 1, key 1 again (the control plane's rotation), key 2, key 3.
	keys := []crypto.PublicKey{certs[0].Leaf.PublicKey, certs[2].Leaf.PublicKey, certs[3].Leaf.PublicKey}
	for i := range keys {
		for j := i + 1; j < len(keys); j++ {
			if keys[i].(interface{ Equal(crypto.PublicKey) bool }).Equal(keys[j]) {
				t.Fatalf("the certificates %d and %d are for the same public key", i, j)
			}
		}
	}
	for i, cert := range certs {
		if !publicKeyMatches(cert.Leaf, cert.Key) {
			t.Errorf("certificate %d is handed to the proxy with another private key", i)
		}
	}
	if c.Key() != certs[3].Key {
		t.Error("the client's key in use is not the one of its latest certificate")
	}
	var m dto.Metric
	if err := c.renewals.Write(&m); err != nil || m.GetCounter().GetValue() != 2 {
		t.Errorf("meshlift_proxy_key_renewals_total = %v (%v), want 2", m.GetCounter().GetValue(), err)
	}
}
