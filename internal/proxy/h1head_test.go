package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"strings"
	"testing"
)

// forwardHead parses a request head and returns the head it goes on with (upstream address
// "10.0.0.1:8080").
func forwardHead(raw string) (string, *h1Head, error) {
	h := &h1Head{}
	if err := readRequestHead(bufio.NewReader(strings.NewReader(raw)), h); err != nil {
		return "", h, err
	}
	var out bytes.Buffer
	w := bufio.NewWriter(&out)
	writeRequestHead(w, h, "10.0.0.1:8080", "")
	_ = w.Flush()
	return out.String(), h, nil
}

func TestRequestHeadForwarding(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{name: "a plain request goes on as it came, Host first",
			in:   "GET /a?b=c HTTP/1.1\r\nAccept: */*\r\nHost: echo\r\nX-Empty:\r\n\r\n",
			want: "GET /a?b=c HTTP/1.1\r\nHost: echo\r\nAccept: */*\r\nX-Empty:\r\n\r\n"},
		{name: "a missing User-Agent stays missing and field names keep their case",
			in:   "GET / HTTP/1.1\r\nhost: echo\r\nx-lower: 1\r\n\r\n",
			want: "GET / HTTP/1.1\r\nHost: echo\r\nx-lower: 1\r\n\r\n"},
		{name: "hop-by-hop fields and those named by Connection are removed",
			in: "GET / HTTP/1.1\r\nHost: echo\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: timeout=5\r\n" +
				"Proxy-Connection: x\r\nX-Secret: 1\r\nx-secret: 2\r\nTrailer: X\r\nUpgrade: h2c\r\nX-Kept: 2\r\n\r\n",
			want: "GET / HTTP/1.1\r\nHost: echo\r\nX-Kept: 2\r\n\r\n"},
		{name: "TE keeps only trailers",
			in:   "POST /rpc HTTP/1.1\r\nHost: echo\r\nTE: gzip, trailers\r\nContent-Length: 0\r\n\r\n",
			want: "POST /rpc HTTP/1.1\r\nHost: echo\r\nTe: trailers\r\nContent-Length: 0\r\n\r\n"},
		{name: "an upgrade keeps its Upgrade with Connection: Upgrade",
			in:   "GET /ws HTTP/1.1\r\nHost: echo\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n",
			want: "GET /ws HTTP/1.1\r\nHost: echo\r\nSec-WebSocket-Key: k\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"},
		{name: "duplicate equal Content-Lengths go on as one",
			in:   "PUT / HTTP/1.1\r\nHost: echo\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
			want: "PUT / HTTP/1.1\r\nHost: echo\r\nContent-Length: 3\r\n\r\n"},
		{name: "chunked overrides Content-Length",
			in:   "POST / HTTP/1.1\r\nHost: echo\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
			want: "POST / HTTP/1.1\r\nHost: echo\r\nTransfer-Encoding: chunked\r\n\r\n"},
		{name: "Expect goes on",
			in:   "POST / HTTP/1.1\r\nHost: echo\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
			want: "POST / HTTP/1.1\r\nHost: echo\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"},
		{name: "an absolute target goes on in origin form with its authority as Host",
			in:   "GET http://user:pw@svc.example:8080/p?q HTTP/1.1\r\nHost: other\r\n\r\n",
			want: "GET /p?q HTTP/1.1\r\nHost: svc.example:8080\r\n\r\n"},
		{name: "an absolute target without a path gets /",
			in:   "GET https://svc.example?q=1 HTTP/1.1\r\nHost: svc.example\r\n\r\n",
			want: "GET /?q=1 HTTP/1.1\r\nHost: svc.example\r\n\r\n"},
		{name: "HTTP/1.0 without Host goes on as HTTP/1.1 with the upstream's address",
			in:   "GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
			want: "GET / HTTP/1.1\r\nHost: 10.0.0.1:8080\r\n\r\n"},
		{name: "an empty Host is the upstream's address",
			in:   "GET / HTTP/1.1\r\nHost:\r\n\r\n",
			want: "GET / HTTP/1.1\r\nHost: 10.0.0.1:8080\r\n\r\n"},
		{name: "empty lines before the request and bare LF line ends are tolerated",
			in:   "\r\n\nGET / HTTP/1.1\nHost: echo \t\nX-A:\tb\n\n",
			want: "GET / HTTP/1.1\r\nHost: echo\r\nX-A:\tb\r\n\r\n"},
		{name: "OPTIONS * goes on",
			in:   "OPTIONS * HTTP/1.1\r\nHost: echo\r\n\r\n",
			want: "OPTIONS * HTTP/1.1\r\nHost: echo\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := forwardHead(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("forwarded\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

func TestRequestHeadRefusals(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		status int
	}{
		{name: "a request line without version", in: "GET /\r\nHost: a\r\n\r\n", status: 400},
		{name: "a request line with two spaces in the target", in: "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", status: 400},
		{name: "a method that is not a token", in: "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", status: 400},
		{name: "a control byte in the target", in: "GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", status: 400},
		{name: "a target in no known form", in: "GET a.b HTTP/1.1\r\nHost: a\r\n\r\n", status: 400},
		{name: "an absolute target with a fragment only", in: "GET http://a#x HTTP/1.1\r\nHost: a\r\n\r\n", status: 400},
		{name: "a malformed version", in: "GET / HTTP/1.1x\r\nHost: a\r\n\r\n", status: 400},
		{name: "HTTP/2.0 in a request line", in: "GET / HTTP/2.0\r\nHost: a\r\n\r\n", status: 505},
		{name: "CONNECT", in: "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", status: 405},
		{name: "a missing Host in HTTP/1.1", in: "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", status: 400},
		{name: "two Hosts", in: "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", status: 400},
		{name: "a Host with a space", in: "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", status: 400},
		{name: "an absolute target without Host in HTTP/1.1", in: "GET http://a/ HTTP/1.1\r\n\r\n", status: 400},
		{name: "a space before the colon", in: "GET / HTTP/1.1\r\nHost : a\r\n\r\n", status: 400},
		{name: "a field without colon", in: "GET / HTTP/1.1\r\nHost: a\r\nbogus\r\n\r\n", status: 400},
		{name: "a folded field", in: "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n", status: 400},
		{name: "a bare CR in a value", in: "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r2\r\n\r\n", status: 400},
		{name: "a NUL in a value", in: "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\x002\r\n\r\n", status: 400},
		{name: "differing Content-Lengths", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", status: 400},
		{name: "a signed Content-Length", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n", status: 400},
		{name: "an empty Content-Length", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", status: 400},
		{name: "a Content-Length list", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\n", status: 400},
		{name: "a huge Content-Length", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", status: 400},
		{name: "a transfer coding other than chunked", in: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", status: 501},
		{name: "chunked twice", in: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", status: 501},
		{name: "an expectation other than 100-continue", in: "POST / HTTP/1.1\r\nHost: a\r\nExpect: magic\r\n\r\n", status: 417},
		{name: "a head larger than the limit", in: "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("b", maxHeadBytes) + "\r\n\r\n", status: 431},
		{name: "too many fields", in: "GET / HTTP/1.1\r\nHost: a\r\n" + strings.Repeat("X: 1\r\n", maxHeadFields) + "\r\n", status: 431},
		{name: "too many empty lines first", in: strings.Repeat("\r\n", 6) + "GET / HTTP/1.1\r\nHost: a\r\n\r\n", status: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := forwardHead(tt.in)
			var he *headError
			if !errors.As(err, &he) {
				t.Fatalf("got %v, want a refusal with %d", err, tt.status)
			}
			if he.status != tt.status {
				t.Fatalf("refused with %d (%s), want %d", he.status, he.reason, tt.status)
			}
		})
	}

	t.Run("a head that ends early is the connection's error, not an answer", func(t *testing.T) {
		_, _, err := forwardHead("GET / HTTP/1.1\r\nHost: a\r\n")
		var he *headError
		if err == nil || errors.As(err, &he) {
			t.Fatalf("got %v, want an I/O error", err)
		}
	})
}

func TestRequestHeadSemantics(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		check func(h *h1Head) bool
	}{
		{"GET is idempotent", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", func(h *h1Head) bool { return h.idempotent() }},
		{"POST is not idempotent", "POST / HTTP/1.1\r\nHost: a\r\n\r\n", func(h *h1Head) bool { return !h.idempotent() }},
		{"POST with an idempotency key is", "POST / HTTP/1.1\r\nHost: a\r\nIdempotency-Key: k\r\n\r\n", func(h *h1Head) bool { return h.idempotent() }},
		{"HTTP/1.1 keeps the connection", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", func(h *h1Head) bool { return !h.wantsClose() }},
		{"Connection: close closes it", "GET / HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n", func(h *h1Head) bool { return h.wantsClose() }},
		{"HTTP/1.0 closes it", "GET / HTTP/1.0\r\n\r\n", func(h *h1Head) bool { return h.wantsClose() }},
		{"HTTP/1.0 with keep-alive keeps it", "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", func(h *h1Head) bool { return !h.wantsClose() }},
		{"Upgrade without Connection: upgrade is no upgrade", "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n", func(h *h1Head) bool { return !h.upgrade() }},
		{"Expect: 100-continue is noted", "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n", func(h *h1Head) bool { return h.expectContinue }},
		{"no body without framing", "POST / HTTP/1.1\r\nHost: a\r\n\r\n", func(h *h1Head) bool { return h.contentLength == -1 && !h.chunked }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, h, err := forwardHead(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(h) {
				t.Fatalf("%s: not so for %q", tt.name, tt.in)
			}
		})
	}
}

func TestResponseHead(t *testing.T) {
	read := func(raw string) (*h1Head, error) {
		h := &h1Head{}
		return h, readResponseHead(bufio.NewReader(strings.NewReader(raw)), h)
	}
	t.Run("a status line without reason", func(t *testing.T) {
		h, err := read("HTTP/1.1 204\r\n\r\n")
		if err != nil || h.status != 204 || h.reason.len() != 0 {
			t.Fatalf("got %d %q, %v", h.status, h.bytes(h.reason), err)
		}
	})
	t.Run("an HTTP/1.0 response keeps the connection only with keep-alive", func(t *testing.T) {
		h, _ := read("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n")
		k, _ := read("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n")
		if h.keepAlive() || !k.keepAlive() {
			t.Fatalf("keep-alive: %v without, %v with", h.keepAlive(), k.keepAlive())
		}
	})
	t.Run("a response head has a request head's limits", func(t *testing.T) {
		field := "X-Big: " + strings.Repeat("v", maxHeadBytes-200) + "\r\n"
		if _, err := read("HTTP/1.1 200 OK\r\n" + field + "\r\n"); err != nil {
			t.Fatalf("refused a head just under %d bytes: %v", maxHeadBytes, err)
		}
		for name, raw := range map[string]string{
			"a field over the byte limit":  "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("v", maxHeadBytes) + "\r\n\r\n",
			"a status line over the limit": "HTTP/1.1 200 " + strings.Repeat("r", maxHeadBytes) + "\r\n\r\n",
			"one field too many":           "HTTP/1.1 200 OK\r\n" + strings.Repeat("X: 1\r\n", maxHeadFields+1) + "\r\n",
			"fields that add up over it":   "HTTP/1.1 200 OK\r\n" + strings.Repeat("X: "+strings.Repeat("v", 2000)+"\r\n", 600) + "\r\n",
		} {
			if _, err := read(raw); !errors.Is(err, errResponseHeadTooLarge) {
				t.Errorf("%s: got %v, want errResponseHeadTooLarge", name, err)
			}
		}
		if _, err := read("HTTP/1.1 200 OK\r\n" + strings.Repeat("X: 1\r\n", maxHeadFields) + "\r\n"); err != nil {
			t.Fatalf("refused %d fields: %v", maxHeadFields, err)
		}
	})
	t.Run("chunked overrides Content-Length", func(t *testing.T) {
		h, err := read("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n")
		if err != nil || !h.chunked || h.contentLength != -1 {
			t.Fatalf("chunked %v length %d, %v", h.chunked, h.contentLength, err)
		}
	})
	for _, bad := range []string{
		"HTTP/1.1 20 OK\r\n\r\n",
		"HTTP/1.1 2000 OK\r\n\r\n",
		"HTTP/2.0 200 OK\r\n\r\n",
		"HTTP/1.1 099 Low\r\n\r\n",
		"ICY 200 OK\r\n\r\n",
		"HTTP/1.1 200 O\x01K\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
	} {
		t.Run("refuses "+strings.ReplaceAll(bad, "\r\n", " "), func(t *testing.T) {
			if _, err := read(bad); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestChunkedCopy(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		rechunk bool
		want    string
		wantErr bool
	}{
		{name: "chunks are chunked again without extensions, with their trailer",
			in:      "3;ext=1\r\nabc\r\n2 \r\nde\r\n0\r\nGrpc-Status: 0\r\nTrailer: x\r\n\r\n",
			rechunk: true, want: "3\r\nabc\r\n2\r\nde\r\n0\r\nGrpc-Status: 0\r\n\r\n"},
		{name: "chunks are decoded for an HTTP/1.0 client",
			in: "A\r\n0123456789\r\n0\r\n\r\n", want: "0123456789"},
		{name: "a chunk not followed by CRLF fails", in: "3\r\nabcd\r\n0\r\n\r\n", wantErr: true},
		{name: "a chunk size that is not hex fails", in: "x\r\nabc\r\n0\r\n\r\n", wantErr: true},
		{name: "an overlong chunk size fails", in: "11111111111111111\r\n", wantErr: true},
		{name: "a body cut short fails", in: "5\r\nab", wantErr: true},
		{name: "a missing last chunk fails", in: "1\r\na\r\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			w := bufio.NewWriter(&out)
			readErr, writeErr := copyChunked(w, bufio.NewReader(strings.NewReader(tt.in)), tt.rechunk, &h1Head{})
			_ = w.Flush()
			if writeErr != nil {
				t.Fatal(writeErr)
			}
			if tt.wantErr {
				if readErr == nil {
					t.Fatalf("accepted %q", tt.in)
				}
				return
			}
			if readErr != nil || out.String() != tt.want {
				t.Fatalf("got %q, %v; want %q", out.String(), readErr, tt.want)
			}
		})
	}
}

func TestBodyReader(t *testing.T) {
	read := func(in string, chunked bool, length int64) (string, *h1Head, error) {
		trailer := &h1Head{}
		r := &bodyReader{br: bufio.NewReaderSize(strings.NewReader(in), 16), chunked: chunked, left: length, trailer: trailer}
		var out bytes.Buffer
		_, err := out.ReadFrom(r)
		return out.String(), trailer, err
	}
	t.Run("a chunked body is decoded and its trailer kept", func(t *testing.T) {
		got, trailer, err := read("4\r\nwiki\r\n5\r\npedia\r\n0\r\nX-Sum: 9\r\n\r\nGET / next", true, 0)
		if err != nil || got != "wikipedia" || len(trailer.fields) != 1 || string(trailer.bytes(trailer.fields[0].value)) != "9" {
			t.Fatalf("got %q, %d trailer fields, %v", got, len(trailer.fields), err)
		}
	})
	t.Run("a Content-Length body stops at its length", func(t *testing.T) {
		if got, _, err := read("abcdefGET /", false, 6); err != nil || got != "abcdef" {
			t.Fatalf("got %q, %v", got, err)
		}
	})
	t.Run("a body cut short fails", func(t *testing.T) {
		if _, _, err := read("abc", false, 6); err == nil {
			t.Fatal("no error")
		}
	})
}
