package proxy

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/meshlift/meshlift/internal/identity"
	"github.com/meshlift/meshlift/internal/proxyconfig"
)

const (
	testNamespace   = "default"
	testTrustDomain = "cluster.local"
	serverService   = "echo"
)

// testPKI is a CA of a trust domain, built with the identity package.
type testPKI struct {
	tb          testing.TB
	trustDomain string
	authority   *identity.Authority
}

func newTestPKI(tb testing.TB, trustDomain string) *testPKI {
	tb.Helper()
	now := time.Now()
	rootPEM, keyPEM, err := identity.NewRoot(trustDomain, 24*time.Hour, now)
	if err != nil {
		tb.Fatal(err)
	}
	authority, err := identity.NewAuthority(rootPEM, keyPEM, nil, rootPEM)
	if err != nil {
		tb.Fatal(err)
	}
	return &testPKI{tb: tb, trustDomain: trustDomain, authority: authority}
}

func (k *testPKI) bundle() []byte { return k.authority.TrustBundle() }

func (k *testPKI) id(serviceAccount string) string {
	return identity.SPIFFEID(k.trustDomain, testNamespace, serviceAccount)
}

type testLeaf struct {
	chainPEM []byte
	key      *ecdsa.PrivateKey
	cert     *x509.Certificate
}

// leaf signs a workload leaf for any SPIFFE ID (also one outside the CA's trust domain).
func (k *testPKI) leaf(spiffeID string) testLeaf {
	k.tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		k.tb.Fatal(err)
	}
	leaf, err := k.authority.SignWorkload(&key.PublicKey, spiffeID, time.Hour, time.Now())
	if err != nil {
		k.tb.Fatal(err)
	}
	return testLeaf{chainPEM: leaf.ChainPEM, key: key, cert: leaf.Cert}
}

func (l testLeaf) tlsCertificate(tb testing.TB) tls.Certificate {
	keyDER, err := x509.MarshalPKCS8PrivateKey(l.key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := tls.X509KeyPair(l.chainPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		tb.Fatal(err)
	}
	return cert
}

// clientTLS is what a mesh client (another proxy) uses to call an inbound port directly: its
// leaf (if any), the SNI, and the server's SPIFFE ID checked against roots.
func clientTLS(tb testing.TB, leaf *testLeaf, roots []byte, serverName, serverID string) *tls.Config {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(roots)
	config := &tls.Config{
		ServerName:         serverName,
		InsecureSkipVerify: true, //nolint:gosec // verified below
		VerifyConnection: func(cs tls.ConnectionState) error {
			if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: pool}); err != nil {
				return err
			}
			if got := cs.PeerCertificates[0].URIs[0].String(); got != serverID {
				return fmt.Errorf("server is %s, want %s", got, serverID)
			}
			return nil
		},
	}
	if leaf != nil {
		config.Certificates = []tls.Certificate{leaf.tlsCertificate(tb)}
	}
	return config
}

func testLogger() logr.Logger {
	if os.Getenv("MESHLIFT_TEST_LOG") == "" {
		return logr.Discard()
	}
	return funcr.New(func(prefix, args string) { fmt.Fprintln(os.Stderr, prefix, args) }, funcr.Options{Verbosity: 2})
}

func listenLocal(tb testing.TB) (net.Listener, int) {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	return l, l.Addr().(*net.TCPAddr).Port
}

// startHTTPApp serves handler on 127.0.0.1 (HTTP/1.1, and h2c with prior knowledge when h2c).
func startHTTPApp(tb testing.TB, handler http.Handler, h2c bool) int {
	tb.Helper()
	l, port := listenLocal(tb)
	server := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	if h2c {
		server.Protocols = new(http.Protocols)
		server.Protocols.SetHTTP1(true)
		server.Protocols.SetUnencryptedHTTP2(true)
	}
	go server.Serve(l) //nolint:errcheck // ends with Close
	tb.Cleanup(func() { _ = server.Close() })
	return port
}

// echoApp answers with what it got: the protocol, host and path in headers, the body as body.
// /trailers sends gRPC-like trailers; /stream echoes each chunk of the body as it arrives.
func echoApp(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-App", name)
		w.Header().Set("X-Proto", r.Proto)
		w.Header().Set("X-Host", r.Host)
		w.Header().Set("X-Path", r.URL.RequestURI())
		w.Header().Set("X-Te", r.Header.Get("Te"))
		w.Header().Set("X-Ua", strconv.Quote(r.Header.Get("User-Agent")))
		switch r.URL.Path {
		case "/notype":
			w.Header()["Content-Type"] = nil
			_, _ = io.WriteString(w, "<html>no type</html>")
		case "/trailers":
			w.Header().Set("Content-Type", "application/grpc")
			body, _ := io.ReadAll(r.Body)
			_, _ = w.Write(body)
			w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
			w.Header().Set(http.TrailerPrefix+"Grpc-Message", "all good")
		case "/stream":
			w.WriteHeader(http.StatusOK)
			flusher := w.(http.Flusher)
			flusher.Flush()
			buf := make([]byte, 1024)
			for {
				n, err := r.Body.Read(buf)
				if n > 0 {
					_, _ = w.Write(buf[:n])
					flusher.Flush()
				}
				if err != nil {
					return
				}
			}
		default:
			body, _ := io.ReadAll(r.Body)
			_, _ = w.Write(body)
		}
	}
}

// startTCPApp echoes bytes; with greeting it speaks first.
func startTCPApp(tb testing.TB, greeting string) int {
	tb.Helper()
	l, port := listenLocal(tb)
	tb.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if greeting != "" {
					_, _ = io.WriteString(c, greeting)
				}
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return port
}

// fixture is a mesh of proxies sharing one CA.
type fixture struct {
	tb  testing.TB
	pki *testPKI
}

func newFixture(tb testing.TB) *fixture {
	return &fixture{tb: tb, pki: newTestPKI(tb, testTrustDomain)}
}

func (f *fixture) newProxy(cfg proxyconfig.Config, opts Options, serviceAccount string) *Proxy {
	f.tb.Helper()
	opts.Namespace = testNamespace
	if opts.Logger.GetSink() == nil {
		opts.Logger = testLogger()
	}
	// Shorter than the defaults, in the same order: pools close idle connections before a
	// draining peer would.
	if opts.ProtocolDetectionTimeout == 0 {
		opts.ProtocolDetectionTimeout = 100 * time.Millisecond
	}
	if opts.PoolIdleTimeout == 0 {
		opts.PoolIdleTimeout = 200 * time.Millisecond
	}
	if opts.DrainIdleTimeout == 0 {
		opts.DrainIdleTimeout = 500 * time.Millisecond
	}
	p, err := New(cfg, opts)
	if err != nil {
		f.tb.Fatal(err)
	}
	f.tb.Cleanup(func() { _ = p.Close() })
	leaf := f.pki.leaf(f.pki.id(serviceAccount))
	if err := p.SetCertificateKey(leaf.chainPEM, leaf.key); err != nil {
		f.tb.Fatal(err)
	}
	if err := p.SetTrustBundle(f.pki.bundle()); err != nil {
		f.tb.Fatal(err)
	}
	return p
}

// serverProxy runs the sidecar of MeshService echo (service account echo) with an inbound
// listener on 127.0.0.1. It returns the proxy and the inbound address.
func (f *fixture) serverProxy(mode string, opts Options, ports ...proxyconfig.Port) (*Proxy, string) {
	f.tb.Helper()
	cfg := proxyconfig.Config{MeshService: serverService, ControlPlane: "control-plane:15012", InboundPort: 15006,
		MTLSMode: mode, Ports: ports}
	p := f.newProxy(cfg, opts, serverService)
	l, _ := listenLocal(f.tb)
	if err := p.Start(map[string]net.Listener{InboundListener: l}); err != nil {
		f.tb.Fatal(err)
	}
	return p, l.Addr().String()
}

// clientProxy runs the sidecar of MeshService client with one outbound listener per port name
// of echo. It returns the proxy and the local address of each upstream, by port name.
func (f *fixture) clientProxy(opts Options, portNames ...string) (*Proxy, map[string]string) {
	f.tb.Helper()
	cfg := proxyconfig.Config{MeshService: "client", ControlPlane: "control-plane:15012", InboundPort: 15006, MTLSMode: "STRICT"}
	listeners := map[string]net.Listener{}
	addrs := map[string]string{}
	for _, name := range portNames {
		l, port := listenLocal(f.tb)
		cfg.Upstreams = append(cfg.Upstreams, proxyconfig.Upstream{MeshService: serverService, Namespace: testNamespace, Port: name, LocalPort: port})
		listeners[OutboundListener(port)] = l
		addrs[name] = l.Addr().String()
	}
	p := f.newProxy(cfg, opts, "client")
	if err := p.Start(listeners); err != nil {
		f.tb.Fatal(err)
	}
	return p, addrs
}

func sni(portName string) string { return portName + "." + serverService + "." + testNamespace }

// pointAt gives the client proxy the server proxy's inbound address as the only endpoint of
// every port.
func (f *fixture) pointAt(client *Proxy, inboundAddr string, portNames ...string) {
	f.tb.Helper()
	for _, name := range portNames {
		if err := client.SetEndpoints(sni(name), []Endpoint{{Address: inboundAddr, Identity: f.pki.id(serverService)}}); err != nil {
			f.tb.Fatal(err)
		}
	}
}

// h1Client is a local app's HTTP/1.1 client.
func h1Client() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16, DisableCompression: true}, Timeout: 10 * time.Second}
}

// h2cClient is a local app's HTTP/2 client with prior knowledge (gRPC-like).
func h2cClient() *http.Client {
	transport := &http.Transport{DisableCompression: true}
	transport.Protocols = new(http.Protocols)
	transport.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: transport, Timeout: 10 * time.Second}
}

func mustGet(tb testing.TB, client *http.Client, url string) (*http.Response, string) {
	tb.Helper()
	res, err := client.Get(url)
	if err != nil {
		tb.Fatalf("GET %s: %v", url, err)
	}
	body, err := io.ReadAll(res.Body)
	_ = res.Body.Close()
	if err != nil {
		tb.Fatalf("GET %s: reading body: %v", url, err)
	}
	return res, string(body)
}

// eventually polls cond (metrics are updated by the proxy's goroutines after the client saw
// the outcome); it does not measure time.
func eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	for range 500 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	tb.Fatalf("never true: %s", what)
}

// counter is the value of a collector holding one counter or gauge.
func counter(c prometheus.Collector) float64 {
	ch := make(chan prometheus.Metric, 1)
	go func() { c.Collect(ch); close(ch) }()
	var total float64
	for m := range ch {
		var out dto.Metric
		if err := m.Write(&out); err != nil {
			panic(err)
		}
		total += out.GetCounter().GetValue() + out.GetGauge().GetValue()
	}
	return total
}

// expectClosed asserts that the peer closes conn without sending an HTTP response.
func expectClosed(tb testing.TB, conn net.Conn) {
	tb.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err == nil || strings.HasPrefix(line, "HTTP/") {
		tb.Fatalf("connection answered %q, want it closed", line)
	}
	if isTimeout(err) {
		tb.Fatalf("connection stayed open")
	}
}
