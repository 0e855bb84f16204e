package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshlift/meshlift/internal/capture"
	"github.com/meshlift/meshlift/internal/capture/netnstest"
	"github.com/meshlift/meshlift/internal/proxyconfig"
)

const (
	capturePodIP  = "10.98.0.2"
	capturePeerIP = "10.98.0.1"
)

// captureNetwork is a pod network namespace with inbound capture applied (internal/capture's
// rules, as the CNI plugin applies them) and the proxy's inbound listener on :15006 in it,
// linked to a peer namespace that plays the clients. The apps listen on 127.0.0.1 of the test's
// own namespace, where the proxy's goroutines dial: a test artifact (a pod's app shares the pod's
// namespace), which keeps the redirect, the original destination and the routing real.
type captureNetwork struct {
	pod, peer *netnstest.NetNS
	inbound   net.Listener
}

func newCaptureNetwork(t *testing.T) *captureNetwork {
	t.Helper()
	pod, peer := capturedPod(t, capturePodIP, capturePeerIP, true, false)
	inbound := pod.Listen(t, "tcp", fmt.Sprintf(":%d", capture.DefaultInboundPort))
	return &captureNetwork{pod: pod, peer: peer, inbound: inbound}
}

// capturedPod is a pod's network namespace with internal/capture's rules for the directions
// asked (as the CNI plugin applies them), linked by a veth pair to a peer namespace that plays
// the rest of the network; podIP and peerIP are in one /24. Skips the test when not root.
func capturedPod(tb testing.TB, podIP, peerIP string, inbound, outbound bool) (pod, peer *netnstest.NetNS) {
	tb.Helper()
	pod, peer = netnstest.New(tb), netnstest.New(tb)
	netnstest.Link(tb, pod, "eth0", []string{podIP + "/24"}, peer, "eth0", []string{peerIP + "/24"})
	c := capture.DefaultConfig()
	c.Inbound, c.Outbound = inbound, outbound
	rules, err := capture.NewRuleset(c)
	if err != nil {
		tb.Fatal(err)
	}
	if err := capture.Apply(pod.Path, rules); err != nil {
		tb.Fatalf("applying the capture rules: %v", err)
	}
	return pod, peer
}

// dial connects from the peer namespace to the pod's address on port.
func (n *captureNetwork) dial(port int) (net.Conn, error) {
	return n.peer.Dial(-1, "tcp", net.JoinHostPort(capturePodIP, strconv.Itoa(port)))
}

// client is an HTTP client in the peer namespace (mTLS when config is set, h2c when h2c).
func (n *captureNetwork) client(config *tls.Config, h2c bool) *http.Client {
	transport := &http.Transport{
		DialContext: func(_ context.Context, _, address string) (net.Conn, error) {
			return n.peer.Dial(-1, "tcp", address)
		},
		TLSClientConfig:   config,
		DisableKeepAlives: true,
	}
	if h2c {
		transport.Protocols = new(http.Protocols)
		transport.Protocols.SetUnencryptedHTTP2(true)
	}
	return &http.Client{Transport: transport, Timeout: 10 * time.Second}
}

func (n *captureNetwork) url(scheme string, port int) string {
	return scheme + "://" + net.JoinHostPort(capturePodIP, strconv.Itoa(port)) + "/path"
}

// startCaptureProxy runs the server proxy on the capture network's inbound listener.
func startCaptureProxy(t *testing.T, f *fixture, n *captureNetwork, mode string, ports ...proxyconfig.Port) *Proxy {
	t.Helper()
	cfg := proxyconfig.Config{MeshService: serverService, ControlPlane: "control-plane:15012",
		InboundPort: int(capture.DefaultInboundPort), MTLSMode: mode, Ports: ports}
	p := f.newProxy(cfg, Options{AppProbePort: -1}, serverService)
	if err := p.Start(map[string]net.Listener{InboundListener: n.inbound}); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCapturedPlaintextGoesToTheOriginalPortWhenPermissive(t *testing.T) {
	n := newCaptureNetwork(t)
	f := newFixture(t)
	firstPort := startHTTPApp(t, echoApp("first"), false)
	httpPort := startHTTPApp(t, echoApp("http"), false)
	grpcPort := startHTTPApp(t, echoApp("grpc"), true)
	tcpPort := startTCPApp(t, "tcp app\n")
	echoPort := startTCPApp(t, "")
	undeclaredPort := startTCPApp(t, "undeclared app\n")
	p := startCaptureProxy(t, f, n, "PERMISSIVE",
		proxyconfig.Port{Name: "first", Port: firstPort, Protocol: "HTTP"},
		proxyconfig.Port{Name: "http", Port: httpPort, Protocol: "HTTP"},
		proxyconfig.Port{Name: "grpc", Port: grpcPort, Protocol: "GRPC"},
		proxyconfig.Port{Name: "tcp", Port: tcpPort, Protocol: "TCP"},
		proxyconfig.Port{Name: "echo", Port: echoPort, Protocol: "TCP"})

	t.Run("plaintext HTTP/1.1 to a declared HTTP port reaches that port's app, proxied per request", func(t *testing.T) {
		res, _ := mustGet(t, n.client(nil, false), n.url("http", httpPort))
		if got := res.Header.Get("X-App"); got != "http" {
			t.Errorf("answered by app %q, want http", got)
		}
		if got := counter(p.metrics.requests.WithLabelValues("inbound", "http", "2xx")); got != 1 {
			t.Errorf("requests_total of port http = %v, want 1 (HTTP-aware)", got)
		}
	})
	t.Run("plaintext h2c to a declared GRPC port reaches its h2c app over HTTP/2", func(t *testing.T) {
		res, _ := mustGet(t, n.client(nil, true), n.url("http", grpcPort))
		if app, proto := res.Header.Get("X-App"), res.Header.Get("X-Proto"); app != "grpc" || proto != "HTTP/2.0" {
			t.Errorf("answered by app %q over %s, want grpc over HTTP/2.0", app, proto)
		}
	})
	t.Run("plaintext to a declared TCP port whose server speaks first is piped to its app", func(t *testing.T) {
		expectGreeting(t, n, tcpPort, "tcp app")
	})
	t.Run("plaintext to a declared TCP port whose client speaks first is piped to its app", func(t *testing.T) {
		conn, err := n.dial(echoPort)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(conn, "SET key value\n"); err != nil {
			t.Fatal(err)
		}
		if echo, err := bufio.NewReader(conn).ReadString('\n'); err != nil || echo != "SET key value\n" {
			t.Errorf("echo %q, %v; want the line back", echo, err)
		}
	})
	t.Run("plaintext to a port the MeshService does not declare is piped to that port", func(t *testing.T) {
		expectGreeting(t, n, undeclaredPort, "undeclared app")
	})
	t.Run("plaintext that dials the inbound port itself goes to the first declared port", func(t *testing.T) {
		res, _ := mustGet(t, n.client(nil, false), n.url("http", int(capture.DefaultInboundPort)))
		if got := res.Header.Get("X-App"); got != "first" {
			t.Errorf("answered by app %q, want first", got)
		}
	})
	t.Run("mTLS to a captured port is routed by its SNI as before", func(t *testing.T) {
		leaf := f.pki.leaf(f.pki.id("client"))
		client := n.client(clientTLS(t, &leaf, f.pki.bundle(), sni("grpc"), f.pki.id(serverService)), false)
		res, _ := mustGet(t, client, n.url("https", httpPort))
		if got := res.Header.Get("X-App"); got != "grpc" {
			t.Errorf("answered by app %q, want grpc (the SNI's port)", got)
		}
	})
	t.Run("mTLS to the inbound port is routed by its SNI", func(t *testing.T) {
		leaf := f.pki.leaf(f.pki.id("client"))
		client := n.client(clientTLS(t, &leaf, f.pki.bundle(), sni("http"), f.pki.id(serverService)), false)
		res, _ := mustGet(t, client, n.url("https", int(capture.DefaultInboundPort)))
		if got := res.Header.Get("X-App"); got != "http" {
			t.Errorf("answered by app %q, want http", got)
		}
	})
}

// expectGreeting connects to the pod's port from the peer and expects the TCP app's greeting,
// then its echo.
func expectGreeting(t *testing.T, n *captureNetwork, port int, greeting string) {
	t.Helper()
	conn, err := n.dial(port)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	line, err := br.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != greeting {
		t.Fatalf("read %q, %v; want the greeting %q", line, err, greeting)
	}
	if _, err := io.WriteString(conn, "ping\n"); err != nil {
		t.Fatal(err)
	}
	if echo, err := br.ReadString('\n'); err != nil || echo != "ping\n" {
		t.Errorf("echo %q, %v; want ping", echo, err)
	}
}

func TestCapturedPlaintextIsRefusedWhenStrict(t *testing.T) {
	n := newCaptureNetwork(t)
	f := newFixture(t)
	httpPort := startHTTPApp(t, echoApp("http"), false)
	undeclaredPort := startTCPApp(t, "undeclared app\n")
	p := startCaptureProxy(t, f, n, "STRICT", proxyconfig.Port{Name: "http", Port: httpPort, Protocol: "HTTP"})

	for i, port := range []int{httpPort, undeclaredPort} {
		conn, err := n.dial(port)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		_, _ = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		expectClosed(t, conn)
		_ = conn.Close()
		eventually(t, "the refusal is counted", func() bool { return counter(p.metrics.plaintextRefused) == float64(i+1) })
	}

	leaf := f.pki.leaf(f.pki.id("client"))
	client := n.client(clientTLS(t, &leaf, f.pki.bundle(), sni("http"), f.pki.id(serverService)), false)
	res, _ := mustGet(t, client, n.url("https", httpPort))
	if got := res.Header.Get("X-App"); got != "http" {
		t.Errorf("mTLS to the captured port answered by app %q, want http", got)
	}
}
