package proxy

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshlift/meshlift/internal/proxyconfig"
)

// handshakeSerial makes a fresh mTLS handshake and returns the serial of the server's leaf.
func handshakeSerial(t *testing.T, addr string, config *tls.Config) (*big.Int, error) {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, config.Clone())
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	// With TLS 1.3 the server checks the client certificate after the client's handshake
	// returns: a round trip tells whether it was accepted.
	_, _ = conn.Write([]byte("GET / HTTP/1.1\r\nHost: echo\r\n\r\n"))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return nil, err
	}
	_ = res.Body.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber, nil
}

func TestCertificateRotation(t *testing.T) {
	f := newFixture(t)
	appPort := startHTTPApp(t, echoApp("app"), false)
	p, addr := f.serverProxy("STRICT", Options{}, proxyconfig.Port{Name: "http", Port: appPort, Protocol: "HTTP"})
	clientLeaf := f.pki.leaf(f.pki.id("client"))
	config := clientTLS(t, &clientLeaf, f.pki.bundle(), sni("http"), f.pki.id(serverService))
	first, err := handshakeSerial(t, addr, config)
	if err != nil {
		t.Fatal(err)
	}

	// A keep-alive connection opened with the first certificate.
	keepAlive := &http.Client{Transport: &http.Transport{TLSClientConfig: config.Clone()}}
	if res, _ := mustGet(t, keepAlive, "https://"+addr+"/"); res.StatusCode != http.StatusOK {
		t.Fatalf("got %s", res.Status)
	}

	t.Run("a new certificate is used by new handshakes without restarting the listener", func(t *testing.T) {
		next := f.pki.leaf(f.pki.id(serverService))
		if err := p.SetCertificateKey(next.chainPEM, next.key); err != nil {
			t.Fatal(err)
		}
		got, err := handshakeSerial(t, addr, config)
		if err != nil {
			t.Fatal(err)
		}
		if got.Cmp(next.cert.SerialNumber) != 0 || got.Cmp(first) == 0 {
			t.Fatalf("server presented serial %v, want the new certificate's %v", got, next.cert.SerialNumber)
		}
		if !p.CertificateExpiry().Equal(next.cert.NotAfter) {
			t.Errorf("CertificateExpiry %v, want %v", p.CertificateExpiry(), next.cert.NotAfter)
		}
		if got := counter(p.metrics.certificateExpiry); got != float64(next.cert.NotAfter.Unix()) {
			t.Errorf("expiry metric %v, want %v", got, next.cert.NotAfter.Unix())
		}
	})

	t.Run("connections opened before the rotation keep working", func(t *testing.T) {
		res, _ := mustGet(t, keepAlive, "https://"+addr+"/")
		if res.StatusCode != http.StatusOK {
			t.Fatalf("got %s", res.Status)
		}
		if res.TLS.PeerCertificates[0].SerialNumber.Cmp(first) != 0 {
			t.Fatal("the keep-alive connection was replaced")
		}
	})

	t.Run("a new trust bundle refuses clients of the old CA on new handshakes", func(t *testing.T) {
		newCA := newTestPKI(t, testTrustDomain)
		if err := p.SetTrustBundle(newCA.bundle()); err != nil {
			t.Fatal(err)
		}
		if _, err := handshakeSerial(t, addr, config); err == nil {
			t.Fatal("a client of the old CA was accepted")
		}
		newLeaf := newCA.leaf(newCA.id("client"))
		if _, err := handshakeSerial(t, addr, clientTLS(t, &newLeaf, f.pki.bundle(), sni("http"), f.pki.id(serverService))); err != nil {
			t.Fatalf("a client of the new CA was refused: %v", err)
		}
	})
}

func TestSetCertificateRefusesBadInput(t *testing.T) {
	f := newFixture(t)
	p, err := New(proxyconfig.Config{MeshService: "echo", InboundPort: 15006}, Options{Namespace: testNamespace})
	if err != nil {
		t.Fatal(err)
	}
	good := f.pki.leaf(f.pki.id("echo"))
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	foreign := f.pki.leaf("spiffe://elsewhere.example/ns/default/sa/echo")
	keyDER, _ := x509.MarshalPKCS8PrivateKey(good.key)
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})

	tests := []struct {
		name    string
		set     func() error
		wantErr string
	}{
		{name: "accepts a leaf of the trust domain with its PEM key", set: func() error { return p.SetCertificate(good.chainPEM, keyPEM) }},
		{name: "refuses a key that is not the leaf's", set: func() error { return p.SetCertificateKey(good.chainPEM, otherKey) }, wantErr: "does not belong"},
		{name: "refuses a leaf of another trust domain", set: func() error { return p.SetCertificateKey(foreign.chainPEM, foreign.key) }, wantErr: "not in trust domain"},
		{name: "refuses a chain without a certificate", set: func() error { return p.SetCertificateKey([]byte("junk"), good.key) }, wantErr: "no PEM certificate"},
		{name: "refuses a key that is not PEM", set: func() error { return p.SetCertificate(good.chainPEM, []byte("junk")) }, wantErr: "no PEM block"},
		{name: "refuses a trust bundle without a certificate", set: func() error { return p.SetTrustBundle([]byte("junk")) }, wantErr: "no PEM certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.set()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one saying %q", err, tt.wantErr)
			}
		})
	}
	if !p.HasCertificate() || p.Identity() != f.pki.id("echo") || p.CertificateExpiry().Before(time.Now()) {
		t.Errorf("the good certificate is not the one in use: %s until %v", p.Identity(), p.CertificateExpiry())
	}
}

func TestOutboundSessionResumption(t *testing.T) {
	f := newFixture(t)
	_, serverAddr := f.serverProxy("STRICT", Options{}, proxyconfig.Port{Name: "http", Port: startHTTPApp(t, echoApp("app"), false), Protocol: "HTTP"})
	client, _ := f.clientProxy(Options{}, "http")
	f.pointAt(client, serverAddr, "http")
	c := client.clusters[sni("http")]
	e := c.endpoints.Load().list[0]
	dial := func(t *testing.T) bool {
		t.Helper()
		conn, err := client.dialEndpoint(context.Background(), c, e, e.tlsHTTP1)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// Reading the response also reads the session ticket that follows the handshake.
		_, _ = conn.Write([]byte("GET / HTTP/1.1\r\nHost: echo\r\n\r\n"))
		if _, err := http.ReadResponse(bufio.NewReader(conn), nil); err != nil {
			t.Fatal(err)
		}
		return conn.ConnectionState().DidResume
	}

	t.Run("a second connection to an endpoint resumes the session", func(t *testing.T) {
		dial(t)
		if !dial(t) {
			t.Fatal("the session was not resumed")
		}
	})

	t.Run("a new trust bundle starts a full handshake", func(t *testing.T) {
		if err := client.SetTrustBundle(f.pki.bundle()); err != nil {
			t.Fatal(err)
		}
		if dial(t) {
			t.Fatal("a session of the previous bundle was resumed")
		}
	})
}
