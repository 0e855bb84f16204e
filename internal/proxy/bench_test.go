package proxy

import (
	"bytes"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshlift/meshlift/internal/proxyconfig"
	"github.com/meshlift/meshlift/internal/testutil/latency"
)

// benchBody is the request and response body of the benchmarks (1 KB).
var benchBody = bytes.Repeat([]byte("x"), 1024)

// twoHops is client -> client proxy (outbound) -> mTLS -> server proxy (inbound) -> app, next
// to the app's own address for the direct baseline and to two plain TCP relays in front of the
// app (relayed): the floor of what any two extra hops cost on the machine.
type twoHops struct {
	direct, proxied, relayed string
}

func newTwoHops(b testing.TB) twoHops {
	b.Helper()
	// The app and the clients allocate nothing per request (latency.Serve, latency.Conn): what
	// they would allocate with net/http (about 45 objects per request) makes the garbage
	// collector of the process run every few hundred milliseconds, taking a whole CPU of two from
	// the proxies, which never happens to a proxy in its own process (two allocations per
	// request through both).
	l, appPort := listenLocal(b)
	b.Cleanup(func() { _ = l.Close() })
	go latency.Serve(l, len(benchBody))
	f := newFixture(b)
	_, serverAddr := f.serverProxy("STRICT", Options{}, proxyconfig.Port{Name: "http", Port: appPort, Protocol: "HTTP"})
	client, local := f.clientProxy(Options{}, "http")
	f.pointAt(client, serverAddr, "http")
	appAddr := "127.0.0.1:" + strconv.Itoa(appPort)
	relayed := startRelay(b, startRelay(b, appAddr))
	return twoHops{direct: "http://" + appAddr + "/", proxied: "http://" + local["http"] + "/", relayed: "http://" + relayed + "/"}
}

// startRelay pipes every connection it accepts to a new connection to address, as the proxy
// pipes TCP streams, and returns where it listens.
func startRelay(b testing.TB, address string) string {
	l, _ := listenLocal(b)
	b.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			down, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				up, err := net.Dial("tcp", address)
				if err != nil {
					_ = down.Close()
					return
				}
				pipe(down, up)
			}()
		}
	}()
	return l.Addr().String()
}

// BenchmarkTwoHops measures the latency two proxies add to an HTTP/1.1 keep-alive request with
// 1 KB bodies each way: each iteration sends one request through both proxies, one through two
// plain TCP relays and one straight to the app, paced at 1,000 per second (use
// -benchtime=5000x for five seconds), and reports the percentiles and what the proxies and the
// relays add to the direct ones. It also reports the resident memory of the whole test process
// (client, app, relays and both proxies).
func BenchmarkTwoHops(b *testing.B) {
	setup := newTwoHops(b)
	direct, proxied, relayed := latency.NewConn(setup.direct, benchBody), latency.NewConn(setup.proxied, benchBody),
		latency.NewConn(setup.relayed, benchBody)
	for range 200 { // warm the pools and TLS sessions
		direct.Post(b)
		proxied.Post(b)
		relayed.Post(b)
	}
	directTimes := make([]time.Duration, 0, b.N)
	proxiedTimes := make([]time.Duration, 0, b.N)
	relayedTimes := make([]time.Duration, 0, b.N)
	ticker := time.NewTicker(time.Millisecond)
	defer ticker.Stop()
	b.ResetTimer()
	for i := range b.N {
		<-ticker.C
		// The first request after the pause wakes everything up: take turns.
		for k := range 3 {
			switch (i + k) % 3 {
			case 0:
				proxiedTimes = append(proxiedTimes, proxied.Post(b))
			case 1:
				relayedTimes = append(relayedTimes, relayed.Post(b))
			case 2:
				directTimes = append(directTimes, direct.Post(b))
			}
		}
	}
	b.StopTimer()
	latency.ReportAdded(b, directTimes, proxiedTimes, relayedTimes)
	if rss, _, err := latency.ResidentMB(os.Getpid()); err == nil {
		b.ReportMetric(rss, "process-RSS-MB")
	}
}

// BenchmarkTwoHopsUnpaced is BenchmarkTwoHops back to back, without pacing: the latency of the
// data path when it is the only thing running.
func BenchmarkTwoHopsUnpaced(b *testing.B) {
	setup := newTwoHops(b)
	for _, path := range []struct{ name, url string }{{"direct", setup.direct}, {"proxied", setup.proxied}} {
		b.Run(path.name, func(b *testing.B) {
			c := latency.NewConn(path.url, benchBody)
			for range 200 {
				c.Post(b)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				c.Post(b)
			}
		})
	}
}

// BenchmarkTwoHopsThroughput sends 1 KB requests from 32 concurrent keep-alive clients, straight
// to the app and through both proxies, and reports requests per second.
func BenchmarkTwoHopsThroughput(b *testing.B) {
	setup := newTwoHops(b)
	for _, path := range []struct{ name, url string }{{"direct", setup.direct}, {"proxied", setup.proxied}} {
		b.Run(path.name, func(b *testing.B) {
			var failed atomic.Int64
			b.SetParallelism(16)
			b.ReportAllocs()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				c := latency.NewConn(path.url, benchBody)
				defer c.Close()
				for pb.Next() {
					if _, err := c.Do(); err != nil {
						failed.Add(1)
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
			if failed.Load() > 0 {
				b.Fatalf("%d requests failed", failed.Load())
			}
		})
	}
}
