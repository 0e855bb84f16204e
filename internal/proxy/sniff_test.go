package proxy

import (
	"testing"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		name  string
		bytes string
		want  protocol
	}{
		{name: "nothing yet is undecided", bytes: "", want: protoUndecided},
		{name: "a TLS handshake record is TLS", bytes: "\x16\x03\x01\x02\x00", want: protoTLS},
		{name: "a GET request line is HTTP/1", bytes: "GET / HTTP/1.1\r\n", want: protoHTTP1},
		{name: "a POST with a query is HTTP/1", bytes: "POST /v1/items?x=1 HTTP/1.1", want: protoHTTP1},
		{name: "a WebDAV method is HTTP/1", bytes: "PROPFIND /a HTTP/1.1", want: protoHTTP1},
		{name: "OPTIONS * is HTTP/1", bytes: "OPTIONS * HTTP/1.1", want: protoHTTP1},
		{name: "CONNECT in authority form is HTTP/1", bytes: "CONNECT example.com:443 HTTP/1.1", want: protoHTTP1},
		{name: "an absolute-form target is HTTP/1", bytes: "GET http://example.com/ HTTP/1.1", want: protoHTTP1},
		{name: "an https absolute-form target is HTTP/1", bytes: "GET https://example.com/ HTTP/1.1", want: protoHTTP1},
		{name: "a method without its target is undecided", bytes: "GET ", want: protoUndecided},
		{name: "half a method is undecided", bytes: "GE", want: protoUndecided},
		{name: "half an absolute target is undecided", bytes: "GET http:/", want: protoUndecided},
		{name: "the HTTP/2 preface is h2c", bytes: http2Preface, want: protoHTTP2},
		{name: "the start of the HTTP/2 preface is undecided", bytes: "PRI * HTTP/2.0\r\n", want: protoUndecided},
		{name: "PRI with another target is HTTP/1", bytes: "PRI /x HTTP/1.1", want: protoHTTP1},
		{name: "a Redis inline command is not HTTP", bytes: "SET key value\r\n", want: protoOther},
		{name: "a RESP array is not HTTP", bytes: "*3\r\n$3\r\nSET\r\n", want: protoOther},
		{name: "a lower-case method is not HTTP", bytes: "get / HTTP/1.1", want: protoOther},
		{name: "a leading space is not HTTP", bytes: " GET /", want: protoOther},
		{name: "a method longer than any is not HTTP", bytes: "ABCDEFGHIJKLMNOPQRSTUVWXYZ /", want: protoOther},
		{name: "binary is not HTTP", bytes: "\x00\x01\x02", want: protoOther},
		{name: "a MySQL-like greeting is not HTTP", bytes: "J\x00\x00\x00\x0a8.0.32", want: protoOther},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := classify([]byte(tt.bytes)); got != tt.want {
				t.Fatalf("classify(%q) = %v, want %v", tt.bytes, got, tt.want)
			}
		})
	}
}

// FuzzClassify checks what sniffing relies on: classify decides within maxSniff bytes, and a
// decision does not change when more bytes arrive.
func FuzzClassify(f *testing.F) {
	for _, seed := range []string{"", "GET / HTTP/1.1\r\n", http2Preface, "\x16\x03\x01", "CONNECT a:1 ", "GET http://x/", "SET k v", "PRI * HTTP/2.0"} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		final := classify(b)
		if len(b) >= maxSniff && final == protoUndecided {
			t.Fatalf("classify(%q) is undecided after %d bytes", b, len(b))
		}
		decided := protoUndecided
		for i := range len(b) + 1 {
			got := classify(b[:i])
			if decided != protoUndecided && got != decided {
				t.Fatalf("classify changed its mind from %v to %v at %d bytes of %q", decided, got, i, b)
			}
			if got != protoUndecided {
				decided = got
			}
		}
		if decided != final {
			t.Fatalf("classify(%q) = %v, prefixes said %v", b, final, decided)
		}
	})
}
