package proxy

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshlift/meshlift/internal/proxyconfig"
)

func mtlsClient(config *tls.Config, h2 bool) *http.Client {
	transport := &http.Transport{TLSClientConfig: config, DisableKeepAlives: true, ForceAttemptHTTP2: h2}
	return &http.Client{Transport: transport, Timeout: 10 * time.Second}
}

func TestInboundMTLSMode(t *testing.T) {
	f := newFixture(t)
	otherCA := newTestPKI(t, testTrustDomain)
	appPort := startHTTPApp(t, echoApp("app"), false)
	httpPort := proxyconfig.Port{Name: "http", Port: appPort, Protocol: "HTTP"}

	meshClient := func() *tls.Config {
		leaf := f.pki.leaf(f.pki.id("client"))
		return clientTLS(t, &leaf, f.pki.bundle(), sni("http"), f.pki.id(serverService))
	}
	otherTrustDomainClient := func() *tls.Config {
		leaf := f.pki.leaf("spiffe://elsewhere.example/ns/default/sa/client") // signed by our CA
		return clientTLS(t, &leaf, f.pki.bundle(), sni("http"), f.pki.id(serverService))
	}
	otherCAClient := func() *tls.Config {
		leaf := otherCA.leaf(otherCA.id("client")) // our trust domain, another CA
		return clientTLS(t, &leaf, f.pki.bundle(), sni("http"), f.pki.id(serverService))
	}
	anonymousClient := func() *tls.Config {
		return clientTLS(t, nil, f.pki.bundle(), sni("http"), f.pki.id(serverService))
	}
	handshakeFailures := func(reason string) func(*Proxy) prometheus.Collector {
		return func(p *Proxy) prometheus.Collector {
			return p.metrics.handshakeFailures.WithLabelValues("inbound", reason)
		}
	}
	plaintextRefused := func(p *Proxy) prometheus.Collector { return p.metrics.plaintextRefused }

	tests := []struct {
		name    string
		mode    string
		client  func() *tls.Config // nil: plaintext
		wantOK  bool
		counted func(*Proxy) prometheus.Collector
	}{
		{name: "STRICT refuses plaintext", mode: "STRICT", wantOK: false, counted: plaintextRefused},
		{name: "STRICT accepts a client of the trust domain signed by the CA", mode: "STRICT", client: meshClient, wantOK: true},
		{name: "STRICT refuses a client of another trust domain", mode: "STRICT", client: otherTrustDomainClient, counted: handshakeFailures("bad_identity")},
		{name: "STRICT refuses a client whose leaf comes from another CA", mode: "STRICT", client: otherCAClient, counted: handshakeFailures("untrusted_certificate")},
		{name: "STRICT refuses a client without a certificate", mode: "STRICT", client: anonymousClient, counted: handshakeFailures("no_peer_certificate")},
		{name: "PERMISSIVE accepts plaintext", mode: "PERMISSIVE", wantOK: true},
		{name: "PERMISSIVE accepts a client of the trust domain signed by the CA", mode: "PERMISSIVE", client: meshClient, wantOK: true},
		{name: "PERMISSIVE still refuses a client whose leaf comes from another CA", mode: "PERMISSIVE", client: otherCAClient, counted: handshakeFailures("untrusted_certificate")},
		{name: "PERMISSIVE still refuses a client of another trust domain", mode: "PERMISSIVE", client: otherTrustDomainClient, counted: handshakeFailures("bad_identity")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, addr := f.serverProxy(tt.mode, Options{}, httpPort)
			client, url := h1Client(), "http://"+addr+"/hello"
			if tt.client != nil {
				client, url = mtlsClient(tt.client(), false), "https://"+addr+"/hello"
			}
			res, err := client.Get(url)
			if !tt.wantOK {
				if err == nil {
					_ = res.Body.Close()
					t.Fatalf("request answered %s, want the connection refused", res.Status)
				}
				eventually(t, "the refusal is counted", func() bool { return counter(tt.counted(p)) == 1 })
				return
			}
			if err != nil {
				t.Fatalf("request failed: %v", err)
			}
			_ = res.Body.Close()
			if res.StatusCode != http.StatusOK || res.Header.Get("X-App") != "app" {
				t.Fatalf("got %s from %q, want 200 from the app", res.Status, res.Header.Get("X-App"))
			}
		})
	}
}

func TestInboundRoutesBySNI(t *testing.T) {
	f := newFixture(t)
	ports := []proxyconfig.Port{
		{Name: "http", Port: startHTTPApp(t, echoApp("a"), false), Protocol: "HTTP"},
		{Name: "admin", Port: startHTTPApp(t, echoApp("b"), false), Protocol: "HTTP"},
		{Name: "grpc", Port: startHTTPApp(t, echoApp("c"), true), Protocol: "GRPC"},
		{Name: "raw", Port: startTCPApp(t, ""), Protocol: "TCP"},
	}
	p, addr := f.serverProxy("STRICT", Options{}, ports...)
	leaf := f.pki.leaf(f.pki.id("client"))
	config := func(serverName string) *tls.Config {
		return clientTLS(t, &leaf, f.pki.bundle(), serverName, f.pki.id(serverService))
	}

	httpTests := []struct {
		name      string
		sni       string
		h2        bool
		wantApp   string
		wantProto string
	}{
		{name: "the http port's SNI reaches the http app", sni: "http.echo.default", wantApp: "a", wantProto: "HTTP/1.1"},
		{name: "the admin port's SNI reaches the admin app", sni: "admin.echo.default", wantApp: "b", wantProto: "HTTP/1.1"},
		{name: "an HTTP/2 client of an HTTP port reaches the app over HTTP/1.1", sni: "http.echo.default", h2: true, wantApp: "a", wantProto: "HTTP/1.1"},
		{name: "the grpc port's SNI reaches the h2c app over HTTP/2", sni: "grpc.echo.default", h2: true, wantApp: "c", wantProto: "HTTP/2.0"},
		{name: "an HTTP/1.1 client of a GRPC port reaches the app over HTTP/2", sni: "grpc.echo.default", wantApp: "c", wantProto: "HTTP/2.0"},
	}
	for _, tt := range httpTests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := mtlsClient(config(tt.sni), tt.h2).Get("https://" + addr + "/path?q=1")
			if err != nil {
				t.Fatal(err)
			}
			_ = res.Body.Close()
			if tt.h2 && res.ProtoMajor != 2 {
				t.Errorf("client talked %s to the proxy, want HTTP/2", res.Proto)
			}
			if got := res.Header.Get("X-App"); got != tt.wantApp {
				t.Errorf("reached app %q, want %q", got, tt.wantApp)
			}
			if got := res.Header.Get("X-Proto"); got != tt.wantProto {
				t.Errorf("app saw %s, want %s", got, tt.wantProto)
			}
			if got := res.Header.Get("X-Path"); got != "/path?q=1" {
				t.Errorf("app saw path %q", got)
			}
		})
	}

	t.Run("the raw port's SNI reaches the TCP app", func(t *testing.T) {
		conn, err := tls.Dial("tcp", addr, config("raw.echo.default"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := io.WriteString(conn, "ping\n"); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 5)
		if _, err := io.ReadFull(conn, got); err != nil || string(got) != "ping\n" {
			t.Fatalf("echo: %q, %v", got, err)
		}
	})

	unknown := []struct {
		name string
		sni  string
	}{
		{name: "an unknown port is closed", sni: "missing.echo.default"},
		{name: "another MeshService is closed", sni: "http.other.default"},
		{name: "another namespace is closed", sni: "http.echo.elsewhere"},
		{name: "no server name is closed", sni: ""},
	}
	for i, tt := range unknown {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			tc := tls.Client(conn, config(tt.sni))
			if err := tc.Handshake(); err == nil {
				t.Fatal("handshake succeeded")
			} else if !strings.Contains(err.Error(), "internal error") {
				t.Logf("handshake failed with %v", err)
			}
			eventually(t, "the unknown SNI is counted", func() bool { return counter(p.metrics.unknownSNI) == float64(i+1) })
		})
	}
}
