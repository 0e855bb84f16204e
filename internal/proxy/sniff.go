package proxy

import (
	"net"
	"time"
)

// protocol is what the first bytes of a connection say it speaks.
type protocol uint8

const (
	// protoUndecided: more bytes are needed.
	protoUndecided protocol = iota
	// protoTLS: a TLS handshake record.
	protoTLS
	// protoHTTP1: an HTTP/1.x request line.
	protoHTTP1
	// protoHTTP2: the HTTP/2 connection preface (h2c with prior knowledge).
	protoHTTP2
	// protoOther: anything else (plain TCP).
	protoOther
)

func (p protocol) String() string {
	switch p {
	case protoTLS:
		return "tls"
	case protoHTTP1:
		return "http/1"
	case protoHTTP2:
		return "h2c"
	case protoOther:
		return "tcp"
	default:
		return "undecided"
	}
}

const (
	http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	// maxMethodLength bounds an HTTP/1 method (the longest registered one has 17 bytes).
	maxMethodLength = 20
	// maxSniff is enough bytes to decide every case: a method, a space and "https://".
	maxSniff = 32
	// tlsHandshakeRecord is the first byte of a TLS ClientHello.
	tlsHandshakeRecord = 0x16
)

// classify says what a connection speaks from its first bytes, or protoUndecided when it needs
// more of them. It never needs more than maxSniff bytes. Once it decides, appending bytes does not
// change the answer.
func classify(b []byte) protocol {
	if len(b) == 0 {
		return protoUndecided
	}
	if b[0] == tlsHandshakeRecord {
		return protoTLS
	}
	if match, complete := hasPrefixSoFar(b, http2Preface); match {
		if complete {
			return protoHTTP2
		}
		return protoUndecided
	}
	return classifyRequestLine(b)
}

// classifyRequestLine recognizes the start of an HTTP/1 request line: an upper-case method, a
// space, and a request target in origin form ("/..."), asterisk form ("*"), absolute form
// ("http://", "https://") or, for CONNECT, authority form. Requiring the target keeps text
// protocols whose first word happens to be upper case ("SET key value") out of HTTP.
func classifyRequestLine(b []byte) protocol {
	space := -1
	for i, c := range b {
		if c == ' ' {
			space = i
			break
		}
		if i >= maxMethodLength || !isMethodByte(c) {
			return protoOther
		}
	}
	switch {
	case space == -1:
		return protoUndecided
	case space == 0:
		return protoOther
	}
	target := b[space+1:]
	if len(target) == 0 {
		return protoUndecided
	}
	if target[0] == '/' || target[0] == '*' || string(b[:space]) == "CONNECT" {
		return protoHTTP1
	}
	undecided := false
	for _, scheme := range [...]string{"http://", "https://"} {
		if match, complete := hasPrefixSoFar(target, scheme); match {
			if complete {
				return protoHTTP1
			}
			undecided = true
		}
	}
	if undecided {
		return protoUndecided
	}
	return protoOther
}

func isMethodByte(c byte) bool {
	return 'A' <= c && c <= 'Z' || c == '-' || c == '_'
}

// hasPrefixSoFar reports whether b and prefix agree on their common length, and whether b holds
// all of prefix.
func hasPrefixSoFar(b []byte, prefix string) (match, complete bool) {
	n := min(len(b), len(prefix))
	return string(b[:n]) == prefix[:n], n == len(prefix)
}

// replay holds the first bytes read from a connection to classify it, and hands them to the next
// reader before anything else.
type replay struct {
	buf      [maxSniff]byte
	off, end uint8
}

// readBuffered serves b from the replayed bytes, if any are left.
func (r *replay) readBuffered(b []byte) (int, bool) {
	if r.off >= r.end {
		return 0, false
	}
	n := copy(b, r.buf[r.off:r.end])
	r.off += uint8(n)
	return n, true
}

// buffered is what has been read so far.
func (r *replay) buffered() []byte { return r.buf[:r.end] }

// sniff reads from src (the connection under the replay) until classify decides, the deadline
// passes or src fails. It returns protoUndecided with the error in the last two cases; the bytes
// read so far are kept for replay either way.
func (r *replay) sniff(src net.Conn, deadline time.Time) (protocol, error) {
	if proto := classify(r.buffered()); proto != protoUndecided {
		return proto, nil
	}
	if err := src.SetReadDeadline(deadline); err != nil {
		return protoUndecided, err
	}
	defer src.SetReadDeadline(time.Time{}) //nolint:errcheck // best effort: the connection is in use
	for int(r.end) < len(r.buf) {
		n, err := src.Read(r.buf[r.end:])
		r.end += uint8(n)
		if proto := classify(r.buffered()); proto != protoUndecided {
			return proto, nil
		}
		if err != nil {
			return protoUndecided, err
		}
	}
	return protoOther, nil // unreachable: classify decides within maxSniff bytes
}

// sniffFirstByte reads until at least one byte is buffered.
func (r *replay) sniffFirstByte(src net.Conn, deadline time.Time) error {
	if r.end > 0 {
		return nil
	}
	if err := src.SetReadDeadline(deadline); err != nil {
		return err
	}
	defer src.SetReadDeadline(time.Time{}) //nolint:errcheck // best effort: the connection is in use
	for r.end == 0 {
		n, err := src.Read(r.buf[:])
		r.end = uint8(n)
		if err != nil && n == 0 {
			return err
		}
	}
	return nil
}
