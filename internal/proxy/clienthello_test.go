package proxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

// errStopHandshake ends a test server's handshake once it has seen the ClientHello.
var errStopHandshake = errors.New("test: ClientHello seen")

// recordingConn keeps what is read through it.
type recordingConn struct {
	net.Conn
	read bytes.Buffer
}

func (c *recordingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.read.Write(b[:n])
	return n, err
}

// realClientHello is the ClientHello crypto/tls sends with config, as bytes on the wire, and what
// a crypto/tls server makes of it.
func realClientHello(tb testing.TB, config *tls.Config) ([]byte, *tls.ClientHelloInfo) {
	tb.Helper()
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	go func() {
		_ = tls.Client(client, config).Handshake()
		_ = client.Close()
	}()
	rec := &recordingConn{Conn: server}
	var info *tls.ClientHelloInfo
	err := tls.Server(rec, &tls.Config{GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
		info = chi
		return nil, errStopHandshake
	}}).Handshake()
	if !errors.Is(err, errStopHandshake) || info == nil {
		tb.Fatalf("the test server did not see a ClientHello: %v", err)
	}
	return rec.read.Bytes(), info
}

// bytesConn is a net.Conn that reads b, then io.EOF, and discards what is written to it.
type bytesConn struct {
	r *bytes.Reader
}

func (c bytesConn) Read(b []byte) (int, error)     { return c.r.Read(b) }
func (bytesConn) Write(b []byte) (int, error)      { return len(b), nil }
func (bytesConn) Close() error                     { return nil }
func (bytesConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (bytesConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (bytesConn) SetDeadline(time.Time) error      { return nil }
func (bytesConn) SetReadDeadline(time.Time) error  { return nil }
func (bytesConn) SetWriteDeadline(time.Time) error { return nil }

// cryptoTLSView is what a crypto/tls server makes of b as a connection's first bytes: the
// ClientHelloInfo GetConfigForClient gets, nil when it does not get that far.
func cryptoTLSView(b []byte) *tls.ClientHelloInfo {
	var info *tls.ClientHelloInfo
	// Handshake, not HandshakeContext: a bytesConn never blocks, and a context costs a goroutine
	// and a timer per call, which starve the fuzzing worker's own timer.
	_ = tls.Server(bytesConn{r: bytes.NewReader(b)}, &tls.Config{GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
		info = chi
		return nil, errStopHandshake
	}}).Handshake()
	return info
}

// frame puts a handshake message into records of the given payload sizes (the last record
// takes the rest).
func frame(msg []byte, sizes ...int) []byte {
	var out []byte
	for i := 0; len(msg) > 0; i++ {
		n := len(msg)
		if i < len(sizes) && sizes[i] < n {
			n = sizes[i]
		}
		out = append(out, record(tlsHandshakeRecord, msg[:n])...)
		msg = msg[n:]
	}
	return out
}

// reframe puts the handshake message of a ClientHello into records of the given payload sizes.
func reframe(tb testing.TB, hello []byte, sizes ...int) []byte {
	tb.Helper()
	msg, err := clientHelloMessage(hello)
	if err != nil {
		tb.Fatal(err)
	}
	return frame(msg, sizes...)
}

// record is one TLS record.
func record(typ byte, payload []byte) []byte {
	return append([]byte{typ, 3, 1, byte(len(payload) >> 8), byte(len(payload))}, payload...)
}

// u16 prefixes b with its uint16 length.
func u16(b []byte) []byte { return append([]byte{byte(len(b) >> 8), byte(len(b))}, b...) }

// extension is an extension of type typ with data.
func extension(typ uint16, data []byte) []byte {
	return append([]byte{byte(typ >> 8), byte(typ)}, u16(data)...)
}

// serverNameExt is a server_name extension with one host_name.
func serverNameExt(name []byte) []byte {
	return extension(extensionServerName, u16(append([]byte{serverNameTypeHostName}, u16(name)...)))
}

// helloMessage is a TLS 1.2 ClientHello message with the given extensions block (nil: none).
func helloMessage(extensions []byte) []byte {
	body := []byte{3, 3}
	body = append(body, make([]byte, 32)...) // random
	body = append(body, 0)                   // session ID
	body = append(body, 0, 2, 0xc0, 0x2b)    // cipher suites
	body = append(body, 1, 0)                // compression methods
	if extensions != nil {
		body = append(body, u16(extensions)...)
	}
	return append([]byte{handshakeTypeClientHello, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}, body...)
}

// helloRecord is helloMessage in one record.
func helloRecord(extensions []byte) []byte {
	return record(tlsHandshakeRecord, helloMessage(extensions))
}

func TestParseClientHelloOfCryptoTLS(t *testing.T) {
	tests := []struct {
		name     string
		config   *tls.Config
		wantSNI  string
		wantALPN []string
	}{
		{name: "SNI and ALPN", config: &tls.Config{ServerName: "app.example.com", NextProtos: []string{"h2", "http/1.1"}},
			wantSNI: "app.example.com", wantALPN: []string{"h2", "http/1.1"}},
		{name: "SNI, no ALPN", config: &tls.Config{ServerName: "app.example.com"}, wantSNI: "app.example.com"},
		{name: "a mesh SNI", config: &tls.Config{ServerName: "http.echo.default", NextProtos: []string{"http/1.1"}},
			wantSNI: "http.echo.default", wantALPN: []string{"http/1.1"}},
		{name: "no SNI (an IP address), ALPN", config: &tls.Config{ServerName: "10.1.2.3", NextProtos: []string{"h2"}},
			wantALPN: []string{"h2"}},
		{name: "no SNI, no ALPN", config: &tls.Config{InsecureSkipVerify: true}}, //nolint:gosec // never completes
		{name: "TLS 1.2 only", config: &tls.Config{ServerName: "app.example.com", MaxVersion: tls.VersionTLS12, NextProtos: []string{"x"}},
			wantSNI: "app.example.com", wantALPN: []string{"x"}},
		{name: "a long ALPN list", config: &tls.Config{ServerName: "a.b", NextProtos: []string{strings.Repeat("p", 255), "q", "h2"}},
			wantSNI: "a.b", wantALPN: []string{strings.Repeat("p", 255), "q", "h2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wire, info := realClientHello(t, tt.config)
			if info.ServerName != tt.wantSNI || !slices.Equal(info.SupportedProtos, tt.wantALPN) {
				t.Fatalf("crypto/tls saw %q %q, the test wants %q %q", info.ServerName, info.SupportedProtos, tt.wantSNI, tt.wantALPN)
			}
			hello, err := parseClientHello(wire)
			if err != nil {
				t.Fatalf("parseClientHello: %v", err)
			}
			if hello.serverName != tt.wantSNI || !slices.Equal(hello.alpn, tt.wantALPN) {
				t.Errorf("parsed %q %q, want %q %q", hello.serverName, hello.alpn, tt.wantSNI, tt.wantALPN)
			}
			// Every shorter prefix needs more bytes; bytes after the ClientHello change nothing.
			for n := range len(wire) {
				if _, err := parseClientHello(wire[:n]); err != errHelloIncomplete {
					t.Fatalf("a prefix of %d of %d bytes: %v, want errHelloIncomplete", n, len(wire), err)
				}
			}
			more := append(slices.Clip(wire), record(0x17, []byte("early data"))...)
			if again, err := parseClientHello(more); err != nil || again.serverName != hello.serverName || !slices.Equal(again.alpn, hello.alpn) {
				t.Errorf("with a record after it: %q %q, %v", again.serverName, again.alpn, err)
			}
		})
	}
}

func TestParseClientHelloSplitAcrossRecords(t *testing.T) {
	wire, _ := realClientHello(t, &tls.Config{ServerName: "app.example.com", NextProtos: []string{"h2", "http/1.1"}})
	msgLen := len(wire) - tlsRecordHeaderLen
	for _, sizes := range [][]int{
		{1},                 // the handshake header straddles two records
		{2, 1, 1},           // and three
		{4},                 // the body starts in the second record
		{msgLen / 2},        // two halves
		{100, 100, 100, 50}, // five records
		{40, 1, 1, 1, 1, 1}, // tiny records in the middle
	} {
		split := reframe(t, wire, sizes...)
		info := cryptoTLSView(split)
		if info == nil {
			t.Fatalf("crypto/tls does not take the ClientHello split %v", sizes)
		}
		hello, err := parseClientHello(split)
		if err != nil {
			t.Fatalf("split %v: %v", sizes, err)
		}
		if hello.serverName != "app.example.com" || !slices.Equal(hello.alpn, []string{"h2", "http/1.1"}) {
			t.Errorf("split %v: parsed %q %q", sizes, hello.serverName, hello.alpn)
		}
		for n := range len(split) {
			if _, err := parseClientHello(split[:n]); err != errHelloIncomplete {
				t.Fatalf("split %v, a prefix of %d of %d bytes: %v, want errHelloIncomplete", sizes, n, len(split), err)
			}
		}
	}
}

func TestParseClientHelloRefusesMalformedInput(t *testing.T) {
	wire, _ := realClientHello(t, &tls.Config{ServerName: "app.example.com"})
	msg, _ := clientHelloMessage(wire)
	sni := serverNameExt([]byte("app.example.com"))
	// Padding (extension 21) makes the message 16 KiB + 1 long.
	tooLarge := helloMessage(extension(21, make([]byte, 16<<10-2-32-1-4-2-2-4+1)))
	if len(tooLarge) != 4+16<<10+1 {
		t.Fatalf("the large ClientHello has %d bytes", len(tooLarge))
	}
	ones := make([]int, 64)
	for i := range ones {
		ones[i] = 1
	}
	halves := reframe(t, wire, 50)

	tests := []struct {
		name string
		in   []byte
		want error
		// stricter: crypto/tls takes it (the proxy's bounds are tighter, on purpose)
		stricter bool
	}{
		{name: "application data first", in: record(0x17, msg), want: errHelloNotHandshake},
		{name: "a record version from the future", in: []byte{0x16, 0x10, 0x00}, want: errHelloRecordVersion},
		{name: "an empty handshake record", in: []byte{0x16, 3, 1, 0, 0}, want: errHelloEmptyRecord},
		{name: "a record longer than 16 KiB", in: []byte{0x16, 3, 1, 0x40, 0x01}, want: errHelloRecordTooLarge},
		{name: "a ServerHello", in: record(tlsHandshakeRecord, []byte{2, 0, 0, 1, 0}), want: errHelloNotClientHello},
		{name: "a ClientHello longer than 16 KiB", in: frame(tooLarge, 16<<10), want: errHelloTooLarge, stricter: true},
		{name: "more than 64 records", in: frame(msg, ones...), want: errHelloTooManyRecords, stricter: true},
		{name: "an alert inside the ClientHello",
			in:   slices.Concat(halves[:tlsRecordHeaderLen+50], record(0x15, []byte{1, 100}), halves[tlsRecordHeaderLen+50:]),
			want: errHelloInterleaved, stricter: true},
		{name: "a truncated body", in: record(tlsHandshakeRecord, []byte{1, 0, 0, 3, 3, 3, 0}), want: errHelloMalformed},
		{name: "an odd cipher suite list", in: bytes.Replace(helloRecord(nil), []byte{0, 2, 0xc0, 0x2b, 1}, []byte{0, 1, 0xc0, 0x2b, 1}, 1), want: errHelloMalformed},
		{name: "bytes after the extensions", in: appendToHello(helloRecord(sni), 0), want: errHelloMalformed},
		{name: "a truncated extension", in: helloRecord([]byte{0, 0, 0, 9, 1}), want: errHelloMalformed},
		{name: "two server_name extensions", in: helloRecord(slices.Concat(sni, sni)), want: errHelloDuplicateExt},
		{name: "two ALPN extensions", in: helloRecord(slices.Concat(extension(extensionALPN, u16([]byte{2, 'h', '2'})), extension(extensionALPN, u16([]byte{2, 'h', '2'})))), want: errHelloDuplicateExt},
		{name: "an SNI with a trailing dot", in: helloRecord(serverNameExt([]byte("app.example.com."))), want: errHelloMalformedSNI},
		{name: "an empty SNI", in: helloRecord(serverNameExt([]byte{})), want: errHelloMalformedSNI},
		{name: "an empty server name list", in: helloRecord(extension(extensionServerName, u16(nil))), want: errHelloMalformedSNI},
		{name: "two host names", in: helloRecord(extension(extensionServerName, u16(slices.Concat([]byte{0}, u16([]byte("a.b")), []byte{0}, u16([]byte("c.d")))))), want: errHelloMalformedSNI},
		{name: "bytes after the server name list", in: helloRecord(extension(extensionServerName, append(u16(slices.Concat([]byte{0}, u16([]byte("a.b")))), 0))), want: errHelloMalformedSNI},
		{name: "an empty ALPN protocol", in: helloRecord(extension(extensionALPN, u16([]byte{2, 'h', '2', 0}))), want: errHelloMalformedALPN},
		{name: "an empty ALPN list", in: helloRecord(extension(extensionALPN, u16(nil))), want: errHelloMalformedALPN},
		{name: "a truncated ALPN protocol", in: helloRecord(extension(extensionALPN, u16([]byte{3, 'h', '2'}))), want: errHelloMalformedALPN},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := parseClientHello(tt.in); err != tt.want {
				t.Errorf("parseClientHello: %v, want %v", err, tt.want)
			}
			if info := cryptoTLSView(tt.in); (info != nil) != tt.stricter {
				t.Errorf("crypto/tls took it: %v, want %v", info != nil, tt.stricter)
			}
		})
	}

	t.Run("refused before the rest arrives", func(t *testing.T) {
		for _, prefix := range [][]byte{{0x17}, {0x16, 0x10}, {0x16, 3, 1, 0, 0}, {0x16, 3, 1, 0, 9, 2}, {0x16, 3, 1, 0, 9, 1, 0, 0x40, 1}} {
			if _, err := parseClientHello(prefix); err == nil || err == errHelloIncomplete {
				t.Errorf("% x: %v, want a refusal", prefix, err)
			}
		}
	})
}

// appendToHello appends b to the single-record ClientHello hello, fixing both lengths.
func appendToHello(hello []byte, b ...byte) []byte {
	out := append(slices.Clip(hello), b...)
	n := len(out) - tlsRecordHeaderLen
	out[3], out[4] = byte(n>>8), byte(n)
	n -= 4
	out[6], out[7], out[8] = byte(n>>16), byte(n>>8), byte(n)
	return out
}

func TestParseClientHelloExtensionsItDoesNotRead(t *testing.T) {
	// A server_name entry of another type is skipped, as crypto/tls does; unknown extensions
	// are ignored.
	in := helloRecord(slices.Concat(
		extension(extensionServerName, u16(slices.Concat([]byte{1}, u16([]byte("other")), []byte{0}, u16([]byte("a.example"))))),
		extension(0xff01, []byte{0}),
		extension(0x1234, nil)))
	hello, err := parseClientHello(in)
	if err != nil || hello.serverName != "a.example" || hello.alpn != nil {
		t.Fatalf("parsed %q %q, %v", hello.serverName, hello.alpn, err)
	}
	if info := cryptoTLSView(in); info == nil || info.ServerName != "a.example" {
		t.Fatalf("crypto/tls saw %+v", info)
	}
	if hello, err := parseClientHello(helloRecord(nil)); err != nil || hello.serverName != "" || hello.alpn != nil {
		t.Fatalf("without extensions: %q %q, %v", hello.serverName, hello.alpn, err)
	}
}

func TestParseClientHelloAllocations(t *testing.T) {
	withBoth, _ := realClientHello(t, &tls.Config{ServerName: "app.example.com", NextProtos: []string{"h2", "http/1.1"}})
	without, _ := realClientHello(t, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // never completes
	if n := testing.AllocsPerRun(100, func() { _, _ = parseClientHello(without) }); n != 0 {
		t.Errorf("%v allocations for a ClientHello without SNI and ALPN, want 0", n)
	}
	// The server name, the ALPN list and its two protocols.
	if n := testing.AllocsPerRun(100, func() { _, _ = parseClientHello(withBoth) }); n > 4 {
		t.Errorf("%v allocations for a ClientHello with SNI and two ALPN protocols, want at most 4", n)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = parseClientHello(without[:100]) }); n != 0 {
		t.Errorf("%v allocations for an incomplete ClientHello, want 0", n)
	}
}

// tcpPair is a connected pair of TCP connections on 127.0.0.1: the client side and the accepted
// side as the proxy would track it (not in a generation: close c.Conn, not c).
func tcpPair(t *testing.T) (net.Conn, *trackedConn) {
	t.Helper()
	l, _ := listenLocal(t)
	defer l.Close()
	client, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close(); _ = server.Close() })
	return client, &trackedConn{Conn: server}
}

// trickle writes b in pieces of size bytes, pause apart.
func trickle(t *testing.T, conn net.Conn, b []byte, size int, pause time.Duration) {
	t.Helper()
	for len(b) > 0 {
		n := min(size, len(b))
		if _, err := conn.Write(b[:n]); err != nil {
			t.Errorf("write: %v", err)
			return
		}
		b = b[n:]
		time.Sleep(pause)
	}
}

func TestPeekClientHelloLeavesTheBytesToTheNextReader(t *testing.T) {
	wire, _ := realClientHello(t, &tls.Config{ServerName: "app.example.com", NextProtos: []string{"h2"}})
	for _, tt := range []struct {
		name string
		in   []byte
		size int
	}{
		{name: "one write", in: wire, size: len(wire)},
		{name: "in 7-byte writes", in: wire, size: 7},
		{name: "split across two records, in 3-byte writes", in: reframe(t, wire, 2), size: 3},
		{name: "split across five records, in 50-byte writes", in: reframe(t, wire, 30, 30, 200, 9), size: 50},
	} {
		t.Run(tt.name, func(t *testing.T) {
			client, c := tcpPair(t)
			after := []byte("after the hello")
			go func() {
				trickle(t, client, tt.in, tt.size, time.Millisecond)
				_, _ = client.Write(after)
			}()
			deadline := time.Now().Add(10 * time.Second)
			if err := c.sniffFirstByte(c.Conn, deadline); err != nil {
				t.Fatal(err)
			}
			hello, err := peekClientHello(c, deadline)
			if err != nil {
				t.Fatalf("peekClientHello: %v", err)
			}
			if hello.serverName != "app.example.com" || !slices.Equal(hello.alpn, []string{"h2"}) {
				t.Errorf("peeked %q %q", hello.serverName, hello.alpn)
			}
			got := make([]byte, len(tt.in)+len(after))
			_ = c.Conn.SetReadDeadline(deadline)
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatal(err)
			}
			if want := slices.Concat(tt.in, after); !bytes.Equal(got, want) {
				t.Errorf("the next reader got % x, want % x", got, want)
			}
		})
	}
}

func TestPeekClientHelloFailures(t *testing.T) {
	wire, _ := realClientHello(t, &tls.Config{ServerName: "app.example.com"})
	t.Run("a client that stops half way times out at the deadline", func(t *testing.T) {
		client, c := tcpPair(t)
		if _, err := client.Write(wire[:len(wire)/2]); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(200 * time.Millisecond)
		if err := c.sniffFirstByte(c.Conn, deadline); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if _, err := peekClientHello(c, deadline); !isTimeout(err) {
			t.Fatalf("peekClientHello: %v, want a timeout", err)
		}
		if waited := time.Since(start); waited > 5*time.Second {
			t.Errorf("waited %v", waited)
		}
	})
	t.Run("a client that closes half way", func(t *testing.T) {
		client, c := tcpPair(t)
		if _, err := client.Write(wire[:len(wire)/2]); err != nil {
			t.Fatal(err)
		}
		_ = client.Close()
		deadline := time.Now().Add(10 * time.Second)
		if err := c.sniffFirstByte(c.Conn, deadline); err != nil {
			t.Fatal(err)
		}
		if _, err := peekClientHello(c, deadline); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("peekClientHello: %v, want io.ErrUnexpectedEOF", err)
		}
	})
	t.Run("malformed bytes are refused without waiting for more", func(t *testing.T) {
		client, c := tcpPair(t)
		bad := slices.Clone(wire[:60])
		bad[tlsRecordHeaderLen] = 2 // a ServerHello
		if _, err := client.Write(bad); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		if err := c.sniffFirstByte(c.Conn, deadline); err != nil {
			t.Fatal(err)
		}
		if _, err := peekClientHello(c, deadline); err != errHelloNotClientHello {
			t.Fatalf("peekClientHello: %v, want errHelloNotClientHello", err)
		}
	})
}

// FuzzParseClientHello: no input makes parseClientHello panic or read past maxClientHelloPrefix
// bytes; once it decides, more bytes do not change its answer; and it agrees with crypto/tls:
// when a crypto/tls server parses the bytes as a connection's ClientHello, parseClientHello
// returns the same server name and ALPN list (unless its bounds, tighter on purpose, refuse
// it). Real ClientHellos are 1-2 KB, and Go minimizes each new interesting input for
// -fuzzminimizetime (60 s by default) in time quadratic in its length: run it with
// -fuzzminimizetime=50x to spend the time fuzzing.
func FuzzParseClientHello(f *testing.F) {
	for _, config := range []*tls.Config{
		{ServerName: "app.example.com", NextProtos: []string{"h2", "http/1.1"}},
		{ServerName: "http.echo.default"},
		{InsecureSkipVerify: true}, //nolint:gosec // never completes
		{ServerName: "a.b", MaxVersion: tls.VersionTLS12, NextProtos: []string{"x"}},
	} {
		wire, _ := realClientHello(f, config)
		f.Add(wire)
		f.Add(reframe(f, wire, 1))
		f.Add(reframe(f, wire, 10, 20, 30))
		f.Add(wire[:len(wire)/2])
	}
	f.Add(helloRecord(nil))
	f.Add(helloRecord(serverNameExt([]byte("a."))))
	f.Add(helloRecord(extension(extensionALPN, u16([]byte{2, 'h', '2', 0}))))
	f.Add([]byte{0x16, 3, 1, 0, 0})
	f.Add([]byte{0x16, 3, 1, 0x40, 0})

	f.Fuzz(func(t *testing.T, b []byte) {
		hello, err := parseClientHello(b)
		if _, ok := err.(clientHelloError); err != nil && !ok {
			t.Fatalf("an error of another type: %v", err)
		}
		if len(b) >= maxClientHelloPrefix && err == errHelloIncomplete {
			t.Fatalf("undecided after %d bytes", len(b))
		}
		if err == nil && len(b) > maxClientHelloPrefix {
			if h, err := parseClientHello(b[:maxClientHelloPrefix]); err != nil || h.serverName != hello.serverName {
				t.Fatalf("read past %d bytes", maxClientHelloPrefix)
			}
		}
		// Prefixes: undecided, or the same answer.
		for _, n := range []int{len(b) / 4, len(b) / 2, len(b) - 1} {
			if n < 0 {
				continue
			}
			h, perr := parseClientHello(b[:n])
			if perr == errHelloIncomplete {
				continue
			}
			if perr != err || h.serverName != hello.serverName || !slices.Equal(h.alpn, hello.alpn) {
				t.Fatalf("a prefix of %d bytes says %q %q %v, all %d say %q %q %v", n, h.serverName, h.alpn, perr, len(b), hello.serverName, hello.alpn, err)
			}
		}
		if len(b) == 0 || b[0] != tlsHandshakeRecord {
			return // the proxy only parses connections whose first byte is a handshake record
		}
		info := cryptoTLSView(b)
		if info == nil {
			return
		}
		switch err {
		case nil:
		case errHelloTooLarge, errHelloTooManyRecords, errHelloInterleaved:
			return
		default:
			t.Fatalf("crypto/tls parses a ClientHello for %q %q, parseClientHello says %v", info.ServerName, info.SupportedProtos, err)
		}
		if hello.serverName != info.ServerName || !slices.Equal(hello.alpn, info.SupportedProtos) {
			t.Fatalf("parsed %q %q, crypto/tls %q %q", hello.serverName, hello.alpn, info.ServerName, info.SupportedProtos)
		}
	})
}
