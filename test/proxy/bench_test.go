package proxy_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/meshlift/meshlift/internal/testutil/latency"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

// BenchmarkTwoHopsProcesses measures the latency two meshlift-proxy processes add to an
// HTTP/1.1 keep-alive request with 1 KB bodies each way (app → client proxy → mTLS → server
// proxy → meshlift-demo serve), at 1,000 requests per second: each iteration sends one request
// through both proxies, one through two plain TCP relay processes (the floor of what two extra
// processes on the way cost on the machine) and one straight to the echo app, and the
// percentiles and what the proxies and the relays add to the direct ones are reported, with the
// resident memory of each proxy process after the run. Unlike BenchmarkTwoHops
// (internal/proxy), the proxies have runtimes and garbage collectors of their own, as in a pod.
// Use -benchtime=5000x for five seconds.
func BenchmarkTwoHopsProcesses(b *testing.B) {
	m := newMesh(b)
	relayed := "http://" + startRelay(b, startRelay(b, strings.TrimSuffix(strings.TrimPrefix(m.app, "http://"), "/"))) + "/"
	body := bytes.Repeat([]byte("x"), 1024)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}, Timeout: 10 * time.Second}
	post := func(url string) time.Duration { return latency.Post(b, client, url, body) }
	paths := []struct {
		url   string
		times []time.Duration
	}{{url: m.target}, {url: relayed}, {url: m.app}}
	for range 200 { // warm the pools and TLS sessions
		for i := range paths {
			post(paths[i].url)
		}
	}
	ticker := time.NewTicker(time.Millisecond)
	defer ticker.Stop()
	for i := 0; b.Loop(); i++ {
		<-ticker.C
		// The first request after the pause wakes everything up: take turns.
		for k := range paths {
			path := &paths[(i+k)%len(paths)]
			path.times = append(path.times, post(path.url))
		}
	}
	latency.ReportAdded(b, paths[2].times, paths[0].times, paths[1].times)
	for _, w := range []struct {
		name string
		p    *proxyProcess
	}{{"client", m.client.running[1]}, {"server", m.echo.running[1]}} {
		rss, peak, err := latency.ResidentMB(w.p.cmd.Process.Pid)
		if err != nil {
			b.Fatalf("reading the memory of the %s proxy: %v", w.name, err)
		}
		b.ReportMetric(rss, w.name+"-proxy-RSS-MB")
		b.ReportMetric(peak, w.name+"-proxy-peak-RSS-MB")
	}
}

// relayTargetEnv makes the test binary a relay to its address (see runRelay).
const relayTargetEnv = "MESHLIFT_TEST_RELAY_TARGET"

// startRelay runs this test binary as a relay process to target and returns its address.
func startRelay(tb testing.TB, target string) string {
	tb.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), relayTargetEnv+"="+target)
	p := startProcess(tb, "relay to "+target, cmd)
	var address string
	testenv.Eventually(tb, timeout, func(context.Context) (bool, string) {
		address, _, _ = strings.Cut(p.output.String(), "\n")
		return strings.HasSuffix(p.output.String(), "\n"), "the relay has not said where it listens"
	})
	return address
}

// runRelay pipes every connection to 127.0.0.1:0 to a new connection to target, both ways,
// until it is killed; it first prints where it listens.
func runRelay(target string) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(l.Addr().String())
	for {
		down, err := l.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		go func() {
			defer down.Close()
			up, err := net.Dial("tcp", target)
			if err != nil {
				return
			}
			defer up.Close()
			go func() { _, _ = io.Copy(up, down) }()
			_, _ = io.Copy(down, up)
		}()
	}
}
