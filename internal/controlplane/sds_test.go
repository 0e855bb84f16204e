package controlplane_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meshlift/meshlift/internal/controlplane"
	"github.com/meshlift/meshlift/internal/identity"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

var bothSecrets = []string{controlplane.SecretDefault, controlplane.SecretRootCA}

func TestFirstCertificateForACSR(t *testing.T) {
	cp := startControlPlane(t, controlplane.Options{})
	a := cp.workload(t, env.Namespace(t, "sds"), "a-1", "a", "a")
	key, csr := newCSR(t, nil, a.spiffeID())
	issued := metricValue(t, "meshlift_control_plane_certificates_issued_total", map[string]string{"reason": "initial"})
	firsts := metricValue(t, "meshlift_control_plane_time_to_first_certificate_seconds", nil)

	c := cp.openADS(t, a.token)
	c.send(t, certificateRequest(a.pod, csr, controlplane.SecretDefault, a.spiffeID(), controlplane.SecretRootCA))
	resp := c.recv(t, timeout)
	got := secrets(t, resp)
	bundle := got[controlplane.SecretRootCA].GetValidationContext().GetTrustedCa().GetInlineBytes()
	if !bytes.Equal(bundle, cp.holder.Current().TrustBundle()) {
		t.Fatalf("ROOTCA holds %d bytes, want the mesh trust bundle", len(bundle))
	}
	for _, name := range []string{controlplane.SecretDefault, a.spiffeID()} {
		secret := got[name]
		if secret == nil {
			t.Fatalf("the response has no secret %q (it has %d)", name, len(got))
		}
		leaf := leafOf(t, secret)
		verifyLeaf(t, leaf, a.spiffeID(), bundle)
		if !samePublicKey(leaf, key) {
			t.Errorf("secret %q is not signed for the CSR's key", name)
		}
		if k := secret.GetTlsCertificate().GetPrivateKey().GetInlineBytes(); len(k) != 0 {
			t.Errorf("secret %q carries a private key although the proxy sent a CSR", name)
		}
		if lifetime := time.Until(leaf.NotAfter); lifetime < 23*time.Hour || lifetime > 24*time.Hour {
			t.Errorf("the leaf expires in %s, want the default 24h", lifetime)
		}
	}
	if n := metricValue(t, "meshlift_control_plane_certificates_issued_total", map[string]string{"reason": "initial"}); n != issued+1 {
		t.Errorf("certificates_issued_total{reason=initial} grew by %v, want 1", n-issued)
	}
	if n := metricValue(t, "meshlift_control_plane_time_to_first_certificate_seconds", nil); n != firsts+1 {
		t.Errorf("time_to_first_certificate_seconds has %v new observations, want 1", n-firsts)
	}
	if open := metricValue(t, "meshlift_control_plane_streams", map[string]string{"service": "ads"}); open < 1 {
		t.Errorf("streams{service=ads} = %v with a stream open", open)
	}
	if expiry := metricValue(t, "meshlift_control_plane_leaf_expiry_seconds", nil); expiry <= 0 || expiry > (24*time.Hour).Seconds() {
		t.Errorf("leaf_expiry_seconds = %v, want the open stream's leaf expiry (within 24h)", expiry)
	}

	// An ACK is not answered: the proxy has the current version.
	c.ack(t, resp, []string{controlplane.SecretDefault, a.spiffeID(), controlplane.SecretRootCA})
	c.expectNothing(t, quiet)
}

func TestFirstCertificateWithAServerGeneratedKey(t *testing.T) {
	cp := startControlPlane(t, controlplane.Options{})
	a := cp.workload(t, env.Namespace(t, "sds"), "a-1", "a", "a")

	c := cp.openADS(t, a.token)
	c.send(t, certificateRequest(a.pod, nil))
	got := secrets(t, c.recv(t, timeout))
	secret := got[controlplane.SecretDefault]
	leaf := leafOf(t, secret)
	verifyLeaf(t, leaf, a.spiffeID(), cp.holder.Current().TrustBundle())
	key, err := identity.ParsePrivateKey(secret.GetTlsCertificate().GetPrivateKey().GetInlineBytes())
	if err != nil {
		t.Fatalf("the secret does not carry the server-generated key: %v", err)
	}
	if !samePublicKey(leaf, key) {
		t.Fatal("the key sent is not the certificate's")
	}
}

func TestSecretDiscoveryServiceAlone(t *testing.T) {
	cp := startControlPlane(t, controlplane.Options{})
	a := cp.workload(t, env.Namespace(t, "sds"), "a-1", "a", "a")
	conn := cp.dial(t)
	c := openStream(t, a.token, func(ctx context.Context) (grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse], error) {
		return secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
	})
	// Envoy may leave type_url empty on the SDS service.
	c.send(t, &discoveryv3.DiscoveryRequest{Node: node(a.pod, nil), ResourceNames: []string{controlplane.SecretDefault}})
	got := secrets(t, c.recv(t, timeout))
	verifyLeaf(t, leafOf(t, got[controlplane.SecretDefault]), a.spiffeID(), cp.holder.Current().TrustBundle())
}

func TestRotationOnTheSameStream(t *testing.T) {
	const lifetime = 4 * time.Second
	cp := startControlPlane(t, controlplane.Options{LeafLifetime: lifetime, RotationFraction: 0.5})
	a := cp.workload(t, env.Namespace(t, "rotation"), "a-1", "a", "a")
	key, csr := newCSR(t, nil, a.spiffeID())
	rotations := metricValue(t, "meshlift_control_plane_certificates_issued_total", map[string]string{"reason": "rotation"})

	c := cp.openADS(t, a.token)
	c.send(t, certificateRequest(a.pod, csr))
	first := c.recv(t, timeout)
	received := time.Now()
	firstLeaf := leafOf(t, secrets(t, first)[controlplane.SecretDefault])
	c.ack(t, first, bothSecrets)

	for i := range 2 {
		next := c.recv(t, lifetime)
		elapsed := time.Since(received)
		received = time.Now()
		// 50% of 4s with ±10% jitter is 1.8s to 2.2s; allow for scheduling.
		if elapsed < 1700*time.Millisecond || elapsed > 3*time.Second {
			t.Errorf("rotation %d arrived after %s, want about 2s (50%% of %s)", i+1, elapsed, lifetime)
		}
		leaf := leafOf(t, secrets(t, next)[controlplane.SecretDefault])
		verifyLeaf(t, leaf, a.spiffeID(), cp.holder.Current().TrustBundle())
		if leaf.SerialNumber.Cmp(firstLeaf.SerialNumber) == 0 || !leaf.NotAfter.After(firstLeaf.NotAfter) {
			t.Errorf("rotation %d sent the same certificate again", i+1)
		}
		if !samePublicKey(leaf, key) {
			t.Errorf("rotation %d is not for the CSR's key", i+1)
		}
		if next.GetVersionInfo() == first.GetVersionInfo() {
			t.Errorf("rotation %d kept version %s", i+1, first.GetVersionInfo())
		}
		firstLeaf = leaf
		c.ack(t, next, bothSecrets)
	}
	if n := metricValue(t, "meshlift_control_plane_certificates_issued_total", map[string]string{"reason": "rotation"}); n < rotations+2 {
		t.Errorf("certificates_issued_total{reason=rotation} grew by %v, want at least 2", n-rotations)
	}
}

func TestTrustBundleChangeIsPushed(t *testing.T) {
	cp := startControlPlane(t, controlplane.Options{})
	ns := env.Namespace(t, "bundle")
	a := cp.workload(t, ns, "a-1", "a", "a")
	b := cp.workload(t, ns, "b-1", "b", "b")

	// One stream asks for both secrets, the other only for the bundle.
	withCert := cp.openADS(t, a.token)
	withCert.send(t, certificateRequest(a.pod, nil))
	withCert.ack(t, withCert.recv(t, timeout), bothSecrets)
	bundleOnly := cp.openADS(t, b.token)
	bundleOnly.send(t, certificateRequest(b.pod, nil, controlplane.SecretRootCA))
	bundleOnly.ack(t, bundleOnly.recv(t, timeout), []string{controlplane.SecretRootCA})

	next := newAuthority(t)
	waitAcknowledged(t, cp, cp.holder.Current(), 2, 2)
	cp.holder.Set(next)

	pushed := withCert.recv(t, timeout)
	got := secrets(t, pushed)
	bundle := got[controlplane.SecretRootCA].GetValidationContext().GetTrustedCa().GetInlineBytes()
	if !bytes.Equal(bundle, next.TrustBundle()) {
		t.Fatal("the pushed ROOTCA is not the new trust bundle")
	}
	verifyLeaf(t, leafOf(t, got[controlplane.SecretDefault]), a.spiffeID(), next.TrustBundle())

	pushedBundle := bundleOnly.recv(t, timeout)
	got = secrets(t, pushedBundle)
	if len(got) != 1 || !bytes.Equal(got[controlplane.SecretRootCA].GetValidationContext().GetTrustedCa().GetInlineBytes(), next.TrustBundle()) {
		t.Fatalf("the bundle-only stream got %d secrets, want the new ROOTCA alone", len(got))
	}

	// A staged root rotation can tell when every proxy has the new bundle.
	if acked, streams := cp.server.TrustBundleAcknowledged(next.TrustBundle()); acked != 0 || streams != 2 {
		t.Fatalf("%d of %d streams acknowledged the new bundle before any ACK, want 0 of 2", acked, streams)
	}
	withCert.ack(t, pushed, bothSecrets)
	bundleOnly.ack(t, pushedBundle, []string{controlplane.SecretRootCA})
	waitAcknowledged(t, cp, next, 2, 2)

	// New connections are served with a certificate of the new CA.
	eventuallyHandshakes(t, cp, next)
}

// waitAcknowledged waits until wantAcked of wantStreams streams acknowledged the bundle of authority.
func waitAcknowledged(t *testing.T, cp *controlPlane, authority *identity.Authority, wantAcked, wantStreams int) {
	t.Helper()
	testenv.Eventually(t, timeout, func(context.Context) (bool, string) {
		acked, streams := cp.server.TrustBundleAcknowledged(authority.TrustBundle())
		return acked == wantAcked && streams == wantStreams,
			fmt.Sprintf("%d of %d streams acknowledged the bundle, want %d of %d", acked, streams, wantAcked, wantStreams)
	})
}

// eventuallyHandshakes waits until a TLS client trusting only authority's bundle can
// connect for both DNS names of the server.
func eventuallyHandshakes(t *testing.T, cp *controlPlane, authority *identity.Authority) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for _, name := range dnsNames() {
		for {
			err := handshake(cp, authority.Roots(), name)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no TLS handshake for %s with the new trust bundle: %v", name, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// dnsNames are the names the contract gives the server's certificate.
func dnsNames() []string { return []string{serverName(), serverName() + ".cluster.local"} }

func handshake(cp *controlPlane, roots *x509.CertPool, serverName string) error {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", cp.server.Addr().String(),
		&tls.Config{RootCAs: roots, ServerName: serverName, NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12})
	if err != nil {
		return err
	}
	return conn.Close()
}

func TestServingCertificate(t *testing.T) {
	cp := startControlPlane(t, controlplane.Options{})
	for _, name := range dnsNames() {
		if err := handshake(cp, cp.holder.Current().Roots(), name); err != nil {
			t.Errorf("a proxy cannot verify the server as %s: %v", name, err)
		}
	}
	if err := handshake(cp, cp.holder.Current().Roots(), "meshlift-control-plane.elsewhere.svc"); err == nil {
		t.Error("the serving certificate is valid for another namespace's Service")
	}
	if err := handshake(cp, newAuthority(t).Roots(), serverName()); err == nil {
		t.Error("a client trusting another CA accepted the server")
	}
}

// A cluster without DNS reaches the server on a fixed ClusterIP: the certificate names it.
func TestServingCertificateNamesExtraAddresses(t *testing.T) {
	cp := startControlPlane(t, controlplane.Options{ExtraNames: []string{"10.96.0.20", "cp.example.test"}})
	for _, name := range append(dnsNames(), "10.96.0.20", "cp.example.test") {
		if err := handshake(cp, cp.holder.Current().Roots(), name); err != nil {
			t.Errorf("a proxy cannot verify the server as %s: %v", name, err)
		}
	}
	if err := handshake(cp, cp.holder.Current().Roots(), "10.96.0.21"); err == nil {
		t.Error("the serving certificate is valid for another address")
	}
}

func TestANewCSROnTheStreamIsSigned(t *testing.T) {
	cp := startControlPlane(t, controlplane.Options{})
	a := cp.workload(t, env.Namespace(t, "csr"), "a-1", "a", "a")
	_, csr := newCSR(t, nil, a.spiffeID())
	c := cp.openADS(t, a.token)
	c.send(t, certificateRequest(a.pod, csr))
	first := c.recv(t, timeout)

	key, csr2 := newCSR(t, nil, a.spiffeID())
	c.send(t, &discoveryv3.DiscoveryRequest{Node: node(a.pod, csr2), TypeUrl: controlplane.TypeSecret, ResourceNames: bothSecrets,
		VersionInfo: first.GetVersionInfo(), ResponseNonce: first.GetNonce()})
	leaf := leafOf(t, secrets(t, c.recv(t, timeout))[controlplane.SecretDefault])
	if !samePublicKey(leaf, key) {
		t.Fatal("the certificate after a new CSR is not for the new key")
	}

	// A new CSR is checked like the first.
	_, foreign := newCSR(t, nil, identity.SPIFFEID(trustDomain, a.pod.Namespace, "admin"))
	c.send(t, &discoveryv3.DiscoveryRequest{Node: node(a.pod, foreign), TypeUrl: controlplane.TypeSecret, ResourceNames: bothSecrets})
	c.refusedWith(t, codes.PermissionDenied, identity.ReasonSANMismatch)
}

func TestANACKIsCountedAndNotAnsweredWithTheSameVersion(t *testing.T) {
	cp := startControlPlane(t, controlplane.Options{})
	a := cp.workload(t, env.Namespace(t, "nack"), "a-1", "a", "a")
	before := metricValue(t, "meshlift_control_plane_nacks_total", map[string]string{"type": "secret"})
	c := cp.openADS(t, a.token)
	c.send(t, certificateRequest(a.pod, nil))
	first := c.recv(t, timeout)
	c.send(t, &discoveryv3.DiscoveryRequest{TypeUrl: controlplane.TypeSecret, ResourceNames: bothSecrets, ResponseNonce: first.GetNonce(),
		ErrorDetail: &statuspb.Status{Code: int32(codes.InvalidArgument), Message: "certificate does not load"}})
	c.expectNothing(t, quiet)
	if after := metricValue(t, "meshlift_control_plane_nacks_total", map[string]string{"type": "secret"}); after != before+1 {
		t.Errorf("nacks_total{type=secret} grew by %v, want 1", after-before)
	}
	// A request answering an older nonce is ignored.
	c.send(t, &discoveryv3.DiscoveryRequest{TypeUrl: controlplane.TypeSecret, ResourceNames: []string{controlplane.SecretRootCA}, ResponseNonce: "stale"})
	c.expectNothing(t, quiet)
}

func TestServingWaitsForTheMeshCA(t *testing.T) {
	holder := identity.NewHolder()
	cp := startControlPlaneWith(t, controlplane.Options{}, holder)
	if err := cp.server.Ready(nil); err == nil {
		t.Fatal("the server is ready without a mesh CA")
	}
	authority := newAuthority(t)
	if err := handshake(cp, authority.Roots(), serverName()); err == nil {
		t.Fatal("the server completed a TLS handshake without a certificate")
	}
	holder.Set(authority)
	testenv.Eventually(t, timeout, func(context.Context) (bool, string) {
		if err := cp.server.Ready(nil); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	if err := handshake(cp, authority.Roots(), serverName()); err != nil {
		t.Fatalf("no TLS handshake once the mesh CA is there: %v", err)
	}
}

func TestServingCertificateIsRenewedAtHalfLife(t *testing.T) {
	clock := clocktesting.NewFakeClock(time.Now())
	cp := startControlPlane(t, controlplane.Options{ServingLifetime: 2 * time.Hour, Clock: clock})
	first := servedCertificate(t, cp)
	testenv.Eventually(t, timeout, func(context.Context) (bool, string) {
		return clock.HasWaiters(), "the server has not scheduled the renewal"
	})

	clock.Step(50 * time.Minute)
	time.Sleep(100 * time.Millisecond)
	if served := servedCertificate(t, cp); !served.Equal(first) {
		t.Fatal("the serving certificate was renewed before half its life")
	}
	clock.Step(11 * time.Minute)
	testenv.Eventually(t, timeout, func(context.Context) (bool, string) {
		served := servedCertificate(t, cp)
		return !served.Equal(first) && served.NotAfter.After(first.NotAfter), "the serving certificate was not renewed at half its life"
	})
}

func servedCertificate(t *testing.T, cp *controlPlane) *x509.Certificate {
	t.Helper()
	cert, err := cp.server.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	return cert.Leaf
}
