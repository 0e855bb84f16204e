package localcluster

import (
	"crypto/x509"
	"net"
	"os"
	"slices"
	"testing"
	"time"
)

func TestPKIIssuesEveryCertificateFromOneCAAndKeepsValidOnes(t *testing.T) {
	pki := PKI{Dir: t.TempDir()}
	nodeIP, serviceIP := net.ParseIP("192.0.2.2"), net.ParseIP("10.96.0.1")
	specs := ClusterCerts("node-a", nodeIP, serviceIP)
	now := time.Now()

	written, err := pki.Ensure(specs, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(written) != len(specs)+2 { // + CA + service account key
		t.Errorf("first Ensure wrote %v, want the CA, the SA key and %d certificates", written, len(specs))
	}
	ca, _, err := pki.loadPair(caName)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	for _, spec := range specs {
		cert, _, err := pki.loadPair(spec.Name)
		if err != nil {
			t.Fatalf("%s: %v", spec.Name, err)
		}
		usage := x509.ExtKeyUsageClientAuth
		if spec.Server {
			usage = x509.ExtKeyUsageServerAuth
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Errorf("%s does not verify against the CA for %v: %v", spec.Name, usage, err)
		}
	}
	apiserver, _, _ := pki.loadPair("apiserver")
	for _, host := range []string{"kubernetes.default.svc", "192.0.2.2", "10.96.0.1", "127.0.0.1"} {
		if err := apiserver.VerifyHostname(host); err != nil {
			t.Errorf("apiserver certificate does not cover %s: %v", host, err)
		}
	}
	kubelet, _, _ := pki.loadPair("kubelet")
	if kubelet.Subject.CommonName != "system:node:node-a" || !slices.Equal(kubelet.Subject.Organization, []string{"system:nodes"}) {
		t.Errorf("kubelet client subject = %v, want system:node:node-a in system:nodes (the Node authorizer needs both)", kubelet.Subject)
	}
	if info, err := os.Stat(pki.KeyPath("admin")); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("admin key mode = %v (%v), want 0600", info.Mode(), err)
	}

	written, err = pki.Ensure(specs, now)
	if err != nil || len(written) != 0 {
		t.Errorf("second Ensure wrote %v (%v), want nothing: valid files must be kept", written, err)
	}

	// A new node IP needs a new serving certificate, and only that.
	written, err = pki.Ensure(ClusterCerts("node-a", net.ParseIP("192.0.2.9"), serviceIP), now)
	if err != nil || !slices.Equal(written, []string{"apiserver", "kubelet-serving"}) {
		t.Errorf("Ensure after a node IP change wrote %v (%v), want [apiserver kubelet-serving]", written, err)
	}

	// Certificates close to expiry are renewed.
	written, err = pki.Ensure(specs, now.Add(certLifetime-renewBefore/2))
	if err != nil || len(written) != len(specs) {
		t.Errorf("Ensure near expiry wrote %v (%v), want every certificate renewed", written, err)
	}
}
