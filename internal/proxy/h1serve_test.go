package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshlift/meshlift/internal/proxyconfig"
)

// startRawApp serves every accepted connection with handle, for upstream behaviour net/http's
// server never shows. It counts the connections.
func startRawApp(tb testing.TB, handle func(conn net.Conn, br *bufio.Reader)) (int, *atomic.Int64) {
	tb.Helper()
	l, port := listenLocal(tb)
	tb.Cleanup(func() { _ = l.Close() })
	var conns atomic.Int64
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				handle(c, bufio.NewReader(c))
			}()
		}
	}()
	return port, &conns
}

// readRequest reads one request and its body from an upstream connection.
func readRequest(br *bufio.Reader) (*http.Request, []byte, error) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, nil, err
	}
	body, err := io.ReadAll(req.Body)
	return req, body, err
}

// rawClient is a client connection that writes bytes and reads responses.
type rawClient struct {
	tb   testing.TB
	conn net.Conn
	br   *bufio.Reader
}

func dialRaw(tb testing.TB, addr string) *rawClient {
	tb.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	return &rawClient{tb: tb, conn: conn, br: bufio.NewReader(conn)}
}

func (c *rawClient) send(s string) {
	c.tb.Helper()
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.tb.Fatal(err)
	}
}

// response reads a response (to a request of method) and its body.
func (c *rawClient) response(method string) (*http.Response, string) {
	c.tb.Helper()
	res, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		c.tb.Fatalf("reading a response: %v", err)
	}
	body, err := io.ReadAll(res.Body)
	if err != nil {
		c.tb.Fatalf("reading a response body: %v", err)
	}
	return res, string(body)
}

// expectEOF asserts that the proxy closes the connection.
func (c *rawClient) expectEOF() {
	c.tb.Helper()
	if b, err := c.br.ReadByte(); err == nil || isTimeout(err) {
		c.tb.Fatalf("connection still open: read %q, %v", b, err)
	}
}

// inboundFast runs a PERMISSIVE server proxy in front of an app port, so that a plaintext
// client talks HTTP/1.1 to the fast path directly.
func inboundFast(t *testing.T, appPort int) (*Proxy, string) {
	t.Helper()
	f := newFixture(t)
	return f.serverProxy("PERMISSIVE", Options{}, proxyconfig.Port{Name: "http", Port: appPort, Protocol: "HTTP"})
}

// trailerEcho answers with the request's body, chunked, and its X-Sum trailer as a trailer.
func trailerEcho(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	w.Header().Set("Trailer", "X-Sum")
	w.Header().Set("X-Request-Chunked", strconv.FormatBool(len(r.TransferEncoding) > 0))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
	w.(http.Flusher).Flush()
	w.Header().Set("X-Sum", r.Trailer.Get("X-Sum"))
}

func TestFastPathFraming(t *testing.T) {
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/trailers": // the request's trailer back as a response trailer
			trailerEcho(w, r)
		case "/length":
			w.Header().Set("Content-Length", "5")
			_, _ = io.WriteString(w, "hello")
		case "/nocontent":
			w.WriteHeader(http.StatusNoContent)
		case "/notmodified":
			w.Header().Set("Etag", `"v1"`)
			w.WriteHeader(http.StatusNotModified)
		case "/echo":
			body, _ := io.ReadAll(r.Body)
			w.Header().Set("X-Expect", r.Header.Get("Expect"))
			_, _ = w.Write(body)
		}
	})
	var appConns atomic.Int64
	l, appPort := listenLocal(t)
	server := &http.Server{Handler: app, ReadHeaderTimeout: 10 * time.Second, ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			appConns.Add(1)
		}
	}}
	go server.Serve(l) //nolint:errcheck // ends with Close
	t.Cleanup(func() { _ = server.Close() })
	_, addr := inboundFast(t, appPort)

	t.Run("a chunked request with a trailer reaches the app, and the chunked response its trailer reaches the client", func(t *testing.T) {
		c := dialRaw(t, addr)
		c.send("POST /trailers HTTP/1.1\r\nHost: echo\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n" +
			"4\r\nwiki\r\n5;ext\r\npedia\r\n0\r\nX-Sum: 42\r\n\r\n")
		res, body := c.response("POST")
		if body != "wikipedia" || res.Header.Get("X-Request-Chunked") != "true" {
			t.Fatalf("body %q, app saw chunked %q", body, res.Header.Get("X-Request-Chunked"))
		}
		if len(res.TransferEncoding) != 1 || res.Trailer.Get("X-Sum") != "42" {
			t.Fatalf("transfer encoding %v, trailer %v", res.TransferEncoding, res.Trailer)
		}
	})

	t.Run("HEAD, 204 and 304 get no body and the connection carries on", func(t *testing.T) {
		c := dialRaw(t, addr)
		c.send("HEAD /length HTTP/1.1\r\nHost: echo\r\n\r\n")
		res, body := c.response("HEAD")
		if res.StatusCode != 200 || res.ContentLength != 5 || body != "" {
			t.Fatalf("HEAD: %s, length %d, body %q", res.Status, res.ContentLength, body)
		}
		c.send("GET /nocontent HTTP/1.1\r\nHost: echo\r\n\r\n")
		if res, body := c.response("GET"); res.StatusCode != 204 || body != "" {
			t.Fatalf("204: %s, body %q", res.Status, body)
		}
		c.send("GET /notmodified HTTP/1.1\r\nHost: echo\r\n\r\n")
		if res, body := c.response("GET"); res.StatusCode != 304 || res.Header.Get("Etag") != `"v1"` || body != "" {
			t.Fatalf("304: %s, etag %q, body %q", res.Status, res.Header.Get("Etag"), body)
		}
		c.send("GET /length HTTP/1.1\r\nHost: echo\r\n\r\n")
		if res, body := c.response("GET"); res.StatusCode != 200 || body != "hello" {
			t.Fatalf("after them: %s, body %q", res.Status, body)
		}
	})

	t.Run("a client that expects 100-continue gets it before it sends the body", func(t *testing.T) {
		c := dialRaw(t, addr)
		c.send("PUT /echo HTTP/1.1\r\nHost: echo\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
		line, err := c.br.ReadString('\n')
		if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
			t.Fatalf("got %q, %v; want 100 Continue", line, err)
		}
		if blank, _ := c.br.ReadString('\n'); blank != "\r\n" {
			t.Fatalf("100 Continue followed by %q", blank)
		}
		c.send("data")
		res, body := c.response("PUT")
		if res.StatusCode != 200 || body != "data" {
			t.Fatalf("got %s, body %q", res.Status, body)
		}
	})

	t.Run("keep-alive requests share one pooled app connection and pipelined ones are answered in order", func(t *testing.T) {
		before := appConns.Load()
		c := dialRaw(t, addr)
		c.send("POST /echo HTTP/1.1\r\nHost: echo\r\nContent-Length: 3\r\n\r\none" +
			"POST /echo HTTP/1.1\r\nHost: echo\r\nContent-Length: 3\r\n\r\ntwo")
		for _, want := range []string{"one", "two"} {
			if res, body := c.response("POST"); res.StatusCode != 200 || body != want {
				t.Fatalf("got %s %q, want %q", res.Status, body, want)
			}
		}
		for i := range 5 {
			c.send("GET /length HTTP/1.1\r\nHost: echo\r\n\r\n")
			if res, body := c.response("GET"); res.StatusCode != 200 || body != "hello" || res.Close {
				t.Fatalf("request %d: %s %q close=%v", i, res.Status, body, res.Close)
			}
		}
		if n := appConns.Load() - before; n > 1 {
			t.Fatalf("the app saw %d new connections for one client connection, want at most 1", n)
		}
	})

	t.Run("an HTTP/1.0 client gets a length, or the body up to the close", func(t *testing.T) {
		c := dialRaw(t, addr)
		c.send("GET /length HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
		res, body := c.response("GET")
		if body != "hello" || res.Close {
			t.Fatalf("kept alive: body %q, close=%v", body, res.Close)
		}
		c.send("POST /trailers HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc")
		res, body = c.response("POST")
		if body != "abc" || !res.Close || len(res.TransferEncoding) != 0 {
			t.Fatalf("streamed: body %q, close=%v, transfer encoding %v", body, res.Close, res.TransferEncoding)
		}
		c.expectEOF()
	})

	t.Run("a body larger than what is kept to send again is streamed both ways", func(t *testing.T) {
		body := bytes.Repeat([]byte("0123456789abcdef"), (3*maxReplay)/16)
		c := dialRaw(t, addr)
		c.send("POST /echo HTTP/1.1\r\nHost: echo\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n")
		go func() { _, _ = c.conn.Write(body) }()
		res, got := c.response("POST")
		if res.StatusCode != 200 || got != string(body) {
			t.Fatalf("got %s with %d bytes, want %d", res.Status, len(got), len(body))
		}
		c.send("GET /length HTTP/1.1\r\nHost: echo\r\n\r\n")
		if res, got := c.response("GET"); got != "hello" {
			t.Fatalf("next request: %s %q", res.Status, got)
		}
	})
}

func TestFastPathUpstreamBehaviour(t *testing.T) {
	t.Run("a pooled connection the app closed is replaced without failing the request", func(t *testing.T) {
		// The app answers one request per connection, keeps it open and then closes it: the
		// proxy must see the close before it sends the next request there.
		port, conns := startRawApp(t, func(conn net.Conn, br *bufio.Reader) {
			if _, _, err := readRequest(br); err != nil {
				return
			}
			_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			time.Sleep(50 * time.Millisecond)
		})
		_, addr := inboundFast(t, port)
		c := dialRaw(t, addr)
		for i := range 3 {
			c.send("POST / HTTP/1.1\r\nHost: echo\r\nContent-Length: 1\r\n\r\nx")
			if res, body := c.response("POST"); res.StatusCode != 200 || body != "ok" {
				t.Fatalf("request %d: %s %q", i, res.Status, body)
			}
			time.Sleep(100 * time.Millisecond) // the app closes the connection meanwhile
		}
		if n := conns.Load(); n != 3 {
			t.Fatalf("the app saw %d connections, want 3", n)
		}
	})

	// The app closes a kept-alive connection when the second request arrives on it, without
	// answering: the race of an idle close with a request.
	closingApp := func(t *testing.T) int {
		port, _ := startRawApp(t, func(conn net.Conn, br *bufio.Reader) {
			if _, _, err := readRequest(br); err != nil {
				return
			}
			_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			_, _, _ = readRequest(br)
		})
		return port
	}

	t.Run("an idempotent request on a kept-alive connection closed under it goes again on a new one", func(t *testing.T) {
		_, addr := inboundFast(t, closingApp(t))
		c := dialRaw(t, addr)
		for i := range 4 {
			c.send("GET / HTTP/1.1\r\nHost: echo\r\n\r\n")
			if res, body := c.response("GET"); res.StatusCode != 200 || body != "ok" {
				t.Fatalf("request %d: %s %q", i, res.Status, body)
			}
		}
	})

	t.Run("a POST on a kept-alive connection closed under it is not sent twice", func(t *testing.T) {
		p, addr := inboundFast(t, closingApp(t))
		c := dialRaw(t, addr)
		c.send("POST / HTTP/1.1\r\nHost: echo\r\nContent-Length: 1\r\n\r\nx")
		if res, _ := c.response("POST"); res.StatusCode != 200 {
			t.Fatalf("first: %s", res.Status)
		}
		c.send("POST / HTTP/1.1\r\nHost: echo\r\nContent-Length: 1\r\n\r\nx")
		res, body := c.response("POST")
		if res.StatusCode != http.StatusBadGateway || body != "meshlift-proxy: upstream failed\n" {
			t.Fatalf("second: %s %q, want 502", res.Status, body)
		}
		if got := counter(p.metrics.requestErrors.WithLabelValues("inbound", "http", reasonUpstream)); got != 1 {
			t.Fatalf("upstream errors %v, want 1", got)
		}
		c.send("GET / HTTP/1.1\r\nHost: echo\r\n\r\n")
		if res, _ := c.response("GET"); res.StatusCode != 200 {
			t.Fatalf("after the 502: %s", res.Status)
		}
	})

	t.Run("a response without length reaches an HTTP/1.1 client chunked", func(t *testing.T) {
		port, _ := startRawApp(t, func(conn net.Conn, br *bufio.Reader) {
			if _, _, err := readRequest(br); err != nil {
				return
			}
			_, _ = io.WriteString(conn, "HTTP/1.0 200 OK\r\nX-Old: 1\r\n\r\nuntil the end")
		})
		_, addr := inboundFast(t, port)
		c := dialRaw(t, addr)
		c.send("GET / HTTP/1.1\r\nHost: echo\r\n\r\n")
		res, body := c.response("GET")
		if body != "until the end" || len(res.TransferEncoding) != 1 || res.Close {
			t.Fatalf("body %q, transfer encoding %v, close=%v", body, res.TransferEncoding, res.Close)
		}
	})

	t.Run("interim responses other than 100 reach the client before the final one", func(t *testing.T) {
		port, _ := startRawApp(t, func(conn net.Conn, br *bufio.Reader) {
			if _, _, err := readRequest(br); err != nil {
				return
			}
			_, _ = io.WriteString(conn, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"+
				"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		})
		_, addr := inboundFast(t, port)
		c := dialRaw(t, addr)
		c.send("GET / HTTP/1.1\r\nHost: echo\r\n\r\n")
		var hints []string
		res, err := http.ReadResponse(c.br, &http.Request{Method: "GET"})
		for err == nil && res.StatusCode == 103 {
			hints = append(hints, res.Header.Get("Link"))
			res, err = http.ReadResponse(c.br, &http.Request{Method: "GET"})
		}
		if err != nil || res.StatusCode != 200 || len(hints) != 1 || hints[0] != "</a.css>" {
			t.Fatalf("final %v, %v; hints %q", res, err, hints)
		}
	})

	t.Run("an upstream that answers before reading a large body does not stall the exchange", func(t *testing.T) {
		port, _ := startRawApp(t, func(conn net.Conn, br *bufio.Reader) {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			_, _ = io.WriteString(conn, "HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 3\r\n\r\nbig")
			time.Sleep(2 * time.Second) // reads none of the body: the proxy's copier stays stuck
		})
		_, addr := inboundFast(t, port)
		c := dialRaw(t, addr)
		size := 8 << 20
		c.send("POST / HTTP/1.1\r\nHost: echo\r\nContent-Length: " + strconv.Itoa(size) + "\r\n\r\n")
		go func() { _, _ = c.conn.Write(make([]byte, size)) }()
		res, body := c.response("POST")
		if res.StatusCode != 413 || body != "big" || !res.Close {
			t.Fatalf("got %s %q close=%v, want 413 closing the connection", res.Status, body, res.Close)
		}
	})

	t.Run("a malformed response is a 502 and a body cut short ends the client's response early", func(t *testing.T) {
		port, _ := startRawApp(t, func(conn net.Conn, br *bufio.Reader) {
			req, _, err := readRequest(br)
			if err != nil {
				return
			}
			if req.URL.Path == "/garbage" {
				_, _ = io.WriteString(conn, "NOT HTTP\r\n\r\n")
				return
			}
			_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
		})
		p, addr := inboundFast(t, port)
		c := dialRaw(t, addr)
		c.send("GET /garbage HTTP/1.1\r\nHost: echo\r\n\r\n")
		if res, _ := c.response("GET"); res.StatusCode != http.StatusBadGateway {
			t.Fatalf("garbage: %s, want 502", res.Status)
		}
		c.send("GET /short HTTP/1.1\r\nHost: echo\r\n\r\n")
		res, err := http.ReadResponse(c.br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if body, err := io.ReadAll(res.Body); err == nil {
			t.Fatalf("short body read whole: %q", body)
		}
		eventually(t, "the failure is counted", func() bool {
			return counter(p.metrics.requestErrors.WithLabelValues("inbound", "http", reasonUpstream)) == 2
		})
	})

	t.Run("an app that is down gets 503", func(t *testing.T) {
		l, port := listenLocal(t)
		_ = l.Close()
		p, addr := inboundFast(t, port)
		c := dialRaw(t, addr)
		c.send("POST / HTTP/1.1\r\nHost: echo\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
		res, body := c.response("POST")
		if res.StatusCode != 503 || body != "meshlift-proxy: upstream connect failed\n" || res.Close {
			t.Fatalf("got %s %q close=%v", res.Status, body, res.Close)
		}
		if counter(p.metrics.connectFailures.WithLabelValues("inbound", "http")) != 1 {
			t.Fatal("the failed connect is not counted")
		}
		c.send("GET / HTTP/1.1\r\nHost: echo\r\n\r\n") // the body was dropped: the connection goes on
		if res, _ := c.response("GET"); res.StatusCode != 503 {
			t.Fatalf("second request: %s", res.Status)
		}
	})
}

func TestFastPathRefusesMalformedRequests(t *testing.T) {
	port, conns := startRawApp(t, func(net.Conn, *bufio.Reader) {})
	_, addr := inboundFast(t, port)
	for _, tt := range []struct {
		request string
		status  int
	}{
		{"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\n\r\n", 400},
		{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", 501},
		{"GET / HTTP/1.1\r\nHost: a\r\nX: " + strings.Repeat("x", maxHeadBytes) + "\r\n\r\n", 431},
	} {
		t.Run(fmt.Sprintf("%d for %.40q", tt.status, tt.request), func(t *testing.T) {
			c := dialRaw(t, addr)
			go func() { _, _ = io.WriteString(c.conn, tt.request) }()
			res, _ := c.response("GET")
			if res.StatusCode != tt.status || !res.Close {
				t.Fatalf("got %s close=%v, want %d closing", res.Status, res.Close, tt.status)
			}
			c.expectEOF()
		})
	}
	if n := conns.Load(); n != 0 {
		t.Fatalf("malformed requests reached the app over %d connections", n)
	}
}

func TestFastPathThroughTwoProxies(t *testing.T) {
	f := newFixture(t)
	var appConns atomic.Int64
	l, appPort := listenLocal(t)
	mux := http.NewServeMux()
	mux.Handle("/", echoApp("app"))
	mux.HandleFunc("/trailers", trailerEcho)
	server := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			appConns.Add(1)
		}
	}}
	go server.Serve(l) //nolint:errcheck // ends with Close
	t.Cleanup(func() { _ = server.Close() })
	serverProxy, serverAddr := f.serverProxy("STRICT", Options{}, proxyconfig.Port{Name: "http", Port: appPort, Protocol: "HTTP"})
	client, local := f.clientProxy(Options{}, "http")
	f.pointAt(client, serverAddr, "http")

	t.Run("concurrent clients reuse pooled mTLS and app connections", func(t *testing.T) {
		c := h1Client()
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for range 25 {
					res, err := c.Post("http://"+local["http"]+"/", "text/plain", strings.NewReader("payload"))
					if err != nil {
						t.Error(err)
						return
					}
					body, _ := io.ReadAll(res.Body)
					_ = res.Body.Close()
					if res.StatusCode != 200 || string(body) != "payload" {
						t.Errorf("got %s %q", res.Status, body)
					}
				}
			})
		}
		wg.Wait()
		if n := counter(serverProxy.metrics.connections[inbound]); n > 4 {
			t.Errorf("the server proxy accepted %v connections for 4 clients", n)
		}
		if n := appConns.Load(); n > 4 {
			t.Errorf("the app accepted %d connections for 4 clients", n)
		}
		if n := counter(client.metrics.requests); n != 100 {
			t.Errorf("the client proxy counted %v requests, want 100", n)
		}
	})

	t.Run("a chunked stream with trailers crosses both proxies", func(t *testing.T) {
		reader, writer := io.Pipe()
		req, _ := http.NewRequest(http.MethodPost, "http://"+local["http"]+"/trailers", reader)
		req.Trailer = http.Header{"X-Sum": nil}
		go func() {
			_, _ = io.WriteString(writer, "part one, ")
			_, _ = io.WriteString(writer, "part two")
			req.Trailer.Set("X-Sum", "17")
			_ = writer.Close()
		}()
		res, err := h1Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(res.Body)
		_ = res.Body.Close()
		if err != nil || string(body) != "part one, part two" {
			t.Fatalf("body %q, %v", body, err)
		}
		if res.Header.Get("X-Request-Chunked") != "true" || res.Trailer.Get("X-Sum") != "17" {
			t.Fatalf("app saw chunked %q; trailers %v", res.Header.Get("X-Request-Chunked"), res.Trailer)
		}
	})
}
