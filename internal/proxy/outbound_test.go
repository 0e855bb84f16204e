package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"testing"
	"time"

	"github.com/meshlift/meshlift/internal/proxyconfig"
)

// upgradeApp answers "Upgrade: echo" with 101 and echoes bytes on the hijacked connection.
func upgradeApp() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "want Upgrade: echo", http.StatusBadRequest)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		_ = brw.Flush()
		_, _ = io.Copy(conn, brw)
	}
}

// serverPorts are the ports of MeshService echo in the two-proxy tests.
func serverPorts(t *testing.T) []proxyconfig.Port {
	return []proxyconfig.Port{
		{Name: "http", Port: startHTTPApp(t, echoApp("http"), false), Protocol: "HTTP"},
		{Name: "grpc", Port: startHTTPApp(t, echoApp("grpc"), true), Protocol: "GRPC"},
		{Name: "ws", Port: startHTTPApp(t, upgradeApp(), false), Protocol: "HTTP"},
		{Name: "raw", Port: startTCPApp(t, ""), Protocol: "TCP"},
		{Name: "greet", Port: startTCPApp(t, "220 ready\n"), Protocol: "TCP"},
	}
}

func TestTwoProxies(t *testing.T) {
	f := newFixture(t)
	_, serverAddr := f.serverProxy("STRICT", Options{}, serverPorts(t)...)
	names := []string{"http", "grpc", "ws", "raw", "greet"}
	client, local := f.clientProxy(Options{}, names...)
	f.pointAt(client, serverAddr, names...)

	t.Run("HTTP/1.1 keep-alive requests reach the app over one local connection", func(t *testing.T) {
		c := h1Client()
		body := bytes.Repeat([]byte("x"), 1024)
		var reused []bool
		for range 3 {
			req, _ := http.NewRequest(http.MethodPost, "http://"+local["http"]+"/echo?n=1", bytes.NewReader(body))
			req.Header.Set("User-Agent", "") // none: the proxies must not add Go's
			req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
				GotConn: func(info httptrace.GotConnInfo) { reused = append(reused, info.Reused) },
			}))
			res, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(res.Body)
			_ = res.Body.Close()
			if res.StatusCode != http.StatusOK || !bytes.Equal(got, body) {
				t.Fatalf("got %s with %d bytes, want 200 echoing 1024", res.Status, len(got))
			}
			if res.Header.Get("X-Proto") != "HTTP/1.1" || res.Header.Get("X-Host") != local["http"] ||
				res.Header.Get("X-Path") != "/echo?n=1" || res.Header.Get("X-Ua") != `""` {
				t.Fatalf("app saw proto %s host %s path %s user agent %s", res.Header.Get("X-Proto"),
					res.Header.Get("X-Host"), res.Header.Get("X-Path"), res.Header.Get("X-Ua"))
			}
		}
		if reused[1] != true || reused[2] != true {
			t.Fatalf("connection reuse %v, want the local connection kept alive", reused)
		}
	})

	t.Run("a response without Content-Type gets none on the way", func(t *testing.T) {
		for _, c := range []*http.Client{h1Client(), h2cClient()} {
			res, body := mustGet(t, c, "http://"+local["grpc"]+"/notype")
			if _, ok := res.Header["Content-Type"]; ok || body != "<html>no type</html>" {
				t.Fatalf("%s: Content-Type %q, body %q", res.Proto, res.Header.Get("Content-Type"), body)
			}
		}
	})

	t.Run("h2c from the app reaches a GRPC port over HTTP/2 with its trailers", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, "http://"+local["grpc"]+"/trailers", strings.NewReader("request"))
		req.Header.Set("Te", "trailers")
		req.Header.Set("Content-Type", "application/grpc")
		res, err := h2cClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(res.Body)
		_ = res.Body.Close()
		if err != nil || string(got) != "request" {
			t.Fatalf("body %q, %v", got, err)
		}
		if res.ProtoMajor != 2 || res.Header.Get("X-Proto") != "HTTP/2.0" {
			t.Errorf("client got %s, app saw %s; want HTTP/2 on both", res.Proto, res.Header.Get("X-Proto"))
		}
		if res.Header.Get("X-Te") != "trailers" {
			t.Errorf("app saw TE %q, want trailers", res.Header.Get("X-Te"))
		}
		if res.Trailer.Get("Grpc-Status") != "0" || res.Trailer.Get("Grpc-Message") != "all good" {
			t.Errorf("trailers %v, want grpc-status 0 and grpc-message", res.Trailer)
		}
	})

	t.Run("a bidirectional stream flows through both proxies", func(t *testing.T) {
		reader, writer := io.Pipe()
		req, _ := http.NewRequest(http.MethodPost, "http://"+local["grpc"]+"/stream", reader)
		res, err := h2cClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		for _, message := range []string{"one", "two", "three"} {
			if _, err := io.WriteString(writer, message); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(message))
			if _, err := io.ReadFull(res.Body, got); err != nil || string(got) != message {
				t.Fatalf("echo of %q: %q, %v", message, got, err)
			}
		}
		_ = writer.Close()
		if rest, err := io.ReadAll(res.Body); err != nil || len(rest) != 0 {
			t.Fatalf("end of stream: %q, %v", rest, err)
		}
	})

	t.Run("an Upgrade request switches protocols end to end", func(t *testing.T) {
		conn, err := net.Dial("tcp", local["ws"])
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: echo\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		reader := bufio.NewReader(conn)
		res, err := http.ReadResponse(reader, nil)
		if err != nil || res.StatusCode != http.StatusSwitchingProtocols || res.Header.Get("Upgrade") != "echo" {
			t.Fatalf("upgrade answered %v, %v", res, err)
		}
		_, _ = io.WriteString(conn, "ping")
		got := make([]byte, 4)
		if _, err := io.ReadFull(reader, got); err != nil || string(got) != "ping" {
			t.Fatalf("echo after upgrade: %q, %v", got, err)
		}
	})

	t.Run("bytes that are not HTTP are piped to a TCP port", func(t *testing.T) {
		conn, err := net.Dial("tcp", local["raw"])
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		message := "\x00\x01binary hello\n"
		_, _ = io.WriteString(conn, message)
		got := make([]byte, len(message))
		if _, err := io.ReadFull(conn, got); err != nil || string(got) != message {
			t.Fatalf("echo: %q, %v", got, err)
		}
		// Half-close: the echo app sees EOF, closes, and the client sees EOF.
		_ = conn.(*net.TCPConn).CloseWrite()
		if rest, err := io.ReadAll(conn); err != nil || len(rest) != 0 {
			t.Fatalf("after half-close: %q, %v", rest, err)
		}
	})

	t.Run("a server that speaks first is reached after the detection timeout", func(t *testing.T) {
		conn, err := net.Dial("tcp", local["greet"])
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil || line != "220 ready\n" {
			t.Fatalf("greeting %q, %v", line, err)
		}
	})
}

func TestOutboundVerifiesTheServerIdentity(t *testing.T) {
	f := newFixture(t)
	_, serverAddr := f.serverProxy("STRICT", Options{}, serverPorts(t)...)
	client, local := f.clientProxy(Options{}, "http", "raw")
	for _, name := range []string{"http", "raw"} {
		if err := client.SetEndpoints(sni(name), []Endpoint{{Address: serverAddr, Identity: f.pki.id("impostor")}}); err != nil {
			t.Fatal(err)
		}
	}
	mismatches := client.metrics.handshakeFailures.WithLabelValues("outbound", "identity_mismatch")

	t.Run("an HTTP request fails with 503", func(t *testing.T) {
		res, _ := mustGet(t, h1Client(), "http://"+local["http"]+"/")
		if res.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("got %s, want 503", res.Status)
		}
		if got := counter(client.metrics.requestErrors.WithLabelValues("outbound", sni("http"), reasonConnect)); got != 1 {
			t.Errorf("connect errors %v, want 1", got)
		}
		if counter(mismatches) < 1 {
			t.Error("identity mismatch not counted")
		}
	})

	t.Run("a TCP connection is closed", func(t *testing.T) {
		before := counter(mismatches)
		conn, err := net.Dial("tcp", local["raw"])
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, _ = io.WriteString(conn, "\x00hello")
		expectClosed(t, conn)
		if counter(mismatches) <= before {
			t.Error("identity mismatch not counted")
		}
	})
}

func TestOutboundWithoutEndpoints(t *testing.T) {
	f := newFixture(t)
	client, local := f.clientProxy(Options{}, "http", "raw")

	t.Run("an HTTP request gets 503", func(t *testing.T) {
		res, _ := mustGet(t, h1Client(), "http://"+local["http"]+"/")
		if res.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("got %s, want 503", res.Status)
		}
		if got := counter(client.metrics.requestErrors.WithLabelValues("outbound", sni("http"), reasonNoEndpoints)); got != 1 {
			t.Errorf("no-endpoint errors %v, want 1", got)
		}
	})

	t.Run("a TCP connection is closed", func(t *testing.T) {
		conn, err := net.Dial("tcp", local["raw"])
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, _ = io.WriteString(conn, "\x00hello")
		expectClosed(t, conn)
		eventually(t, "the refusal is counted", func() bool {
			return counter(client.metrics.requestErrors.WithLabelValues("outbound", sni("raw"), reasonNoEndpoints)) == 1
		})
	})
}

func TestOutboundRetriesAnotherEndpoint(t *testing.T) {
	f := newFixture(t)
	_, serverAddr := f.serverProxy("STRICT", Options{}, serverPorts(t)...)
	down, _ := listenLocal(t)
	downAddr := down.Addr().String()
	_ = down.Close() // connection refused from now on

	post := func(t *testing.T, c *http.Client, address string, major int) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, "http://"+address+"/", strings.NewReader("body"))
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(res.Body)
		_ = res.Body.Close()
		if res.StatusCode != http.StatusOK || res.ProtoMajor != major || string(got) != "body" {
			t.Fatalf("%s %s %q", res.Proto, res.Status, got)
		}
	}
	paths := []struct {
		name, port string
		send       func(t *testing.T, address string)
	}{
		{"HTTP/1.1 (fast path)", "http", func(t *testing.T, address string) { post(t, h1Client(), address, 1) }},
		{"HTTP/2 (net/http path)", "http", func(t *testing.T, address string) { post(t, h2cClient(), address, 2) }},
		{"TCP", "raw", func(t *testing.T, address string) {
			conn, err := net.Dial("tcp", address)
			if err != nil {
				t.Fatal(err)
			}
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			_, _ = io.WriteString(conn, "\x00ping")
			got := make([]byte, 5)
			_, err = io.ReadFull(conn, got)
			_ = conn.Close()
			if err != nil || string(got) != "\x00ping" {
				t.Fatalf("TCP: %q, %v", got, err)
			}
		}},
	}
	for _, policy := range []string{RoundRobin, LeastRequest} {
		for _, path := range paths {
			// A new client proxy each time: the endpoint that is down is ejected after its first
			// failed connect, so only the first requests of a proxy try it.
			t.Run(policy+" "+path.name+" goes to the endpoint that is up", func(t *testing.T) {
				client, local := f.clientProxy(Options{LoadBalancing: policy}, path.port)
				if err := client.SetEndpoints(sni(path.port), []Endpoint{
					{Address: downAddr, Identity: f.pki.id(serverService)},
					{Address: serverAddr, Identity: f.pki.id(serverService)},
				}); err != nil {
					t.Fatal(err)
				}
				// Least-request picks either endpoint half of the time until one is ejected.
				for range 20 {
					path.send(t, local[path.port])
				}
				if counter(client.metrics.connectFailures.WithLabelValues("outbound", sni(path.port))) < 1 {
					t.Error("no request tried the endpoint that is down: nothing was retried")
				}
			})
		}
	}
}
