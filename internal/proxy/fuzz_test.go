package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshlift/meshlift/internal/proxyconfig"
)

// FuzzFirstBytes sends arbitrary first bytes to a PERMISSIVE inbound listener and to an
// outbound listener (real sockets, real proxies): whatever arrives, the proxy answers or closes
// the connection, and stays up.
func FuzzFirstBytes(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		http2Preface + "\x00\x00\x00\x04\x00\x00\x00\x00\x00",
		"\x16\x03\x01\x00\x05hello",
		"\x16\x03\x01\xff\xff",
		"POST / HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n",
		"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		"GET http:/",
		"\x00\x01\x02\x03",
	} {
		f.Add([]byte(seed))
	}
	fx := newFixture(f)
	app := startHTTPApp(f, echoApp("app"), false)
	_, inboundAddr := fx.serverProxy("PERMISSIVE", Options{HandshakeTimeout: 2 * time.Second},
		proxyconfig.Port{Name: "http", Port: app, Protocol: "HTTP"})
	client, local := fx.clientProxy(Options{HandshakeTimeout: 2 * time.Second}, "http")
	fx.pointAt(client, inboundAddr, "http")

	f.Fuzz(func(t *testing.T, b []byte) {
		var wg sync.WaitGroup
		for _, addr := range []string{inboundAddr, local["http"]} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				conn, err := net.Dial("tcp", addr)
				if err != nil {
					t.Errorf("dial %s: %v", addr, err)
					return
				}
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
				_, _ = conn.Write(b)
				_ = conn.(*net.TCPConn).CloseWrite()
				if _, err := io.Copy(io.Discard, conn); isTimeout(err) {
					t.Errorf("%s kept the connection open after %q", addr, b)
				}
			}()
		}
		wg.Wait()
	})
}

// FuzzRequestHead parses arbitrary bytes as an HTTP/1 request head (what the fast path reads
// from clients) and checks what it would send on: a head it accepts goes on as a well-formed
// HTTP/1.1 head (every line ends with CRLF, no bare CR or LF) that the proxy reads back the same
// way, and that net/http reads with the same framing, so that the upstream and the proxy never
// disagree on where the body ends.
func FuzzRequestHead(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /p?q HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n0\r\n\r\n",
		"GET http://u@h:1/a HTTP/1.1\r\nHost: y\r\nConnection: x-a, close\r\nX-A: 1\r\nTE: trailers\r\n\r\n",
		"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
		"PUT / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
		"\r\nGET * HTTP/1.1\nHost:\n\n",
		"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		h := &h1Head{}
		err := readRequestHead(bufio.NewReaderSize(bytes.NewReader(raw), 64), h)
		if err != nil {
			var he *headError
			if errors.As(err, &he) && (he.status < 400 || he.status > 505) {
				t.Fatalf("refused with status %d", he.status)
			}
			return
		}
		var out bytes.Buffer
		w := bufio.NewWriter(&out)
		writeRequestHead(w, h, "upstream:80", "")
		_ = w.Flush()
		forwarded := out.Bytes()
		for i, c := range forwarded {
			if (c == '\r' && (i+1 == len(forwarded) || forwarded[i+1] != '\n')) || (c == '\n' && (i == 0 || forwarded[i-1] != '\r')) {
				t.Fatalf("bare CR or LF at %d in %q", i, forwarded)
			}
		}
		again := &h1Head{}
		if err := readRequestHead(bufio.NewReader(bytes.NewReader(forwarded)), again); err != nil {
			t.Fatalf("the forwarded head %q does not read back: %v", forwarded, err)
		}
		if string(again.bytes(again.method)) != string(h.bytes(h.method)) || again.chunked != h.chunked ||
			again.contentLength != h.contentLength || again.upgrade() != h.upgrade() || again.minor != 1 || again.hosts != 1 {
			t.Fatalf("%q went on as %q, which reads differently", raw, forwarded)
		}
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(forwarded)))
		if err != nil {
			return // net/http is stricter about targets (URL escapes); the app answers those
		}
		chunked := len(req.TransferEncoding) > 0
		length := req.ContentLength
		if !h.chunked && h.contentLength < 0 {
			length = -1 // net/http says 0 for a request without framing; so does the fast path
			if req.ContentLength != 0 {
				t.Fatalf("net/http reads length %d from %q, which has no framing", req.ContentLength, forwarded)
			}
		}
		if chunked != h.chunked || length != h.contentLength {
			t.Fatalf("net/http reads chunked %v length %d from %q; the proxy chunked %v length %d",
				chunked, req.ContentLength, forwarded, h.chunked, h.contentLength)
		}
	})
}

// FuzzResponseHead parses arbitrary bytes as a response head from an upstream (untrusted: another
// workload, or an app reflecting a client) and checks that a head it accepts stays within the
// limits of a request head, and that net/http's client reads the same status and body framing
// from it, so the proxy and a client never disagree on where the response ends.
func FuzzResponseHead(f *testing.F) {
	for _, seed := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 204\r\n\r\n",
		"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n0\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
		"HTTP/1.1 200 OK\nX: a\n\n",
		"HTTP/1.1 200 OK\r\n" + strings.Repeat("X: 1\r\n", 64) + "\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		h := &h1Head{}
		br := bufio.NewReaderSize(bytes.NewReader(raw), 64)
		if err := readResponseHead(br, h); err != nil {
			return
		}
		if len(h.buf) > maxHeadBytes || len(h.fields) > maxHeadFields {
			t.Fatalf("accepted a head of %d bytes and %d fields", len(h.buf), len(h.fields))
		}
		res, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), nil)
		if err != nil {
			return // net/http is stricter about some field values; the proxy passes them on as read
		}
		if res.StatusCode != h.status {
			t.Fatalf("net/http reads status %d from %q; the proxy %d", res.StatusCode, raw, h.status)
		}
		if h.status >= 200 && h.status != http.StatusNoContent && h.status != http.StatusNotModified && h.minor == 1 {
			chunked := len(res.TransferEncoding) > 0
			if chunked != h.chunked || (!h.chunked && h.contentLength >= 0 && res.ContentLength != h.contentLength) {
				t.Fatalf("net/http reads chunked %v length %d from %q; the proxy chunked %v length %d",
					chunked, res.ContentLength, raw, h.chunked, h.contentLength)
			}
		}
	})
}
