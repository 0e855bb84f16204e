package proxy

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/meshlift/meshlift/internal/capture"
	"github.com/meshlift/meshlift/internal/capture/netnstest"
	outroutes "github.com/meshlift/meshlift/internal/outbound"
	"github.com/meshlift/meshlift/internal/proxyconfig"
	"github.com/meshlift/meshlift/internal/testutil/latency"
)

// The client pod network of BenchmarkCapturedVersusExplicitTwoHops (its own namespaces, so its
// own addresses: nothing here is seen outside them).
const (
	benchPodIP       = "10.96.7.2"
	benchPeerIP      = "10.96.7.1"
	benchServiceIP   = "10.96.7.100" // plays a Service ClusterIP: routed out of eth0, nobody has it
	benchServicePort = 80
	// benchLocalPort is the explicit upstream's local port, in the pod's namespace.
	benchLocalPort = 18080
)

// capturedVersusExplicit is one client proxy and one server proxy (STRICT, in front of an app
// that allocates nothing per request), with the client proxy reachable from a client pod's
// network namespace in two ways: its explicit upstream listener on 127.0.0.1:benchLocalPort,
// and its capture listener on 127.0.0.1:15007 behind internal/capture's outbound rules, which
// redirect the app's connections to benchServiceIP:benchServicePort there. The outbound route of
// that address names the explicit upstream's cluster, so the proxy serves a captured connection
// with the very target, route, endpoint and pool of mTLS connections of the explicit listener:
// what differs is only what capture adds.
//
// Both listeners are inside the pod's namespace (netnstest.Listen), and the app dials both from
// there, so an explicit connection is the same kind of dial (loopback, in a namespace whose nat
// hooks are registered, so conntrack sees it too) as a captured one, minus the redirect. As in
// captured_test.go, the proxies' goroutines run in the test's own namespace (a test artifact: a
// pod's proxy shares the pod's namespace): they accept on the pod's sockets and dial the server
// proxy and the app on the test's 127.0.0.1.
//
// The server hop is the same in both modes, and the server pod is not captured here: a
// captured server pod would need the client proxy, whose goroutines run in the test's
// namespace, to reach a server pod address in another namespace, which takes a route and an
// interface in the test's namespace (the machine's own, not ours to change) or a dial hook for
// endpoints in the proxy (it has one for passthrough destinations only). It would not change
// the comparison: mesh clients dial the server proxy's 15006 directly, and inbound capture
// leaves connections to 15006 alone (the proxy ports return before the redirect); it only
// redirects connections to app ports, which mTLS from a proxy never uses. So explicit versus
// captured here is exactly the cost of outbound capture.
type capturedVersusExplicit struct {
	pod                *netnstest.NetNS
	explicit, captured string // URLs the app calls
}

func newCapturedVersusExplicit(b *testing.B) *capturedVersusExplicit {
	b.Helper()
	pod, _ := capturedPod(b, benchPodIP, benchPeerIP, false, true) // skips the benchmark when not root

	// The app and the server proxy, as in BenchmarkTwoHops.
	l, appPort := listenLocal(b)
	b.Cleanup(func() { _ = l.Close() })
	go latency.Serve(l, len(benchBody))
	f := newFixture(b)
	_, serverAddr := f.serverProxy("STRICT", Options{AppProbePort: -1}, proxyconfig.Port{Name: "http", Port: appPort, Protocol: "HTTP"})

	// The client proxy: an explicit upstream to port http of echo and outbound capture.
	cfg := proxyconfig.Config{MeshService: "client", ControlPlane: "control-plane:15012", InboundPort: 15006, MTLSMode: "STRICT",
		Upstreams: []proxyconfig.Upstream{{MeshService: serverService, Namespace: testNamespace, Port: "http", LocalPort: benchLocalPort}}}
	client := f.newProxy(cfg, Options{AppProbePort: -1, CaptureOutbound: true}, "client")
	explicit := pod.Listen(b, "tcp", "127.0.0.1:"+strconv.Itoa(benchLocalPort))
	captured := pod.Listen(b, "tcp", fmt.Sprintf("127.0.0.1:%d", capture.DefaultOutboundPort))
	if err := client.Start(map[string]net.Listener{OutboundListener(benchLocalPort): explicit, CaptureListener: captured}); err != nil {
		b.Fatal(err)
	}
	client.SetOutboundRoutes(routesTable(b, outroutes.Chain{
		Route: outroutes.Route{Cluster: sni("http"), Protocol: "HTTP"},
		Port:  benchServicePort, Addrs: []netip.Addr{netip.MustParseAddr(benchServiceIP)},
	}))
	f.pointAt(client, serverAddr, "http")
	setup := &capturedVersusExplicit{
		pod:      pod,
		explicit: "http://127.0.0.1:" + strconv.Itoa(benchLocalPort) + "/",
		captured: "http://" + benchServiceIP + ":" + strconv.Itoa(benchServicePort) + "/",
	}
	// One request each way; then the captured one must have been served by the explicit
	// upstream's target, or the comparison would not be of the same path.
	for _, url := range []string{setup.explicit, setup.captured} {
		(&benchClient{pod: pod, conn: latency.NewConn(url, benchBody)}).post(b, false)
	}
	client.capturedMu.Lock()
	same := client.captured[sni("http")] == client.outbound[OutboundListener(benchLocalPort)]
	client.capturedMu.Unlock()
	if !same {
		b.Fatal("the captured connection was not served by the explicit upstream's target")
	}
	return setup
}

// benchClient is the app's client of one mode: a latency.Conn (nothing allocated per request
// once connected) whose connections are made in the pod's network namespace. latency.Conn dials
// with net.Dial on the goroutine that calls Do when it has no connection, so the requests that
// connect are made inside netnstest's Do (a thread locked in the pod's namespace for the call);
// a socket stays in the namespace it was made in, so the requests on an open connection are made
// from the benchmark's goroutine. A failed request closes the connection and fails the
// benchmark, so no request is ever dialed from the test's own namespace.
//
// (A goroutine locked once in the pod's namespace that takes the requests over a channel,
// instead of a Do per connection, was tried: its medians were some 50µs higher in both modes.)
type benchClient struct {
	pod   *netnstest.NetNS
	conn  *latency.Conn
	open  bool
	times []time.Duration
}

// connectAndPost connects from the pod's namespace as the app (root, whose connections are
// captured) and sends one request; with keep false it closes the connection after the
// response. The time is connect + request + response, measured by latency.Conn on the thread
// in the pod's namespace: it includes neither entering the namespace nor closing the
// connection.
func (c *benchClient) connectAndPost(b *testing.B, keep bool) time.Duration {
	var elapsed time.Duration
	err := c.pod.Do(-1, func() (err error) { // -1: as the test's user, root, as the app
		elapsed, err = c.conn.Do()
		if !keep {
			c.conn.Close()
		}
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	c.open = keep
	return elapsed
}

// post sends one request, on the open connection when keepAlive, else on a new one.
func (c *benchClient) post(b *testing.B, keepAlive bool) time.Duration {
	if !keepAlive || !c.open {
		return c.connectAndPost(b, keepAlive)
	}
	elapsed, err := c.conn.Do()
	if err != nil {
		c.open = false
		b.Fatal(err)
	}
	return elapsed
}

// BenchmarkCapturedVersusExplicitTwoHops measures, in one run and through the same client and
// server proxies, the latency of an HTTP/1.1 request with 1 KB bodies each way from an app in a
// client pod's network namespace to the server proxy's app, called
//
//   - explicit: at the client proxy's explicit upstream listener, 127.0.0.1:<localPort>;
//   - captured: at a Service address, which the pod's outbound capture rules redirect to the
//     client proxy's capture listener, 127.0.0.1:15007, where the proxy reads the original
//     destination (SO_ORIGINAL_DST) and routes it by its outbound table to the same cluster;
//
// then mTLS to the server proxy (the same pooled upstream connection in both modes) and its app.
// See capturedVersusExplicit for why the server hop is the same in both.
//
// Sub-benchmarks are the app's connection patterns:
//
//   - keepalive: one connection per mode, many requests. The redirect, the conntrack entry and
//     the proxy's lookups are paid at connect only; what remains on an open connection is the
//     NAT of each of its packets (the app's socket talks to the Service address, the proxy's
//     to 127.0.0.1:15007: the kernel rewrites both ways), a few microseconds at p50 on a
//     2-CPU VM. The proxy serves both with the same target.
//   - newconn: a new connection per request. Each time is connect + request + response (the
//     TCP handshake over loopback; in captured mode also the nat rule evaluation, the redirect
//     and its conntrack entry, and in the proxy the SO_ORIGINAL_DST lookup, the route lookup
//     and the target lookup), measured from the app's dial to the end of the response body.
//     It includes neither entering the pod's namespace (netnstest's Do: a locked thread and
//     two setns per connection) nor closing the connection. Both modes dial the same way, on a
//     thread locked in the pod's namespace, so what the locked thread adds (its wake-ups go
//     through that one thread) is added to both.
//
// Each iteration sends one request of each mode, taking turns at going first, paced at 1,000
// iterations per second (-benchtime=3000x for three seconds). It reports, per mode, p50 and p99
// (<q>-explicit-µs, <q>-captured-µs) and what capture adds (<q>-capture-added-µs, captured minus
// explicit; it can be negative by noise), and logs a one-line summary. Only numbers: no timed
// assertion; a request without its response fails the benchmark. It needs root (network
// namespaces and nftables) and is skipped without it.
func BenchmarkCapturedVersusExplicitTwoHops(b *testing.B) {
	setup := newCapturedVersusExplicit(b)
	for _, pattern := range []struct {
		name      string
		keepAlive bool
	}{{"keepalive", true}, {"newconn", false}} {
		b.Run(pattern.name, func(b *testing.B) {
			modes := [2]*benchClient{
				{pod: setup.pod, conn: latency.NewConn(setup.explicit, benchBody)},
				{pod: setup.pod, conn: latency.NewConn(setup.captured, benchBody)},
			}
			defer func() {
				for _, m := range modes {
					m.conn.Close()
				}
			}()
			for range 200 { // warm the pools, the TLS sessions and the routes
				for _, m := range modes {
					m.post(b, pattern.keepAlive)
				}
			}
			for _, m := range modes {
				m.times = make([]time.Duration, 0, b.N)
			}
			ticker := time.NewTicker(time.Millisecond)
			defer ticker.Stop()
			b.ResetTimer()
			for i := range b.N {
				<-ticker.C
				// The first request after the pause wakes everything up: take turns.
				for k := range 2 {
					m := modes[(i+k)%2]
					m.times = append(m.times, m.post(b, pattern.keepAlive))
				}
			}
			b.StopTimer()
			reportCapturedVersusExplicit(b, pattern.name, modes[0].times, modes[1].times)
		})
	}
}

func reportCapturedVersusExplicit(b *testing.B, pattern string, explicit, captured []time.Duration) {
	slices.Sort(explicit)
	slices.Sort(captured)
	summary := fmt.Sprintf("%s, %d requests each:", pattern, len(explicit))
	for _, q := range []struct {
		name string
		p    float64
	}{{"p50", .5}, {"p99", .99}} {
		e, c := latency.Percentile(explicit, q.p), latency.Percentile(captured, q.p)
		b.ReportMetric(microseconds(e), q.name+"-explicit-µs")
		b.ReportMetric(microseconds(c), q.name+"-captured-µs")
		b.ReportMetric(microseconds(c-e), q.name+"-capture-added-µs")
		summary += fmt.Sprintf(" %s explicit %.1fµs captured %.1fµs (%+.1fµs);", q.name, microseconds(e), microseconds(c), microseconds(c-e))
	}
	b.Logf("%s", summary[:len(summary)-1])
}

func microseconds(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
