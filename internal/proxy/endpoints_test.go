package proxy

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshlift/meshlift/internal/proxyconfig"
)

func testCluster(t *testing.T, policy string, addresses ...string) (*Proxy, *cluster) {
	t.Helper()
	cfg := proxyconfig.Config{MeshService: "client", InboundPort: 15006,
		Upstreams: []proxyconfig.Upstream{{MeshService: "echo", Namespace: testNamespace, Port: "http", LocalPort: 9000}}}
	p, err := New(cfg, Options{Namespace: testNamespace, LoadBalancing: policy})
	if err != nil {
		t.Fatal(err)
	}
	var eps []Endpoint
	for _, a := range addresses {
		eps = append(eps, Endpoint{Address: a, Identity: "spiffe://cluster.local/ns/default/sa/echo"})
	}
	if err := p.SetEndpoints(sni("http"), eps); err != nil {
		t.Fatal(err)
	}
	return p, p.clusters[sni("http")]
}

func TestPick(t *testing.T) {
	addresses := []string{"10.0.0.1:15006", "10.0.0.2:15006", "10.0.0.3:15006"}

	t.Run("round-robin spreads requests evenly", func(t *testing.T) {
		_, c := testCluster(t, RoundRobin, addresses...)
		counts := map[string]int{}
		for range 300 {
			counts[c.pick(nil).Address]++
		}
		for _, a := range addresses {
			if counts[a] != 100 {
				t.Fatalf("picks %v, want 100 each", counts)
			}
		}
	})

	for _, policy := range []string{RoundRobin, LeastRequest} {
		t.Run(policy+" skips the endpoints already tried", func(t *testing.T) {
			_, c := testCluster(t, policy, addresses...)
			list := c.endpoints.Load().list
			for range 50 {
				if got := c.pick(list[:2]); got != list[2] {
					t.Fatalf("picked %s, want the one not tried", got.Address)
				}
			}
			if got := c.pick(list); got != nil {
				t.Fatalf("picked %s with every endpoint tried", got.Address)
			}
		})

		t.Run(policy+" skips ejected endpoints while others are up", func(t *testing.T) {
			_, c := testCluster(t, policy, addresses...)
			list := c.endpoints.Load().list
			list[0].failed()
			list[1].failed()
			for range 50 {
				if got := c.pick(nil); got != list[2] {
					t.Fatalf("picked %s, want the endpoint that is not ejected", got.Address)
				}
			}
		})

		t.Run(policy+" tries an ejected endpoint when all are ejected", func(t *testing.T) {
			_, c := testCluster(t, policy, addresses...)
			for _, e := range c.endpoints.Load().list {
				e.failed()
			}
			if c.pick(nil) == nil {
				t.Fatal("picked nothing")
			}
		})
	}

	t.Run("least-request prefers the endpoint with fewer requests in flight", func(t *testing.T) {
		_, c := testCluster(t, LeastRequest, addresses[:2]...)
		list := c.endpoints.Load().list
		list[0].active.Store(5)
		for range 50 {
			if got := c.pick(nil); got != list[1] {
				t.Fatalf("picked %s with 5 requests in flight", got.Address)
			}
		}
	})

	t.Run("no endpoint picks nothing", func(t *testing.T) {
		_, c := testCluster(t, RoundRobin)
		if c.pick(nil) != nil {
			t.Fatal("picked an endpoint of an empty cluster")
		}
	})
}

func TestEjection(t *testing.T) {
	e := &endpoint{}
	var last time.Time
	for n := 1; n <= 8; n++ {
		e.failed()
		until := time.Unix(0, e.ejectedUntil.Load())
		if !e.ejected() || !until.After(last) || time.Until(until) > maxEjection {
			t.Fatalf("after %d failures: ejected until %v", n, until)
		}
		last = until
	}
	e.succeeded()
	if e.ejected() || e.failures.Load() != 0 {
		t.Fatal("a successful connect did not end the ejection")
	}
}

func TestSetEndpoints(t *testing.T) {
	const id = "spiffe://cluster.local/ns/default/sa/echo"
	tests := []struct {
		name    string
		cluster string
		eps     []Endpoint
		wantErr string
	}{
		{name: "accepts IPv4 and IPv6 endpoints", cluster: sni("http"), eps: []Endpoint{{"10.0.0.1:15006", id}, {"[fd00::1]:15006", id}}},
		{name: "accepts no endpoint", cluster: sni("http")},
		{name: "refuses a cluster that is not an upstream", cluster: "http.other.default", wantErr: "not an upstream"},
		{name: "refuses an address without a port", cluster: sni("http"), eps: []Endpoint{{"10.0.0.1", id}}, wantErr: "not ip:port"},
		{name: "refuses a host name", cluster: sni("http"), eps: []Endpoint{{"echo:15006", id}}, wantErr: "not ip:port"},
		{name: "refuses an identity that is not a SPIFFE ID", cluster: sni("http"), eps: []Endpoint{{"10.0.0.1:15006", "echo"}}, wantErr: "not a SPIFFE ID"},
		{name: "refuses an address given twice with two identities", cluster: sni("http"),
			eps: []Endpoint{{"10.0.0.1:15006", id}, {"10.0.0.1:15006", id + "2"}}, wantErr: "twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, _ := testCluster(t, RoundRobin)
			err := p.SetEndpoints(tt.cluster, tt.eps)
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

	t.Run("an endpoint that stays keeps its state and connections", func(t *testing.T) {
		p, c := testCluster(t, RoundRobin, "10.0.0.1:15006", "10.0.0.2:15006")
		kept := c.endpoints.Load().byAddress["10.0.0.2:15006"]
		kept.failed()
		if err := p.SetEndpoints(sni("http"), []Endpoint{{"10.0.0.2:15006", id}, {"10.0.0.3:15006", id}}); err != nil {
			t.Fatal(err)
		}
		set := c.endpoints.Load()
		if set.byAddress["10.0.0.2:15006"] != kept || !kept.ejected() {
			t.Fatal("the endpoint that stayed was replaced")
		}
		if set.byAddress["10.0.0.1:15006"] != nil || len(set.list) != 2 {
			t.Fatalf("endpoints %v", set.list)
		}
	})

	t.Run("an endpoint whose identity changes is replaced", func(t *testing.T) {
		p, c := testCluster(t, RoundRobin, "10.0.0.1:15006")
		before := c.endpoints.Load().list[0]
		if err := p.SetEndpoints(sni("http"), []Endpoint{{"10.0.0.1:15006", "spiffe://cluster.local/ns/default/sa/other"}}); err != nil {
			t.Fatal(err)
		}
		if c.endpoints.Load().list[0] == before {
			t.Fatal("the endpoint kept a TLS configuration that verifies the old identity")
		}
	})
}

// TestAConnectThatFailsForAMomentIsRetriedOnTheOnlyEndpoint: a MeshService with one ready pod
// whose proxy does not accept for a moment (it hands its listeners over, or restarts) costs its
// clients a short wait, not a 503.
func TestAConnectThatFailsForAMomentIsRetriedOnTheOnlyEndpoint(t *testing.T) {
	f := newFixture(t)
	appPort := startHTTPApp(t, echoApp("http"), false)
	// The server's address, with nothing listening on it yet.
	reserved, _ := listenLocal(t)
	serverAddr := reserved.Addr().String()
	_ = reserved.Close()
	client, local := f.clientProxy(Options{}, "http")
	f.pointAt(client, serverAddr, "http")

	go func() {
		time.Sleep(30 * time.Millisecond)
		cfg := proxyconfig.Config{MeshService: serverService, ControlPlane: "control-plane:15012", InboundPort: 15006,
			MTLSMode: "STRICT", Ports: []proxyconfig.Port{{Name: "http", Port: appPort, Protocol: "HTTP"}}}
		server := f.newProxy(cfg, Options{}, serverService)
		l, err := net.Listen("tcp", serverAddr)
		if err != nil {
			t.Errorf("listening on the server's address again: %v", err)
			return
		}
		if err := server.Start(map[string]net.Listener{InboundListener: l}); err != nil {
			t.Error(err)
		}
	}()
	res, _ := mustGet(t, h1Client(), "http://"+local["http"]+"/")
	if res.StatusCode != http.StatusOK || res.Header.Get("X-App") != "http" {
		t.Fatalf("answered %d by %q; want 200 from the app once its proxy listens", res.StatusCode, res.Header.Get("X-App"))
	}
	if got := counter(client.metrics.requestErrors.WithLabelValues("outbound", sni("http"), reasonConnect)); got != 0 {
		t.Errorf("the request failed with a connect error (%v) instead of waiting for the endpoint", got)
	}
}
