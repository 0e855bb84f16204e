package proxy

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshlift/meshlift/internal/capture"
	"github.com/meshlift/meshlift/internal/proxyconfig"
)

// appTLSServerName is the name an app that serves TLS itself has a certificate for.
const appTLSServerName = "app.example.com"

// appTLS is the certificate of an app that serves TLS itself: for appTLSServerName and for the
// pod's address (clients that dial the address send no SNI), and the pool that trusts it.
func appTLS(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	template := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "the app's own certificate"},
		DNSNames:              []string{appTLSServerName},
		IPAddresses:           []net.IP{net.ParseIP(capturePodIP)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}, pool
}

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	accepted atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

// startHTTPSApp serves HTTPS (HTTP/1.1 and h2) on 127.0.0.1 with cert, as an app that
// terminates TLS itself. Its answers say which app, the server name and the protocol it saw,
// and the PeerIdentityHeader it got.
func startHTTPSApp(t *testing.T, name string, cert tls.Certificate) (int, *countingListener) {
	t.Helper()
	l, port := listenLocal(t)
	counting := &countingListener{Listener: l}
	server := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-App", name)
			w.Header().Set("X-Sni", strconv.Quote(r.TLS.ServerName))
			w.Header().Set("X-Proto", r.Proto)
			w.Header().Set("X-Got-Peer", strings.Join(r.Header.Values(PeerIdentityHeader), "|"))
		}),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}},
		ReadHeaderTimeout: 10 * time.Second,
	}
	go server.ServeTLS(counting, "", "") //nolint:errcheck // ends with Close
	t.Cleanup(func() { _ = server.Close() })
	return port, counting
}

// splitHelloConn sends the first record written to it (the ClientHello) as records of the given
// payload sizes, in writes of chunk bytes a millisecond apart.
type splitHelloConn struct {
	net.Conn
	sizes []int
	chunk int
	done  bool
}

func (c *splitHelloConn) Write(b []byte) (int, error) {
	if c.done || len(b) < tlsRecordHeaderLen || b[0] != tlsHandshakeRecord {
		return c.Conn.Write(b)
	}
	c.done = true
	n := int(b[3])<<8 | int(b[4])
	out := append(frame(b[tlsRecordHeaderLen:tlsRecordHeaderLen+n], c.sizes...), b[tlsRecordHeaderLen+n:]...)
	for len(out) > 0 {
		k := min(c.chunk, len(out))
		if _, err := c.Conn.Write(out[:k]); err != nil {
			return 0, err
		}
		out = out[k:]
		time.Sleep(time.Millisecond)
	}
	return len(b), nil
}

// httpsClient is an HTTPS client in the capture network's peer namespace, with config; with
// split, its ClientHello goes in two records and small writes.
func httpsClient(n *captureNetwork, config *tls.Config, h2, split bool) *http.Client {
	transport := &http.Transport{
		DialContext: func(_ context.Context, _, address string) (net.Conn, error) {
			conn, err := n.peer.Dial(-1, "tcp", address)
			if err != nil || !split {
				return conn, err
			}
			return &splitHelloConn{Conn: conn, sizes: []int{3}, chunk: 16}, nil
		},
		TLSClientConfig:   config,
		DisableKeepAlives: true,
		ForceAttemptHTTP2: h2,
	}
	return &http.Client{Transport: transport, Timeout: 10 * time.Second}
}

// appTLSSetup is a server proxy on a capture network, in front of an app that serves its own
// TLS on a declared TCP port ("https"), another on an undeclared port, and an HTTP app ("http").
type appTLSSetup struct {
	n                            *captureNetwork
	f                            *fixture
	p                            *Proxy
	pool                         *x509.CertPool
	declaredPort, undeclaredPort int
	declaredApp, undeclaredApp   *countingListener
	httpPort                     int
}

func newAppTLSSetup(t *testing.T, mode string) *appTLSSetup {
	t.Helper()
	s := &appTLSSetup{n: newCaptureNetwork(t), f: newFixture(t)}
	cert, pool := appTLS(t)
	s.pool = pool
	s.declaredPort, s.declaredApp = startHTTPSApp(t, "declared", cert)
	s.undeclaredPort, s.undeclaredApp = startHTTPSApp(t, "undeclared", cert)
	s.httpPort = startHTTPApp(t, http.HandlerFunc(peerApp), false)
	s.p = startCaptureProxy(t, s.f, s.n, mode,
		proxyconfig.Port{Name: "http", Port: s.httpPort, Protocol: "HTTP"},
		proxyconfig.Port{Name: "https", Port: s.declaredPort, Protocol: "TCP"})
	return s
}

// appClient is a TLS client of the app (not of the mesh): serverName "" dials the pod's address
// and sends no SNI.
func (s *appTLSSetup) appClient(serverName string, h2, split bool) *http.Client {
	return httpsClient(s.n, &tls.Config{RootCAs: s.pool, ServerName: serverName}, h2, split)
}

// meshClient is another proxy's mTLS to the port named portName.
func (s *appTLSSetup) meshClient(t *testing.T, portName string, split bool) *http.Client {
	leaf := s.f.pki.leaf(s.f.pki.id("client"))
	return httpsClient(s.n, clientTLS(t, &leaf, s.f.pki.bundle(), sni(portName), s.f.pki.id(serverService)), false, split)
}

func TestAppTLSOnACapturedPortIsPassedThroughWhenPermissive(t *testing.T) {
	s := newAppTLSSetup(t, "PERMISSIVE")
	passed := 0
	for _, tt := range []struct {
		name       string
		port       int
		serverName string // "" dials the address: no SNI
		h2, split  bool
		wantApp    string
		wantProto  string
	}{
		{name: "a client with SNI app.example.com reaches the app's TLS on a declared TCP port",
			port: s.declaredPort, serverName: appTLSServerName, wantApp: "declared", wantProto: "HTTP/1.1"},
		{name: "a client without SNI reaches the app's TLS on a declared TCP port",
			port: s.declaredPort, wantApp: "declared", wantProto: "HTTP/1.1"},
		{name: "an HTTP/2 client negotiates h2 with the app itself (ALPN goes through)",
			port: s.declaredPort, serverName: appTLSServerName, h2: true, wantApp: "declared", wantProto: "HTTP/2.0"},
		{name: "a client with SNI reaches the app's TLS on a port the MeshService does not declare",
			port: s.undeclaredPort, serverName: appTLSServerName, wantApp: "undeclared", wantProto: "HTTP/1.1"},
		{name: "a client without SNI reaches the app's TLS on an undeclared port",
			port: s.undeclaredPort, wantApp: "undeclared", wantProto: "HTTP/1.1"},
		{name: "a ClientHello split across two records, in 16-byte writes, reaches the app",
			port: s.declaredPort, serverName: appTLSServerName, split: true, wantApp: "declared", wantProto: "HTTP/1.1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			client := s.appClient(tt.serverName, tt.h2, tt.split)
			res, _ := mustGet(t, client, s.n.url("https", tt.port))
			// The handshake verified the app's own certificate (RootCAs): the app terminated it.
			if got := res.TLS.PeerCertificates[0].Subject.CommonName; got != "the app's own certificate" {
				t.Errorf("the client handshook with %q, want the app", got)
			}
			if app, gotSNI, proto := res.Header.Get("X-App"), res.Header.Get("X-Sni"), res.Header.Get("X-Proto"); app != tt.wantApp ||
				gotSNI != strconv.Quote(tt.serverName) || proto != tt.wantProto {
				t.Errorf("answered by app %q, which saw SNI %s over %s; want %q, %q, %s", app, gotSNI, proto, tt.wantApp, tt.serverName, tt.wantProto)
			}
			if got := res.Header.Get("X-Got-Peer"); got != "" {
				t.Errorf("the app got a peer identity %q through a pipe", got)
			}
			passed++
			eventually(t, "the pass-through is counted", func() bool { return counter(s.p.metrics.appTLSPassthrough) == float64(passed) })
		})
	}

	for _, tt := range []struct {
		name  string
		split bool
	}{
		{name: "a mesh client of the captured TLS port still gets mTLS, routed by its SNI, with its identity"},
		{name: "a mesh client whose ClientHello is split across two records, in 16-byte writes, still gets mTLS", split: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := counter(s.p.metrics.appTLSPassthrough)
			res, _ := mustGet(t, s.meshClient(t, "http", tt.split), s.n.url("https", s.declaredPort))
			if got := res.TLS.PeerCertificates[0].URIs[0].String(); got != s.f.pki.id(serverService) {
				t.Errorf("the client handshook with %s, want the proxy", got)
			}
			if got := res.Header.Get("X-Got-Peer"); got != s.f.pki.id("client") {
				t.Errorf("the http app got peer %q, want %s", got, s.f.pki.id("client"))
			}
			if got := counter(s.p.metrics.appTLSPassthrough); got != before {
				t.Errorf("app_tls_passthrough_total went from %v to %v", before, got)
			}
		})
	}

	t.Run("plaintext to the captured TLS port is still piped to it", func(t *testing.T) {
		conn, err := s.n.dial(s.declaredPort)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		// Go's TLS server answers plaintext HTTP with a 400 of its own.
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "HTTP/1.0 400") {
			t.Errorf("read %q, %v; want the app's 400 to plaintext", line, err)
		}
	})

	t.Run("app TLS that dials the inbound port itself is refused as before", func(t *testing.T) {
		before, unknown := s.declaredApp.accepted.Load()+s.undeclaredApp.accepted.Load(), counter(s.p.metrics.unknownSNI)
		_, err := s.appClient(appTLSServerName, false, false).Get(s.n.url("https", int(capture.DefaultInboundPort)))
		if err == nil {
			t.Fatal("the request was answered")
		}
		eventually(t, "the unknown SNI is counted", func() bool { return counter(s.p.metrics.unknownSNI) == unknown+1 })
		if after := s.declaredApp.accepted.Load() + s.undeclaredApp.accepted.Load(); after != before {
			t.Errorf("the apps accepted %d connections", after-before)
		}
	})
}

func TestAppTLSOnACapturedPortIsRefusedWhenStrict(t *testing.T) {
	s := newAppTLSSetup(t, "STRICT")
	tests := []struct {
		name       string
		port       int
		serverName string
	}{
		{name: "a client with SNI app.example.com to a declared port", port: s.declaredPort, serverName: appTLSServerName},
		{name: "a client without SNI to a declared port", port: s.declaredPort},
		{name: "a client with SNI app.example.com to an undeclared port", port: s.undeclaredPort, serverName: appTLSServerName},
		{name: "a client without SNI to an undeclared port", port: s.undeclaredPort},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.appClient(tt.serverName, false, false).Get(s.n.url("https", tt.port))
			if err == nil {
				t.Fatal("the request was answered")
			}
			eventually(t, "the refusal is counted", func() bool { return counter(s.p.metrics.unknownSNI) == float64(i+1) })
		})
	}
	if got := s.declaredApp.accepted.Load() + s.undeclaredApp.accepted.Load(); got != 0 {
		t.Errorf("the apps accepted %d connections, want none", got)
	}
	if got := counter(s.p.metrics.appTLSPassthrough); got != 0 {
		t.Errorf("app_tls_passthrough_total = %v, want 0", got)
	}
	t.Run("a mesh client of the captured TLS port gets mTLS with its identity", func(t *testing.T) {
		res, _ := mustGet(t, s.meshClient(t, "http", true), s.n.url("https", s.declaredPort))
		if got := res.Header.Get("X-Got-Peer"); got != s.f.pki.id("client") {
			t.Errorf("the http app got peer %q, want %s", got, s.f.pki.id("client"))
		}
	})
}
