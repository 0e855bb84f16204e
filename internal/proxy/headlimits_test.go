package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// TestResponseHeadLimits runs real proxies in front of an app that answers with a response
// head over the limits of a request head, on both paths a response takes: the HTTP/1.1 fast
// path (h1head.go) and net/http's transport (an HTTP/2 client). The client gets a 502 of the
// proxy's own, and the refusal is counted under its own reason.
func TestResponseHeadLimits(t *testing.T) {
	hostileApp := func(t *testing.T, head string) int {
		port, _ := startRawApp(t, func(conn net.Conn, br *bufio.Reader) {
			if _, _, err := readRequest(br); err != nil {
				return
			}
			_, _ = io.WriteString(conn, head)
		})
		return port
	}
	tooManyBytes := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Big: " + strings.Repeat("v", maxHeadBytes) + "\r\n\r\nok"
	tooManyFields := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + strings.Repeat("X-A: 1\r\n", maxHeadFields+1) + "\r\nok"
	const message = "meshlift-proxy: upstream response head too large\n"
	refused := func(p *Proxy) float64 {
		return counter(p.metrics.requestErrors.WithLabelValues("inbound", "http", reasonResponseHeadTooLarge))
	}

	for name, head := range map[string]string{"more bytes": tooManyBytes, "more fields": tooManyFields} {
		t.Run("the fast path answers 502 to a response head with "+name+" than a request head may have", func(t *testing.T) {
			p, addr := inboundFast(t, hostileApp(t, head))
			c := dialRaw(t, addr)
			c.send("GET / HTTP/1.1\r\nHost: echo\r\n\r\n")
			res, body := c.response("GET")
			if res.StatusCode != http.StatusBadGateway || body != message {
				t.Fatalf("got %s %q, want 502 %q", res.Status, body, message)
			}
			if got := refused(p); got != 1 {
				t.Fatalf("%s counted %v times, want 1", reasonResponseHeadTooLarge, got)
			}
		})
	}

	t.Run("net/http's path answers 502 to a response head over the byte limit", func(t *testing.T) {
		p, addr := inboundFast(t, hostileApp(t, tooManyBytes))
		res, body := mustGet(t, h2cClient(), "http://"+addr+"/")
		if res.ProtoMajor != 2 {
			t.Fatalf("the client spoke %s, want HTTP/2 (net/http's path)", res.Proto)
		}
		if res.StatusCode != http.StatusBadGateway || body != message {
			t.Fatalf("got %s %q, want 502 %q", res.Status, body, message)
		}
		if got := refused(p); got != 1 {
			t.Fatalf("%s counted %v times, want 1", reasonResponseHeadTooLarge, got)
		}
	})

	t.Run("a response head just under the limits goes through on both paths", func(t *testing.T) {
		head := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Big: " + strings.Repeat("v", maxHeadBytes-maxHeadBytes/8) + "\r\n\r\nok"
		p, addr := inboundFast(t, hostileApp(t, head))
		c := dialRaw(t, addr)
		c.send("GET / HTTP/1.1\r\nHost: echo\r\n\r\n")
		if res, body := c.response("GET"); res.StatusCode != 200 || body != "ok" {
			t.Fatalf("fast path: %s %q, want 200 ok", res.Status, body)
		}
		if res, body := mustGet(t, h2cClient(), "http://"+addr+"/"); res.StatusCode != 200 || body != "ok" {
			t.Fatalf("net/http's path: %s %q, want 200 ok", res.Status, body)
		}
		if got := refused(p); got != 0 {
			t.Fatalf("%s counted %v times, want 0", reasonResponseHeadTooLarge, got)
		}
	})
}
