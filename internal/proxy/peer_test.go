package proxy

import (
	"net/http"
	"strings"
	"testing"

	"github.com/meshlift/meshlift/internal/proxyconfig"
)

// peerApp answers with the PeerIdentityHeader values it got, joined by "|" ("" when none).
func peerApp(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Got-Peer", strings.Join(r.Header.Values(PeerIdentityHeader), "|"))
	w.Header().Set("X-Proto", r.Proto)
}

func getWithForgedPeer(t *testing.T, client *http.Client, url string) (peer, proto string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Add(PeerIdentityHeader, "spiffe://cluster.local/ns/default/sa/admin")
	req.Header.Add(strings.ToLower(PeerIdentityHeader), "spiffe://cluster.local/ns/kube-system/sa/root")
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	_ = res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s = %s, want 200", url, res.Status)
	}
	return res.Header.Get("X-Got-Peer"), res.Header.Get("X-Proto")
}

func TestInboundSetsThePeerIdentityAndDropsForgedOnes(t *testing.T) {
	f := newFixture(t)
	h1Port := startHTTPApp(t, http.HandlerFunc(peerApp), false)
	h2cPort := startHTTPApp(t, http.HandlerFunc(peerApp), true)
	ports := []proxyconfig.Port{
		{Name: "http", Port: h1Port, Protocol: "HTTP"},
		{Name: "grpc", Port: h2cPort, Protocol: "GRPC"},
	}
	clientID := f.pki.id("client")
	meshClient := func(portName string, h2 bool) *http.Client {
		leaf := f.pki.leaf(clientID)
		return mtlsClient(clientTLS(t, &leaf, f.pki.bundle(), sni(portName), f.pki.id(serverService)), h2)
	}
	_, strictAddr := f.serverProxy("STRICT", Options{}, ports...)
	_, permissiveAddr := f.serverProxy("PERMISSIVE", Options{}, ports...)

	tests := []struct {
		name      string
		client    *http.Client
		url       string
		wantPeer  string
		wantProto string
	}{
		{"an HTTP/1.1 request over mTLS to an HTTP port carries the client's SPIFFE ID only",
			meshClient("http", false), "https://" + strictAddr + "/", clientID, "HTTP/1.1"},
		{"an HTTP/2 request over mTLS to an HTTP port carries the client's SPIFFE ID only",
			meshClient("http", true), "https://" + strictAddr + "/", clientID, "HTTP/1.1"},
		{"an HTTP/1.1 request over mTLS to a GRPC port carries the client's SPIFFE ID only",
			meshClient("grpc", false), "https://" + strictAddr + "/", clientID, "HTTP/2.0"},
		{"an HTTP/2 request over mTLS to a GRPC port carries the client's SPIFFE ID only",
			meshClient("grpc", true), "https://" + strictAddr + "/", clientID, "HTTP/2.0"},
		{"a plaintext HTTP/1.1 request (PERMISSIVE) carries no peer identity",
			h1Client(), "http://" + permissiveAddr + "/", "", "HTTP/1.1"},
		{"a plaintext h2c request (PERMISSIVE) carries no peer identity",
			h2cClient(), "http://" + permissiveAddr + "/", "", "HTTP/1.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			peer, proto := getWithForgedPeer(t, tt.client, tt.url)
			if peer != tt.wantPeer {
				t.Errorf("the app got %s %q, want %q", PeerIdentityHeader, peer, tt.wantPeer)
			}
			if proto != tt.wantProto {
				t.Errorf("the app got %s, want %s (the path under test)", proto, tt.wantProto)
			}
		})
	}
}

func TestTwoProxiesCarryTheCallersIdentity(t *testing.T) {
	f := newFixture(t)
	h1Port := startHTTPApp(t, http.HandlerFunc(peerApp), false)
	h2cPort := startHTTPApp(t, http.HandlerFunc(peerApp), true)
	_, inboundAddr := f.serverProxy("STRICT", Options{},
		proxyconfig.Port{Name: "http", Port: h1Port, Protocol: "HTTP"},
		proxyconfig.Port{Name: "grpc", Port: h2cPort, Protocol: "GRPC"})
	client, addrs := f.clientProxy(Options{}, "http", "grpc")
	f.pointAt(client, inboundAddr, "http", "grpc")

	for _, tt := range []struct {
		name   string
		client *http.Client
		port   string
	}{
		{"HTTP/1.1 from the app", h1Client(), "http"},
		{"h2c from the app", h2cClient(), "grpc"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			peer, _ := getWithForgedPeer(t, tt.client, "http://"+addrs[tt.port]+"/")
			if want := f.pki.id("client"); peer != want {
				t.Errorf("the server's app got %s %q, want the calling workload's %q", PeerIdentityHeader, peer, want)
			}
		})
	}
}
