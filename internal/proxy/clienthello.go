package proxy

import (
	"io"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A captured inbound connection that starts with a TLS handshake is not necessarily mesh mTLS:
// an app may serve TLS itself on a port capture redirects (an HTTPS app on :8443), and its
// clients outside the mesh send ClientHellos too. Under PERMISSIVE the proxy reads the
// ClientHello without consuming it (peekClientHello) and hands the connection to its own mTLS
// handshake only when the server name is a mesh SNI it serves; any other ClientHello (another
// server name, or none) is piped to the app port the client addressed, where the app completes
// its own handshake (passAppTLS). Under STRICT nothing here runs: only mesh identities reach
// app ports.

// Bounds of a ClientHello the proxy reads to route a connection. crypto/tls accepts handshake
// messages up to 64 KiB; real ClientHellos are below 2 KiB (with a post-quantum key share) and a
// few padding extensions at most reach 16 KiB.
const (
	tlsRecordHeaderLen = 5
	// maxTLSRecordPayload is the largest plaintext record (RFC 8446, section 5.1).
	maxTLSRecordPayload = 16 << 10
	// maxClientHelloLen bounds the ClientHello message's body (its uint24 length field).
	maxClientHelloLen = 16 << 10
	// maxClientHelloRecords bounds the records a ClientHello may be split into.
	maxClientHelloRecords = 64
	// maxClientHelloPrefix is the most bytes parseClientHello needs: that many record headers,
	// the handshake header and the message.
	maxClientHelloPrefix = maxClientHelloRecords*tlsRecordHeaderLen + 4 + maxClientHelloLen

	handshakeTypeClientHello = 1
	extensionServerName      = 0
	extensionALPN            = 16
	serverNameTypeHostName   = 0
)

// clientHelloError is why bytes are not (yet) a ClientHello. Its values are constants, so
// parsing allocates no error.
type clientHelloError string

func (e clientHelloError) Error() string { return "tls client hello: " + string(e) }

const (
	// errHelloIncomplete: the bytes are a valid start of a ClientHello; more are needed.
	errHelloIncomplete clientHelloError = "incomplete"

	errHelloNotHandshake    clientHelloError = "first record is not a handshake record"
	errHelloRecordVersion   clientHelloError = "record version is not TLS"
	errHelloEmptyRecord     clientHelloError = "empty handshake record"
	errHelloRecordTooLarge  clientHelloError = "record longer than 16 KiB"
	errHelloNotClientHello  clientHelloError = "first handshake message is not a ClientHello"
	errHelloMalformed       clientHelloError = "malformed ClientHello"
	errHelloDuplicateExt    clientHelloError = "duplicate extension"
	errHelloMalformedSNI    clientHelloError = "malformed server_name extension"
	errHelloMalformedALPN   clientHelloError = "malformed application_layer_protocol_negotiation extension"
	errHelloNoPeek          clientHelloError = "the connection cannot be peeked"
	errHelloPeekedTooLittle clientHelloError = "the ClientHello did not fit the peek buffer"

	// Stricter than crypto/tls, on purpose: the proxy reads at most maxClientHelloPrefix bytes
	// ahead, and RFC 8446 (section 5.1) forbids interleaving other records with a handshake
	// message.
	errHelloTooLarge       clientHelloError = "ClientHello longer than 16 KiB"
	errHelloTooManyRecords clientHelloError = "ClientHello split into more than 64 records"
	errHelloInterleaved    clientHelloError = "another record type inside the ClientHello"
)

// clientHello is what routing needs from a ClientHello.
type clientHello struct {
	// serverName is the server_name extension's host_name, "" without one.
	serverName string
	// alpn is the application_layer_protocol_negotiation list, in the client's order.
	alpn []string
}

// parseClientHello parses the TLS ClientHello at the start of b: a handshake message in one or
// more handshake records (what a TLS client sends first). It returns errHelloIncomplete when b
// is a valid start that needs more bytes (never once b holds maxClientHelloPrefix bytes), and
// another clientHelloError as soon as b cannot start a ClientHello. Bytes after the message
// (the rest of its last record, the records after it) are not looked at. It checks the structure as crypto/tls does (record
// headers, lengths, duplicate extensions, server_name and ALPN) and no other extension: a
// ClientHello crypto/tls parses is parsed here with the same server name and ALPN list.
// It allocates only the results (and the message, when it spans several records).
func parseClientHello(b []byte) (clientHello, error) {
	msg, err := clientHelloMessage(b)
	if err != nil {
		return clientHello{}, err
	}
	return parseClientHelloBody(msg[4:])
}

// clientHelloMessage reassembles the handshake message (header included) from the records at
// the start of b.
func clientHelloMessage(b []byte) ([]byte, error) {
	var head [4]byte
	need, have := -1, 0 // need: 4 + the message length, once the header is in
	rest := b
	records := 0
	for need < 0 || have < need {
		if records == maxClientHelloRecords {
			return nil, errHelloTooManyRecords
		}
		if len(rest) == 0 {
			return nil, errHelloIncomplete
		}
		if rest[0] != tlsHandshakeRecord {
			if records == 0 {
				return nil, errHelloNotHandshake
			}
			return nil, errHelloInterleaved
		}
		// crypto/tls takes any version below 16.0 in the records before the ServerHello.
		if len(rest) >= 2 && rest[1] >= 0x10 {
			return nil, errHelloRecordVersion
		}
		if len(rest) < tlsRecordHeaderLen {
			return nil, errHelloIncomplete
		}
		n := int(rest[3])<<8 | int(rest[4])
		switch {
		case n == 0:
			return nil, errHelloEmptyRecord
		case n > maxTLSRecordPayload:
			return nil, errHelloRecordTooLarge
		}
		payload := rest[tlsRecordHeaderLen:]
		complete := len(payload) >= n
		if complete {
			payload = payload[:n]
		}
		for i := 0; have+i < len(head) && i < len(payload); i++ {
			head[have+i] = payload[i]
		}
		have += len(payload)
		if have > 0 && head[0] != handshakeTypeClientHello {
			return nil, errHelloNotClientHello
		}
		if need < 0 && have >= len(head) {
			length := int(head[1])<<16 | int(head[2])<<8 | int(head[3])
			if length > maxClientHelloLen {
				return nil, errHelloTooLarge
			}
			need = len(head) + length
		}
		if records == 0 && need >= 0 && have >= need {
			// The common case: the message is in the first record.
			return payload[:need], nil
		}
		if !complete {
			if need >= 0 && have >= need {
				break // the rest of the record is not the ClientHello's
			}
			return nil, errHelloIncomplete
		}
		rest = rest[tlsRecordHeaderLen+n:]
		records++
	}
	msg := make([]byte, 0, need)
	for rest := b; len(msg) < need; {
		n := int(rest[3])<<8 | int(rest[4])
		payload := rest[tlsRecordHeaderLen:min(len(rest), tlsRecordHeaderLen+n)]
		msg = append(msg, payload[:min(len(payload), need-len(msg))]...)
		rest = rest[len(payload)+tlsRecordHeaderLen:]
	}
	return msg, nil
}

// parseClientHelloBody parses the ClientHello's body (RFC 8446, section 4.1.2; RFC 5246,
// section 7.4.1.2) as crypto/tls does, and reads its server_name and ALPN extensions.
func parseClientHelloBody(body []byte) (clientHello, error) {
	s := helloReader(body)
	var sessionID, suites, compression helloReader
	if !s.skip(2+32) || // legacy_version, random
		!s.prefixed8(&sessionID) ||
		!s.prefixed16(&suites) || len(suites)%2 != 0 ||
		!s.prefixed8(&compression) {
		return clientHello{}, errHelloMalformed
	}
	if len(s) == 0 {
		return clientHello{}, nil // no extensions
	}
	var extensions helloReader
	if !s.prefixed16(&extensions) || len(s) != 0 {
		return clientHello{}, errHelloMalformed
	}
	var (
		hello clientHello
		seen  [1 << 16 / 64]uint64 // extension types, a bit each
	)
	for len(extensions) > 0 {
		var typ uint16
		var data helloReader
		if !extensions.u16(&typ) || !extensions.prefixed16(&data) {
			return clientHello{}, errHelloMalformed
		}
		if seen[typ/64]&(1<<(typ%64)) != 0 {
			return clientHello{}, errHelloDuplicateExt
		}
		seen[typ/64] |= 1 << (typ % 64)
		var err error
		switch typ {
		case extensionServerName:
			hello.serverName, err = parseServerName(data)
		case extensionALPN:
			hello.alpn, err = parseALPN(data)
		}
		if err != nil {
			return clientHello{}, err
		}
	}
	return hello, nil
}

// parseServerName reads a server_name extension (RFC 6066, section 3): a non-empty list of
// non-empty names, at most one of type host_name, which does not end with a dot.
func parseServerName(data helloReader) (string, error) {
	var list helloReader
	if !data.prefixed16(&list) || len(list) == 0 || len(data) != 0 {
		return "", errHelloMalformedSNI
	}
	var hostName []byte
	for len(list) > 0 {
		var typ uint8
		var name helloReader
		if !list.u8(&typ) || !list.prefixed16(&name) || len(name) == 0 {
			return "", errHelloMalformedSNI
		}
		if typ != serverNameTypeHostName {
			continue
		}
		if hostName != nil || name[len(name)-1] == '.' {
			return "", errHelloMalformedSNI
		}
		hostName = name
	}
	return string(hostName), nil
}

// parseALPN reads an application_layer_protocol_negotiation extension (RFC 7301, section
// 3.1): a non-empty list of non-empty protocol names.
func parseALPN(data helloReader) ([]string, error) {
	var list helloReader
	if !data.prefixed16(&list) || len(list) == 0 || len(data) != 0 {
		return nil, errHelloMalformedALPN
	}
	count := 0
	for l := list; len(l) > 0; count++ {
		var proto helloReader
		if !l.prefixed8(&proto) || len(proto) == 0 {
			return nil, errHelloMalformedALPN
		}
	}
	protos := make([]string, 0, count)
	for len(list) > 0 {
		var proto helloReader
		list.prefixed8(&proto)
		protos = append(protos, string(proto))
	}
	return protos, nil
}

// helloReader reads big-endian fields from the front of a byte slice.
type helloReader []byte

func (r *helloReader) skip(n int) bool {
	if len(*r) < n {
		return false
	}
	*r = (*r)[n:]
	return true
}

func (r *helloReader) u8(out *uint8) bool {
	if len(*r) < 1 {
		return false
	}
	*out = (*r)[0]
	*r = (*r)[1:]
	return true
}

func (r *helloReader) u16(out *uint16) bool {
	if len(*r) < 2 {
		return false
	}
	*out = uint16((*r)[0])<<8 | uint16((*r)[1])
	*r = (*r)[2:]
	return true
}

func (r *helloReader) prefixed(n int, out *helloReader) bool {
	if len(*r) < n {
		return false
	}
	var length int
	for _, c := range (*r)[:n] {
		length = length<<8 | int(c)
	}
	if len(*r) < n+length {
		return false
	}
	*out = (*r)[n : n+length]
	*r = (*r)[n+length:]
	return true
}

func (r *helloReader) prefixed8(out *helloReader) bool  { return r.prefixed(1, out) }
func (r *helloReader) prefixed16(out *helloReader) bool { return r.prefixed(2, out) }

// helloBuffers hold the bytes peekClientHello looks at.
var helloBuffers = sync.Pool{New: func() any { return new([maxClientHelloPrefix]byte) }}

// peekClientHello waits, until deadline, for the whole ClientHello at the start of c and parses
// it without consuming it: after the bytes c buffered to sniff its first byte, the rest stay in
// the socket's receive queue (recv with MSG_PEEK), so whoever serves c next reads the
// connection from its first byte. It needs c's socket (a syscall.Conn): every connection
// capture redirects has one.
func peekClientHello(c *trackedConn, deadline time.Time) (clientHello, error) {
	sniffed := c.buffered()
	if hello, err := parseClientHello(sniffed); err != errHelloIncomplete {
		return hello, err
	}
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return clientHello{}, errHelloNoPeek
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return clientHello{}, err
	}
	buf := helloBuffers.Get().(*[maxClientHelloPrefix]byte)
	defer helloBuffers.Put(buf)
	start := copy(buf[:], sniffed)

	if err := c.Conn.SetReadDeadline(deadline); err != nil {
		return clientHello{}, err
	}
	defer c.Conn.SetReadDeadline(time.Time{}) //nolint:errcheck // best effort: the connection is in use
	var (
		hello  clientHello
		result error = errHelloIncomplete
		peeked       = -1
	)
	// RawConn.Read calls peek until it returns true, waiting for the socket to become readable
	// (new bytes arrive: the poller is edge-triggered) or for the read deadline between calls.
	peek := func(fd uintptr) bool {
		for {
			n, _, err := syscall.Recvfrom(int(fd), buf[start:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			switch {
			case err == syscall.EINTR:
				continue
			case err == syscall.EAGAIN:
				return false
			case err != nil:
				result = err
				return true
			case n == 0:
				result = io.ErrUnexpectedEOF // the client closed before its ClientHello was complete
				return true
			}
			if n != peeked {
				peeked = n
				hello, result = parseClientHello(buf[:start+n])
				if result != errHelloIncomplete {
					return true
				}
				if start+n == len(buf) { // unreachable: parseClientHello decides within the buffer
					result = errHelloPeekedTooLittle
					return true
				}
			}
			// A peek does not see the end of the stream behind the bytes it returns.
			if peerClosedWriting(fd) {
				result = io.ErrUnexpectedEOF
				return true
			}
			return false
		}
	}
	if err := raw.Read(peek); err != nil {
		return clientHello{}, err
	}
	return hello, result
}

// peerClosedWriting reports whether the socket fd has received its peer's FIN (or failed),
// without reading or waiting.
func peerClosedWriting(fd uintptr) bool {
	fds := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
	n, err := unix.Poll(fds[:], 0)
	return err == nil && n > 0 && fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0
}

// passAppTLS serves a TLS connection that capture redirected to the inbound listener under
// PERMISSIVE when its ClientHello is not for the proxy: it pipes it, ClientHello included, to
// plain (the app port the client addressed, from plaintextTargetFor), where the app terminates
// its own TLS. It returns false, having read nothing from c, when the ClientHello's server name
// is a mesh SNI this proxy serves, or when the ClientHello cannot be read (then the proxy's
// handshake refuses it as before).
func (p *Proxy) passAppTLS(c *trackedConn, plain *target, deadline time.Time) bool {
	hello, err := peekClientHello(c, deadline)
	if err != nil {
		p.log.V(1).Info("Could not read a captured ClientHello: handshaking it as mTLS", "remote", c.RemoteAddr().String(), "error", err.Error())
		return false
	}
	if _, ok := p.cfg.Route(hello.serverName, p.opts.Namespace); ok {
		return false
	}
	p.metrics.appTLSPassthrough.Inc()
	p.log.V(1).Info("Passing a captured TLS connection through to the app", "remote", c.RemoteAddr().String(),
		"port", plain.port.Port, "serverName", hello.serverName, "alpn", hello.alpn)
	p.pipeToApp(plain, c)
	return true
}
