package proxy_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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
	// A client that allocates nothing per request: the test process's own garbage collection
	// would otherwise weigh on the figures (see BenchmarkTwoHops).
	paths := []struct {
		conn  *latency.Conn
		times []time.Duration
	}{{conn: latency.NewConn(m.target, body)}, {conn: latency.NewConn(relayed, body)}, {conn: latency.NewConn(m.app, body)}}
	for range 200 { // warm the pools and TLS sessions
		for i := range paths {
			paths[i].conn.Post(b)
		}
	}
	ticker := time.NewTicker(time.Millisecond)
	defer ticker.Stop()
	for i := 0; b.Loop(); i++ {
		<-ticker.C
		// The first request after the pause wakes everything up: take turns.
		for k := range paths {
			path := &paths[(i+k)%len(paths)]
			path.times = append(path.times, path.conn.Post(b))
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

// BenchmarkTwoHopsProcessesThroughput measures what two meshlift-proxy processes sharing one
// CPU can carry: both are pinned to the machine's last CPU, and 32 keep-alive clients send 1 KB
// requests through them (app → client proxy → mTLS → server proxy → meshlift-demo serve) as
// fast as they are answered. It reports requests per second and the CPU time each proxy spent
// per request (one proxy on one core carries 1e6 / that many requests per second).
func BenchmarkTwoHopsProcessesThroughput(b *testing.B) {
	m := newMesh(b)
	body := bytes.Repeat([]byte("x"), 1024)
	proxies := []struct {
		name string
		p    *proxyProcess
		cpu  time.Duration
	}{{name: "client", p: m.client.running[1]}, {name: "server", p: m.echo.running[1]}}
	last := runtime.NumCPU() - 1
	for _, w := range proxies {
		if err := pin(w.p.cmd.Process.Pid, last); err != nil {
			b.Fatalf("pinning the %s proxy to CPU %d: %v", w.name, last, err)
		}
	}
	time.Sleep(1500 * time.Millisecond) // the Go runtime of the proxies sees one CPU: GOMAXPROCS 1
	warm := latency.NewConn(m.target, body)
	for range 200 {
		warm.Post(b)
	}
	warm.Close()
	for i := range proxies {
		proxies[i].cpu = -cpuTime(b, proxies[i].p.cmd.Process.Pid)
	}
	var failed atomic.Int64
	b.SetParallelism(16)
	start := time.Now()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c := latency.NewConn(m.target, body)
		defer c.Close()
		for pb.Next() {
			if _, err := c.Do(); err != nil {
				failed.Add(1)
			}
		}
	})
	b.StopTimer()
	elapsed := time.Since(start)
	if failed.Load() > 0 {
		b.Fatalf("%d requests failed", failed.Load())
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
	for i := range proxies {
		proxies[i].cpu += cpuTime(b, proxies[i].p.cmd.Process.Pid)
		b.ReportMetric(float64(proxies[i].cpu.Microseconds())/float64(b.N), proxies[i].name+"-proxy-CPU-µs/req")
	}
}

// pin binds every thread of process pid to CPU cpu (threads it starts later inherit it).
func pin(pid, cpu int) error {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return err
	}
	var set unix.CPUSet
	set.Set(cpu)
	for _, task := range tasks {
		tid, err := strconv.Atoi(task.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &set); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("thread %d: %w", tid, err)
		}
	}
	return nil
}

// cpuTime is the user and system CPU time process pid has used (Linux /proc, clock ticks of 10 ms).
func cpuTime(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	// The fields after the command name, which is in parentheses: utime and stime are the 12th and 13th.
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	var ticks int64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			tb.Fatalf("parsing /proc/%d/stat: %v", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond
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
