package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshlift/meshlift/internal/proxyconfig"
)

// blockingApp answers /block once released, anything else at once.
type blockingApp struct {
	entered chan struct{}
	release chan struct{}
}

func newBlockingApp() *blockingApp {
	return &blockingApp{entered: make(chan struct{}, 16), release: make(chan struct{})}
}

func (a *blockingApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/block" {
		a.entered <- struct{}{}
		<-a.release
	}
	_, _ = io.Copy(io.Discard, r.Body)
	_, _ = io.WriteString(w, "done")
}

// successor starts a second proxy with p's configuration on copies of p's listening sockets,
// as a handoff does across processes (SCM_RIGHTS), here in one process.
func (f *fixture) successor(p *Proxy, serviceAccount string) *Proxy {
	f.tb.Helper()
	next := f.newProxy(p.cfg, Options{}, serviceAccount)
	copies := map[string]net.Listener{}
	for name, l := range p.Listeners() {
		file, err := l.(*net.TCPListener).File()
		if err != nil {
			f.tb.Fatal(err)
		}
		_ = file.Fd() // as handoff.Conn.Send does: it makes the shared socket blocking
		copied, err := net.FileListener(file)
		_ = file.Close()
		if err != nil {
			f.tb.Fatal(err)
		}
		copies[name] = copied
	}
	if err := next.Start(copies); err != nil {
		f.tb.Fatal(err)
	}
	return next
}

func rawGet(t *testing.T, conn net.Conn, reader *bufio.Reader, path string) *http.Response {
	t.Helper()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: echo\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(reader, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadAll(res.Body)
	_ = res.Body.Close()
	return res
}

func TestStopAccepting(t *testing.T) {
	f := newFixture(t)
	_, serverAddr := f.serverProxy("STRICT", Options{}, proxyconfig.Port{Name: "http", Port: startHTTPApp(t, echoApp("app"), false), Protocol: "HTTP"})

	t.Run("a client connecting while stopped is not refused and is served after ResumeAccepting", func(t *testing.T) {
		client, local := f.clientProxy(Options{}, "http")
		f.pointAt(client, serverAddr, "http")
		client.StopAccepting()
		conn, err := net.Dial("tcp", local["http"])
		if err != nil {
			t.Fatalf("connection refused while stopped: %v", err)
		}
		defer conn.Close()
		if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: echo\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		if err := client.ResumeAccepting(); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil || res.StatusCode != http.StatusOK {
			t.Fatalf("queued client got %v, %v", res, err)
		}
	})

	t.Run("a second proxy holding a copy of the socket serves the clients the first stopped accepting", func(t *testing.T) {
		old, local := f.clientProxy(Options{}, "http")
		f.pointAt(old, serverAddr, "http")
		next := f.successor(old, "client")
		f.pointAt(next, serverAddr, "http")
		old.StopAccepting()
		before := counter(old.metrics.connections[outbound])
		for range 5 {
			res, _ := mustGet(t, &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}, "http://"+local["http"]+"/")
			if res.StatusCode != http.StatusOK {
				t.Fatalf("got %s", res.Status)
			}
		}
		if got := counter(old.metrics.connections[outbound]); got != before {
			t.Errorf("the stopped proxy accepted %v connections", got-before)
		}
		if got := counter(next.metrics.connections[outbound]); got != 5 {
			t.Errorf("the new proxy accepted %v connections, want 5", got)
		}
	})
}

func TestStopAcceptingAfterTheSocketWasMadeBlocking(t *testing.T) {
	f := newFixture(t)
	_, serverAddr := f.serverProxy("STRICT", Options{}, proxyconfig.Port{Name: "http", Port: startHTTPApp(t, echoApp("app"), false), Protocol: "HTTP"})
	client, local := f.clientProxy(Options{}, "http")
	f.pointAt(client, serverAddr, "http")
	// What a handoff does to send the socket: os.File.Fd on a copy makes the shared socket
	// blocking, and the next accept waits in the kernel where no deadline reaches it.
	for _, l := range client.Listeners() {
		file, err := l.(*net.TCPListener).File()
		if err != nil {
			t.Fatal(err)
		}
		_ = file.Fd()
		defer file.Close()
	}
	oneShot := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	if res, _ := mustGet(t, oneShot, "http://"+local["http"]+"/"); res.StatusCode != http.StatusOK {
		t.Fatalf("got %s", res.Status)
	}

	stopped := make(chan struct{})
	go func() {
		client.StopAccepting()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(time.Minute): // a guard against hanging, not a measure
		t.Fatal("StopAccepting did not return")
	}
	if err := client.ResumeAccepting(); err != nil {
		t.Fatal(err)
	}
	if res, _ := mustGet(t, oneShot, "http://"+local["http"]+"/"); res.StatusCode != http.StatusOK {
		t.Fatalf("after resuming: %s", res.Status)
	}
}

func TestDrain(t *testing.T) {
	f := newFixture(t)
	app := newBlockingApp()
	_, serverAddr := f.serverProxy("STRICT", Options{},
		proxyconfig.Port{Name: "http", Port: startHTTPApp(t, app, false), Protocol: "HTTP"},
		proxyconfig.Port{Name: "grpc", Port: startHTTPApp(t, app, true), Protocol: "GRPC"})
	old, local := f.clientProxy(Options{}, "http", "grpc")
	f.pointAt(old, serverAddr, "http", "grpc")

	// An HTTP/1.1 keep-alive client, an idle keep-alive connection and an HTTP/2 client, all
	// connected to the old proxy.
	h1, h2 := h1Client(), h2cClient()
	for _, url := range []string{"http://" + local["http"] + "/fast", "http://" + local["grpc"] + "/fast"} {
		client := h1
		if strings.Contains(url, local["grpc"]) {
			client = h2
		}
		if res, _ := mustGet(t, client, url); res.StatusCode != http.StatusOK {
			t.Fatalf("%s: %s", url, res.Status)
		}
	}
	// Two idle keep-alive connections: one will send a request during the drain, one not.
	idle := make([]net.Conn, 2)
	idleReaders := make([]*bufio.Reader, 2)
	for i := range idle {
		conn, err := net.Dial("tcp", local["http"])
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		idle[i], idleReaders[i] = conn, bufio.NewReader(conn)
		rawGet(t, conn, idleReaders[i], "/fast")
	}

	// One request in flight on each protocol.
	type result struct {
		res *http.Response
		err error
	}
	inflight1, inflight2 := make(chan result, 1), make(chan result, 1)
	go func() {
		res, err := h1.Get("http://" + local["http"] + "/block")
		if err == nil {
			_, _ = io.ReadAll(res.Body)
			_ = res.Body.Close()
		}
		inflight1 <- result{res, err}
	}()
	<-app.entered
	go func() {
		res, err := h2.Get("http://" + local["grpc"] + "/block")
		if err == nil {
			_, _ = io.ReadAll(res.Body)
			_ = res.Body.Close()
		}
		inflight2 <- result{res, err}
	}()
	<-app.entered

	next := f.successor(old, "client")
	f.pointAt(next, serverAddr, "http", "grpc")
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		drained <- old.Drain(ctx)
	}()

	eventually(t, "the drain starts", old.isDraining)

	t.Run("a request on an idle keep-alive connection is answered with Connection: close", func(t *testing.T) {
		res := rawGet(t, idle[0], idleReaders[0], "/fast")
		if res.StatusCode != http.StatusOK || !res.Close {
			t.Fatalf("got %s with Close=%v, want 200 closing the connection", res.Status, res.Close)
		}
		if _, err := idleReaders[0].ReadByte(); err == nil || isTimeout(err) {
			t.Fatalf("connection still open after Connection: close: %v", err)
		}
	})

	t.Run("a keep-alive connection that stays idle is closed", func(t *testing.T) {
		_ = idle[1].SetReadDeadline(time.Now().Add(10 * time.Second))
		if b, err := idleReaders[1].ReadByte(); err == nil || isTimeout(err) {
			t.Fatalf("idle connection: read %q, %v; want it closed", b, err)
		}
	})

	close(app.release)

	t.Run("the in-flight HTTP/1.1 request completes with Connection: close", func(t *testing.T) {
		r := <-inflight1
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.res.StatusCode != http.StatusOK || !r.res.Close {
			t.Fatalf("got %s with Close=%v, want 200 closing the connection", r.res.Status, r.res.Close)
		}
	})

	t.Run("the in-flight HTTP/2 request completes", func(t *testing.T) {
		r := <-inflight2
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.res.StatusCode != http.StatusOK {
			t.Fatalf("got %s", r.res.Status)
		}
	})

	t.Run("drain returns once every connection is gone", func(t *testing.T) {
		if err := <-drained; err != nil {
			t.Fatal(err)
		}
		if got := counter(old.metrics.activeConnections[outbound]); got != 0 {
			t.Fatalf("%v connections still open", got)
		}
	})

	t.Run("the same clients go on with the new proxy without a failed request", func(t *testing.T) {
		before := counter(next.metrics.connections[outbound])
		for range 3 {
			if res, _ := mustGet(t, h1, "http://"+local["http"]+"/fast"); res.StatusCode != http.StatusOK {
				t.Fatalf("HTTP/1.1: %s", res.Status)
			}
			if res, _ := mustGet(t, h2, "http://"+local["grpc"]+"/fast"); res.StatusCode != http.StatusOK {
				t.Fatalf("HTTP/2: %s", res.Status)
			}
		}
		if got := counter(next.metrics.connections[outbound]); got < before+2 {
			t.Errorf("the new proxy accepted %v connections, want the two clients'", got-before)
		}
	})

	t.Run("the old proxy resumes accepting after its drain when the new one dies", func(t *testing.T) {
		_ = next.Close()
		if err := old.ResumeAccepting(); err != nil {
			t.Fatal(err)
		}
		res, _ := mustGet(t, &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}, "http://"+local["http"]+"/fast")
		if res.StatusCode != http.StatusOK {
			t.Fatalf("got %s", res.Status)
		}
	})
}

func TestDrainTCP(t *testing.T) {
	f := newFixture(t)
	_, serverAddr := f.serverProxy("STRICT", Options{}, proxyconfig.Port{Name: "raw", Port: startTCPApp(t, ""), Protocol: "TCP"})
	open := func(t *testing.T) (*Proxy, net.Conn) {
		client, local := f.clientProxy(Options{}, "raw")
		f.pointAt(client, serverAddr, "raw")
		conn, err := net.Dial("tcp", local["raw"])
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.WriteString(conn, "\x00ping")
		if _, err := io.ReadFull(conn, make([]byte, 5)); err != nil {
			t.Fatal(err)
		}
		return client, conn
	}

	t.Run("drain waits for a TCP stream that ends", func(t *testing.T) {
		client, conn := open(t)
		drained := make(chan error, 1)
		go func() { drained <- client.Drain(context.Background()) }()
		if _, err := io.WriteString(conn, "\x00more"); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(conn, make([]byte, 5)); err != nil {
			t.Fatalf("the stream stopped during the drain: %v", err)
		}
		_ = conn.Close()
		if err := <-drained; err != nil {
			t.Fatal(err)
		}
	})

	t.Run("drain closes TCP streams when its context ends", func(t *testing.T) {
		client, conn := open(t)
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		if err := client.Drain(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("drain returned %v, want the context's deadline", err)
		}
		if _, err := conn.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Fatalf("stream still open: %v", err)
		}
	})
}

// TestTakeoverUnderLoad hands a proxy's listeners to a successor while clients keep sending
// requests through both proxies, over HTTP/1.1 and HTTP/2 with prior knowledge.
func TestTakeoverUnderLoad(t *testing.T) {
	for _, side := range []string{"server", "client"} {
		t.Run("the "+side+" proxy hands over without a failed request", func(t *testing.T) {
			f := newFixture(t)
			ports := []proxyconfig.Port{
				{Name: "http", Port: startHTTPApp(t, echoApp("http"), false), Protocol: "HTTP"},
				{Name: "grpc", Port: startHTTPApp(t, echoApp("grpc"), true), Protocol: "GRPC"},
			}
			server, serverAddr := f.serverProxy("STRICT", Options{}, ports...)
			client, local := f.clientProxy(Options{}, "http", "grpc")
			f.pointAt(client, serverAddr, "http", "grpc")

			load := startLoad(t, local)
			load.waitFor(t, 100)
			old := server
			next := func() *Proxy { return f.successor(server, serverService) }
			if side == "client" {
				old = client
				next = func() *Proxy {
					p := f.successor(client, "client")
					f.pointAt(p, serverAddr, "http", "grpc")
					return p
				}
			}
			successor := next()
			old.StopAccepting()
			if err := old.Drain(context.Background()); err != nil {
				t.Errorf("drain: %v", err)
			}
			load.waitFor(t, load.done.Load()+100)
			failures, total := load.stop()
			if len(failures) > 0 {
				t.Fatalf("%d of %d requests failed during the takeover, first: %s", len(failures), total, failures[0])
			}
			if counter(successor.metrics.requests) == 0 {
				t.Fatal("the new proxy served no request")
			}
		})
	}
}

// load sends POST requests through the client proxy from four clients (two HTTP/1.1, two h2c).
type load struct {
	done     atomic.Int64
	mu       sync.Mutex
	failures []string
	halt     chan struct{}
	wg       sync.WaitGroup
}

func startLoad(t *testing.T, local map[string]string) *load {
	l := &load{halt: make(chan struct{})}
	for i := range 4 {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			c, url := h1Client(), "http://"+local["http"]+"/"
			if i%2 == 1 {
				c, url = h2cClient(), "http://"+local["grpc"]+"/"
			}
			for {
				select {
				case <-l.halt:
					return
				default:
				}
				res, err := c.Post(url, "text/plain", strings.NewReader("payload"))
				if err == nil {
					body, _ := io.ReadAll(res.Body)
					_ = res.Body.Close()
					if res.StatusCode != http.StatusOK || string(body) != "payload" {
						err = errors.New(res.Status + " " + string(body))
					}
				}
				if err != nil {
					l.mu.Lock()
					l.failures = append(l.failures, err.Error())
					l.mu.Unlock()
				}
				l.done.Add(1)
			}
		}()
	}
	t.Cleanup(func() { l.stop() })
	return l
}

func (l *load) waitFor(t *testing.T, n int64) {
	t.Helper()
	eventually(t, "requests keep completing", func() bool { return l.done.Load() >= n })
}

func (l *load) stop() ([]string, int64) {
	select {
	case <-l.halt:
	default:
		close(l.halt)
	}
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failures, l.done.Load()
}

// isDraining says whether a generation of p is draining.
func (p *Proxy) isDraining() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for g := range p.gens {
		if g.draining.Load() {
			return true
		}
	}
	return false
}
