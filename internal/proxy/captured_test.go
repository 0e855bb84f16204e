package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshlift/meshlift/internal/capture"
	"github.com/meshlift/meshlift/internal/capture/netnstest"
	outroutes "github.com/meshlift/meshlift/internal/outbound"
	"github.com/meshlift/meshlift/internal/proxyconfig"
)

const (
	clientPodIP   = "10.97.0.2"
	clientPeerIP  = "10.97.0.1"
	fakeServiceIP = "10.97.0.100" // plays a Service ClusterIP: routed out of eth0, nobody has it
)

// outboundCaptureNetwork is a client pod's network namespace with outbound capture applied
// (internal/capture's rules, as the CNI plugin applies them) and the proxy's capture listener on
// 127.0.0.1:15007 in it, linked to a peer namespace that plays the rest of the network. The
// proxy's goroutines run in the test's own namespace, where the server proxy listens: a test
// artifact (a pod's proxy shares the pod's namespace), which keeps the redirect, the original
// destination and the routing real; connections to destinations outside the mesh are dialed
// from the pod's namespace as the proxy's user, as the proxy would.
type outboundCaptureNetwork struct {
	pod, peer *netnstest.NetNS
	capture   net.Listener
}

func newOutboundCaptureNetwork(t *testing.T) *outboundCaptureNetwork {
	t.Helper()
	pod, peer := capturedPod(t, clientPodIP, clientPeerIP, false, true)
	ln := pod.Listen(t, "tcp", fmt.Sprintf("127.0.0.1:%d", capture.DefaultOutboundPort))
	return &outboundCaptureNetwork{pod: pod, peer: peer, capture: ln}
}

// appDial connects from the pod's namespace as the app (root, not the proxy's user).
func (n *outboundCaptureNetwork) appDial(address string) (net.Conn, error) {
	return n.pod.Dial(-1, "tcp", address)
}

func (n *outboundCaptureNetwork) appClient() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(_ context.Context, _, address string) (net.Conn, error) {
			return n.appDial(address)
		},
	}}
}

func routesTable(t testing.TB, chains ...outroutes.Chain) *outroutes.Table {
	t.Helper()
	listener, _, err := outroutes.Build(chains)
	if err != nil {
		t.Fatal(err)
	}
	table, err := outroutes.FromListener(listener)
	if err != nil {
		t.Fatal(err)
	}
	return table
}

func TestCapturedOutboundConnectionsGoOverMTLSToTheMeshAndUnchangedElsewhere(t *testing.T) {
	n := newOutboundCaptureNetwork(t)
	f := newFixture(t)

	// The server: MeshService echo, STRICT, an HTTP port whose app answers with the caller's
	// identity as the server proxy gives it, and a TCP port.
	identityApp := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-App", "http")
		w.Header().Set("X-Host", r.Host)
		_, _ = io.WriteString(w, r.Header.Get(PeerIdentityHeader))
	})
	httpPort := startHTTPApp(t, identityApp, false)
	tcpPort := startTCPApp(t, "tcp app\n")
	_, serverAddr := f.serverProxy("STRICT", Options{AppProbePort: -1},
		proxyconfig.Port{Name: "http", Port: httpPort, Protocol: "HTTP"},
		proxyconfig.Port{Name: "tcp", Port: tcpPort, Protocol: "TCP"})

	// Outside the mesh: a TCP service on the peer.
	outside := n.peer.Listen(t, "tcp", clientPeerIP+":9000")
	go func() {
		for {
			c, err := outside.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.WriteString(c, "outside, you are "+c.RemoteAddr().(*net.TCPAddr).IP.String()+"\n")
			}()
		}
	}()

	// The client proxy: no explicit upstream, outbound capture on.
	cfg := proxyconfig.Config{MeshService: "client", ControlPlane: "control-plane:15012", InboundPort: 15006, MTLSMode: "STRICT"}
	client := f.newProxy(cfg, Options{AppProbePort: -1, CaptureOutbound: true}, "client")
	client.passthroughDial = func(network, address string) (net.Conn, error) {
		return n.pod.Dial(int(capture.DefaultProxyUID), network, address)
	}
	if got := client.ListenerNames(); !slices.Contains(got, CaptureListener) || !slices.Contains(got, CaptureListenerIPv6) {
		t.Fatalf("listener names %v lack the capture listeners", got)
	}
	if err := client.Start(map[string]net.Listener{CaptureListener: n.capture}); err != nil {
		t.Fatal(err)
	}
	client.SetOutboundRoutes(routesTable(t,
		outroutes.Chain{Route: outroutes.Route{Cluster: sni("http"), Protocol: "HTTP"}, Port: 80, Addrs: []netip.Addr{netip.MustParseAddr(fakeServiceIP)}},
		outroutes.Chain{Route: outroutes.Route{Cluster: sni("tcp"), Protocol: "TCP"}, Port: 5432, Addrs: []netip.Addr{netip.MustParseAddr(fakeServiceIP)}},
	))
	// The endpoints of the routes' clusters, as EDS gives them to a capturing proxy.
	for _, port := range []string{"http", "tcp"} {
		if err := client.SetEndpoints(sni(port), []Endpoint{{Address: serverAddr, Identity: f.pki.id(serverService)}}); err != nil {
			t.Fatalf("a capturing proxy refused endpoints of a cluster of its routes: %v", err)
		}
	}

	t.Run("HTTP to a Service address of the mesh reaches its app over mTLS, which sees the client's SPIFFE ID", func(t *testing.T) {
		res, body := mustGet(t, n.appClient(), "http://"+fakeServiceIP+":80/hello")
		if res.Header.Get("X-App") != "http" || body != f.pki.id("client") {
			t.Fatalf("answered by %q with peer identity %q; want app http and %s", res.Header.Get("X-App"), body, f.pki.id("client"))
		}
		if got := res.Header.Get("X-Host"); got != fakeServiceIP+":80" && got != fakeServiceIP {
			t.Errorf("the app saw Host %q, want the address the client called", got)
		}
		if got := counter(client.metrics.requests.WithLabelValues("outbound", sni("http"), "2xx")); got != 1 {
			t.Errorf("requests_total of the captured cluster = %v, want 1", got)
		}
	})

	t.Run("TCP to a Service address of the mesh is piped over mTLS to the app", func(t *testing.T) {
		conn, err := n.appDial(fakeServiceIP + ":5432")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(conn)
		if line, err := r.ReadString('\n'); err != nil || line != "tcp app\n" {
			t.Fatalf("greeting %q, %v", line, err)
		}
		_, _ = io.WriteString(conn, "ping\n")
		if line, err := r.ReadString('\n'); err != nil || line != "ping\n" {
			t.Fatalf("echo %q, %v", line, err)
		}
	})

	t.Run("a destination outside the mesh is reached unchanged, from the pod's address", func(t *testing.T) {
		conn, err := n.appDial(clientPeerIP + ":9000")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil || line != "outside, you are "+clientPodIP+"\n" {
			t.Fatalf("the outside service said %q, %v", line, err)
		}
		if got := counter(client.metrics.requests.WithLabelValues("outbound", passthroughTarget, "other")); got != 1 {
			t.Errorf("passthrough connections = %v, want 1", got)
		}
	})

	t.Run("a route to a MeshService port with no endpoints yet waits for them", func(t *testing.T) {
		client.SetOutboundRoutes(routesTable(t,
			outroutes.Chain{Route: outroutes.Route{Cluster: sni("http"), Protocol: "HTTP"}, Port: 80, Addrs: []netip.Addr{netip.MustParseAddr(fakeServiceIP)}},
			outroutes.Chain{Route: outroutes.Route{Cluster: "late.echo." + testNamespace, Protocol: "TCP"}, Port: 6000, Addrs: []netip.Addr{netip.MustParseAddr(fakeServiceIP)}},
		))
		go func() {
			time.Sleep(300 * time.Millisecond)
			_ = client.SetEndpoints("late.echo."+testNamespace, []Endpoint{{Address: serverAddr, Identity: f.pki.id(serverService)}})
		}()
		conn, err := n.appDial(fakeServiceIP + ":6000")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		// The server proxy has no port "late": it refuses the SNI, so the stream ends; what
		// matters is that the client proxy dialed it (a connect error, not no_endpoints).
		_, _ = io.ReadAll(conn)
		if got := counter(client.metrics.requestErrors.WithLabelValues("outbound", "late.echo."+testNamespace, reasonNoEndpoints)); got != 0 {
			t.Errorf("the connection failed for lack of endpoints (%v) instead of waiting for them", got)
		}
	})

	t.Run("the capture port refuses a connection capture did not redirect", func(t *testing.T) {
		before := counter(client.metrics.captureRefused)
		conn, err := n.pod.Dial(int(capture.DefaultProxyUID), "tcp", n.capture.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Read(make([]byte, 1)); err == nil {
			t.Fatal("the capture port served a connection made to it directly")
		}
		if got := counter(client.metrics.captureRefused); got != before+1 {
			t.Errorf("capture_refused_total went from %v to %v, want one more", before, got)
		}
	})
}

func TestAProxyWithoutOutboundCaptureRefusesEndpointsOfClustersItDoesNotCall(t *testing.T) {
	f := newFixture(t)
	client, _ := f.clientProxy(Options{AppProbePort: -1}, "http")
	err := client.SetEndpoints("other.api."+testNamespace, []Endpoint{{Address: "10.0.0.1:15006", Identity: f.pki.id("api")}})
	if err == nil || !strings.Contains(err.Error(), "not an upstream") {
		t.Fatalf("SetEndpoints of a cluster that is no upstream = %v, want a refusal", err)
	}
	if names := client.ListenerNames(); slices.Contains(names, CaptureListener) {
		t.Fatalf("listeners %v include the capture listener without CaptureOutbound", names)
	}
	if _, err := client.ListenAddress(CaptureListener); err == nil {
		t.Fatal("a proxy without CaptureOutbound has an address for the capture listener")
	}
}

func TestTheCaptureListenersAreOnLoopbackOnly(t *testing.T) {
	f := newFixture(t)
	cfg := proxyconfig.Config{MeshService: "client", ControlPlane: "control-plane:15012", InboundPort: 15006, MTLSMode: "STRICT"}
	p := f.newProxy(cfg, Options{AppProbePort: -1, CaptureOutbound: true}, "client")
	for name, want := range map[string]string{CaptureListener: "127.0.0.1:" + strconv.Itoa(OutboundCapturePort), CaptureListenerIPv6: "[::1]:" + strconv.Itoa(OutboundCapturePort)} {
		if got, err := p.ListenAddress(name); err != nil || got != want {
			t.Errorf("ListenAddress(%s) = %q, %v; want %s", name, got, err, want)
		}
	}
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := p.Start(map[string]net.Listener{CaptureListener: ln}); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("Start with the capture listener on every address = %v, want a refusal", err)
	}
}
