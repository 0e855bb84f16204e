package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
)

// The HTTP/1.1 fast path (h1*.go) reads and writes message heads itself: a request head from a
// client (untrusted: the app, another proxy) and a response head from an upstream. The bytes of
// a head are kept in one buffer per connection and its fields are spans of it, so that reading
// and forwarding a head allocates nothing once the connection is warm.

const (
	// maxHeadBytes bounds a request or response head (and a trailer section), as net/http's
	// server does by default (DefaultMaxHeaderBytes and its 4 KiB of read slack). Responses get
	// the same bound as requests: an upstream (another workload, or an app that reflects what a
	// client sent) is no more trusted than a client, and net/http's transport default of 10 MiB
	// per head would let each in-flight response hold that much of the proxy's memory.
	maxHeadBytes = http.DefaultMaxHeaderBytes + 4096
	// maxHeadFields bounds the field lines of a head, so a head of tiny fields cannot make the
	// field index large.
	maxHeadFields = 1024
	// maxChunkLineBytes bounds a chunk-size line (net/http's limit), which must fit in the
	// reader's buffer.
	maxChunkLineBytes = 4096
	// maxEmptyLinesBeforeRequest is how many empty lines before a request line are tolerated
	// (RFC 9112 section 2.2; some clients send a CRLF after a POST body).
	maxEmptyLinesBeforeRequest = 4
	// maxInterimResponses bounds the 1xx responses before a final one.
	maxInterimResponses = 8
)

// headError is a malformed or unacceptable head: status is the answer a client gets.
type headError struct {
	status int
	reason string
}

func (e *headError) Error() string { return strconv.Itoa(e.status) + " " + e.reason }

func badHead(reason string) error { return &headError{status: http.StatusBadRequest, reason: reason} }

var (
	errHeadTooLarge       = &headError{status: http.StatusRequestHeaderFieldsTooLarge, reason: "head is too large"}
	errTooManyFields      = &headError{status: http.StatusRequestHeaderFieldsTooLarge, reason: "too many header fields"}
	errUnsupportedVersion = &headError{status: http.StatusHTTPVersionNotSupported, reason: "unsupported protocol version"}
	errUnsupportedTE      = &headError{status: http.StatusNotImplemented, reason: "unsupported transfer encoding"}
	errExpectation        = &headError{status: http.StatusExpectationFailed, reason: "unsupported expectation"}
	errConnectMethod      = &headError{status: http.StatusMethodNotAllowed, reason: "CONNECT is not supported"}
	// errResponseHeadTooLarge is a response head over maxHeadBytes or maxHeadFields: the client
	// gets a 502 of the proxy's own, never a part of the head.
	errResponseHeadTooLarge = errors.New("the upstream's response head exceeds the proxy's limits")
)

// span is a part of a head's buffer.
type span struct{ start, end int32 }

func (s span) len() int { return int(s.end - s.start) }

// fieldKind is what the fast path needs to know about a field name.
type fieldKind uint8

const (
	fieldOther fieldKind = iota
	fieldHost
	fieldContentLength
	fieldTransferEncoding
	fieldConnection
	fieldUpgrade
	fieldTE
	fieldExpect
	// fieldHop: the other hop-by-hop fields (Keep-Alive, Proxy-Connection, Trailer).
	fieldHop
	// fieldPeerIdentity: PeerIdentityHeader, never forwarded as a client sent it.
	fieldPeerIdentity
)

// hop reports whether a field is hop-by-hop (isHopHeader's list), never forwarded as is.
func (k fieldKind) hop() bool {
	switch k {
	case fieldTransferEncoding, fieldConnection, fieldUpgrade, fieldTE, fieldHop:
		return true
	}
	return false
}

type headField struct {
	name, value span
	kind        fieldKind
}

// h1Head is one request or response head (or trailer section) as read.
type h1Head struct {
	buf    []byte
	fields []headField

	// Request line.
	method, target span
	// absolute is set when the target came in absolute form: target is then its path and
	// query, host its authority.
	absolute bool
	// Status line.
	status int
	reason span
	// minor is the x of HTTP/1.x.
	minor int

	// From the fields.
	contentLength  int64 // -1 without Content-Length
	chunked        bool  // Transfer-Encoding: chunked (HTTP/1.1)
	host           span
	hosts          int
	connClose      bool // Connection: close
	connKeepAlive  bool // Connection: keep-alive
	connUpgrade    bool // Connection: upgrade
	hasUpgrade     bool // an Upgrade field
	teTrailers     bool // TE names trailers
	expectContinue bool
	expectOther    bool // an Expect field that is not 100-continue
	idempotencyKey bool
	// connNamed are the Connection tokens that name other fields (removed when forwarding).
	connNamed []span
}

func (h *h1Head) reset() {
	// A connection that once read a huge head does not keep the memory.
	if cap(h.buf) > 64<<10 {
		h.buf = nil
	}
	if cap(h.fields) > 256 {
		h.fields = nil
	}
	*h = h1Head{buf: h.buf[:0], fields: h.fields[:0], connNamed: h.connNamed[:0], contentLength: -1}
}

func (h *h1Head) bytes(s span) []byte { return h.buf[s.start:s.end] }

// readLine appends the next line to buf, without its line ending (CRLF or LF), and returns
// it. io.EOF means the reader ended before the line started.
func (h *h1Head) readLine(br *bufio.Reader) (span, error) {
	start := len(h.buf)
	for {
		frag, err := br.ReadSlice('\n')
		if len(h.buf)+len(frag) > maxHeadBytes {
			return span{}, errHeadTooLarge
		}
		h.buf = append(h.buf, frag...)
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, io.EOF) && len(h.buf) > start {
			return span{}, io.ErrUnexpectedEOF
		}
		return span{}, err
	}
	end := len(h.buf) - 1
	if end > start && h.buf[end-1] == '\r' {
		end--
	}
	return span{int32(start), int32(end)}, nil
}

// readRequestHead reads a request head from a client. A *headError says what to answer; any
// other error is the connection's.
func readRequestHead(br *bufio.Reader, h *h1Head) error {
	h.reset()
	var line span
	for empty := 0; ; empty++ {
		var err error
		if line, err = h.readLine(br); err != nil {
			return err
		}
		if line.len() > 0 {
			break
		}
		if empty == maxEmptyLinesBeforeRequest {
			return badHead("malformed request line")
		}
	}
	if err := h.parseRequestLine(line); err != nil {
		return err
	}
	if err := h.readFields(br); err != nil {
		return err
	}
	return h.checkRequest()
}

func (h *h1Head) parseRequestLine(line span) error {
	b := h.bytes(line)
	sp1 := bytes.IndexByte(b, ' ')
	if sp1 <= 0 {
		return badHead("malformed request line")
	}
	sp2 := bytes.IndexByte(b[sp1+1:], ' ')
	if sp2 <= 0 {
		return badHead("malformed request line")
	}
	sp2 += sp1 + 1
	method, target, proto := b[:sp1], b[sp1+1:sp2], b[sp2+1:]
	if !isToken(method) {
		return badHead("invalid method")
	}
	for _, c := range target {
		if c <= ' ' || c == 0x7f {
			return badHead("invalid request target")
		}
	}
	minor, err := parseVersion(proto)
	if err != nil {
		return err
	}
	h.minor = minor
	h.method = span{line.start, line.start + int32(sp1)}
	h.target = span{line.start + int32(sp1) + 1, line.start + int32(sp2)}
	switch {
	case target[0] == '/':
	case len(target) == 1 && target[0] == '*':
	case string(method) == http.MethodConnect:
		return errConnectMethod
	default:
		return h.parseAbsoluteTarget()
	}
	return nil
}

// parseAbsoluteTarget splits an absolute-form target (RFC 9112 section 3.2.2) into the
// authority, which replaces any Host field, and the path and query, which go on.
func (h *h1Head) parseAbsoluteTarget() error {
	t := h.bytes(h.target)
	var rest int
	switch {
	case len(t) > 7 && bytes.EqualFold(t[:7], []byte("http://")):
		rest = 7
	case len(t) > 8 && bytes.EqualFold(t[:8], []byte("https://")):
		rest = 8
	default:
		return badHead("invalid request target")
	}
	end := len(t)
	if i := bytes.IndexAny(t[rest:], "/?#"); i >= 0 {
		end = rest + i
	}
	authority := t[rest:end]
	if i := bytes.LastIndexByte(authority, '@'); i >= 0 { // no userinfo goes on
		rest += i + 1
		authority = authority[i+1:]
	}
	if len(authority) == 0 || !validHost(authority) {
		return badHead("invalid request target")
	}
	if end < len(t) && t[end] == '#' {
		return badHead("invalid request target")
	}
	start := h.target.start
	h.absolute = true
	h.host = span{start + int32(rest), start + int32(end)}
	// The path and query: "/" when the target has none (its bytes follow in the buffer, so a
	// missing slash is written by the forwarder).
	h.target = span{start + int32(end), h.target.end}
	return nil
}

// parseVersion accepts HTTP/1.0 and HTTP/1.1 (and later HTTP/1.x, served as 1.1).
func parseVersion(proto []byte) (int, error) {
	if len(proto) != 8 || string(proto[:5]) != "HTTP/" || proto[6] != '.' ||
		proto[5] < '0' || proto[5] > '9' || proto[7] < '0' || proto[7] > '9' {
		return 0, badHead("malformed HTTP version")
	}
	if proto[5] != '1' {
		return 0, errUnsupportedVersion
	}
	return min(int(proto[7]-'0'), 1), nil
}

// readFields reads field lines up to the empty line that ends a head or trailer section.
func (h *h1Head) readFields(br *bufio.Reader) error {
	for {
		line, err := h.readLine(br)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return io.ErrUnexpectedEOF
			}
			return err
		}
		if line.len() == 0 {
			return nil
		}
		if len(h.fields) == maxHeadFields {
			return errTooManyFields
		}
		b := h.bytes(line)
		if b[0] == ' ' || b[0] == '\t' { // obsolete line folding (RFC 9112 section 5.2)
			return badHead("folded header line")
		}
		colon := bytes.IndexByte(b, ':')
		if colon <= 0 || !isToken(b[:colon]) {
			return badHead("invalid header name")
		}
		vs, ve := colon+1, len(b)
		for vs < ve && (b[vs] == ' ' || b[vs] == '\t') {
			vs++
		}
		for ve > vs && (b[ve-1] == ' ' || b[ve-1] == '\t') {
			ve--
		}
		for _, c := range b[vs:ve] {
			if c < ' ' && c != '\t' || c == 0x7f {
				return badHead("invalid header value")
			}
		}
		f := headField{
			name:  span{line.start, line.start + int32(colon)},
			value: span{line.start + int32(vs), line.start + int32(ve)},
			kind:  kindOf(b[:colon]),
		}
		h.fields = append(h.fields, f)
		if err := h.noteField(f); err != nil {
			return err
		}
	}
}

// noteField records what a field says about framing and the connection.
func (h *h1Head) noteField(f headField) error {
	value := h.bytes(f.value)
	switch f.kind {
	case fieldHost:
		h.hosts++
		if !validHost(value) {
			return badHead("malformed Host header")
		}
		if !h.absolute { // else the target's authority is the host (RFC 9112 section 3.2.2)
			h.host = f.value
		}
	case fieldContentLength:
		n, ok := parseContentLength(value)
		if !ok || (h.contentLength >= 0 && n != h.contentLength) {
			return badHead("invalid Content-Length")
		}
		h.contentLength = n
	case fieldTransferEncoding:
		if h.minor == 0 {
			return nil // ignored in HTTP/1.0, as net/http does; removed when forwarding
		}
		if h.chunked || !bytes.EqualFold(value, []byte("chunked")) {
			return errUnsupportedTE
		}
		h.chunked = true
	case fieldConnection:
		for token := range tokens(value) {
			switch {
			case bytes.EqualFold(token, []byte("close")):
				h.connClose = true
			case bytes.EqualFold(token, []byte("keep-alive")):
				h.connKeepAlive = true
			case bytes.EqualFold(token, []byte("upgrade")):
				h.connUpgrade = true
			default:
				start := int32(cap(value[:0]) - cap(token[:0])) // offset of token in value
				s := f.value.start + start
				h.connNamed = append(h.connNamed, span{s, s + int32(len(token))})
			}
		}
	case fieldUpgrade:
		h.hasUpgrade = true
	case fieldTE:
		for token := range tokens(value) {
			if bytes.EqualFold(token, []byte("trailers")) {
				h.teTrailers = true
			}
		}
	case fieldExpect:
		if bytes.EqualFold(value, []byte("100-continue")) {
			h.expectContinue = true
		} else if len(value) > 0 {
			h.expectOther = true
		}
	case fieldOther:
		if len(value) > 0 && (asciiEqualFold(h.bytes(f.name), "Idempotency-Key") || asciiEqualFold(h.bytes(f.name), "X-Idempotency-Key")) {
			h.idempotencyKey = true
		}
	}
	return nil
}

func (h *h1Head) checkRequest() error {
	switch {
	case h.hosts > 1:
		return badHead("too many Host headers")
	case h.hosts == 0 && h.minor >= 1:
		return badHead("missing required Host header")
	case h.expectOther && !h.expectContinue:
		return errExpectation
	}
	if h.chunked {
		h.contentLength = -1 // Transfer-Encoding overrides Content-Length (RFC 9112 section 6.3)
	}
	return nil
}

// upgrade reports whether the request asks to switch protocols.
func (h *h1Head) upgrade() bool { return h.hasUpgrade && h.connUpgrade }

// isMethod compares the request method.
func (h *h1Head) isMethod(m string) bool { return string(h.bytes(h.method)) == m }

// idempotent is what net/http's transport retries after a kept-alive connection failed: the
// safe methods, or a request carrying an idempotency key.
func (h *h1Head) idempotent() bool {
	switch string(h.bytes(h.method)) {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return h.idempotencyKey
}

// wantsClose reports whether the client asks to close the connection after this exchange.
func (h *h1Head) wantsClose() bool {
	return h.connClose || (h.minor == 0 && !h.connKeepAlive)
}

// named reports whether the Connection field names a field (removed when forwarding).
func (h *h1Head) named(name []byte) bool {
	for _, s := range h.connNamed {
		if bytes.EqualFold(h.bytes(s), name) {
			return true
		}
	}
	return false
}

// forwarded reports whether a field goes on as is: not hop-by-hop, not named by Connection, not
// one the forwarder writes itself.
func (h *h1Head) forwarded(f headField) bool {
	switch {
	case f.kind.hop():
		return false
	case f.kind != fieldOther:
		return f.kind == fieldExpect
	}
	return len(h.connNamed) == 0 || !h.named(h.bytes(f.name))
}

// readResponseHead reads a response head from an upstream, with the limits of a request head:
// errResponseHeadTooLarge when it exceeds them.
func readResponseHead(br *bufio.Reader, h *h1Head) error {
	h.reset()
	line, err := h.readLine(br)
	if err != nil {
		if errors.Is(err, errHeadTooLarge) {
			return errResponseHeadTooLarge
		}
		return err
	}
	b := h.bytes(line)
	// HTTP/1.x SP 3DIGIT [SP reason]
	if len(b) < 12 || (len(b) > 12 && b[12] != ' ') || b[8] != ' ' {
		return fmt.Errorf("malformed status line %q", b)
	}
	if _, err := parseVersion(b[:8]); err != nil {
		return fmt.Errorf("malformed status line %q", b)
	}
	h.minor = min(int(b[7]-'0'), 1)
	status := 0
	for _, c := range b[9:12] {
		if c < '0' || c > '9' {
			return fmt.Errorf("malformed status code %q", b[9:12])
		}
		status = status*10 + int(c-'0')
	}
	if status < 100 {
		return fmt.Errorf("malformed status code %q", b[9:12])
	}
	h.status = status
	h.reason = span{line.start + 12, line.end}
	if len(b) > 12 {
		h.reason.start++
	}
	for _, c := range h.bytes(h.reason) {
		if c < ' ' && c != '\t' || c == 0x7f {
			return errors.New("malformed reason phrase")
		}
	}
	if err := h.readFields(br); err != nil {
		if errors.Is(err, errHeadTooLarge) || errors.Is(err, errTooManyFields) {
			return errResponseHeadTooLarge
		}
		var he *headError
		if errors.As(err, &he) {
			return fmt.Errorf("malformed response head: %s", he.reason)
		}
		return err
	}
	if h.chunked {
		h.contentLength = -1
	}
	return nil
}

// keepAlive reports whether the upstream keeps the connection open after this response.
func (h *h1Head) keepAlive() bool {
	if h.minor == 0 {
		return h.connKeepAlive && !h.connClose
	}
	return !h.connClose
}

// parseContentLength accepts decimal digits only, up to 2^63-1.
func parseContentLength(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	if n > 1<<63-1 {
		return 0, false
	}
	return int64(n), true
}

// tokens yields the non-empty elements of a comma-separated list, trimmed.
func tokens(value []byte) func(func([]byte) bool) {
	return func(yield func([]byte) bool) {
		for len(value) > 0 {
			var token []byte
			if i := bytes.IndexByte(value, ','); i >= 0 {
				token, value = value[:i], value[i+1:]
			} else {
				token, value = value, nil
			}
			token = bytes.Trim(token, " \t")
			if len(token) > 0 && !yield(token) {
				return
			}
		}
	}
}

// kindOf classifies a field name (case-insensitive) without allocating.
func kindOf(name []byte) fieldKind {
	switch len(name) {
	case 2:
		if asciiEqualFold(name, "TE") {
			return fieldTE
		}
	case 4:
		if asciiEqualFold(name, "Host") {
			return fieldHost
		}
	case 6:
		if asciiEqualFold(name, "Expect") {
			return fieldExpect
		}
	case 7:
		if asciiEqualFold(name, "Upgrade") {
			return fieldUpgrade
		}
		if asciiEqualFold(name, "Trailer") {
			return fieldHop
		}
	case 10:
		if asciiEqualFold(name, "Connection") {
			return fieldConnection
		}
		if asciiEqualFold(name, "Keep-Alive") {
			return fieldHop
		}
	case 14:
		if asciiEqualFold(name, "Content-Length") {
			return fieldContentLength
		}
	case 16:
		if asciiEqualFold(name, "Proxy-Connection") {
			return fieldHop
		}
	case 17:
		if asciiEqualFold(name, "Transfer-Encoding") {
			return fieldTransferEncoding
		}
	case len(PeerIdentityHeader):
		if asciiEqualFold(name, PeerIdentityHeader) {
			return fieldPeerIdentity
		}
	}
	return fieldOther
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], s[i]
		if x == y {
			continue
		}
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// isToken reports whether b is a non-empty RFC 9110 token (method, field name).
func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !tokenByte[c] {
			return false
		}
	}
	return true
}

var tokenByte = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// validHost accepts what net/http's server accepts in a Host field (httpguts.ValidHostHeader).
func validHost(b []byte) bool {
	for _, c := range b {
		if !hostByte[c] {
			return false
		}
	}
	return true
}

var hostByte = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!$%&'()*+,-.:;=[]_~" {
		t[c] = true
	}
	return t
}()

// writeRequestHead writes the head a request goes on with: HTTP/1.1, Host first (defaultHost,
// the upstream's address, when the request has none, as net/http's transport does), the fields
// without hop-by-hop ones, those named by Connection and PeerIdentityHeader, then
// PeerIdentityHeader with peerIdentity when it is set, "TE: trailers" when the client asked for
// trailers, the upgrade when it asked for one, then the framing of the body as it will be sent.
func writeRequestHead(w *bufio.Writer, h *h1Head, defaultHost, peerIdentity string) {
	_, _ = w.Write(h.bytes(h.method))
	_ = w.WriteByte(' ')
	target := h.bytes(h.target)
	if len(target) == 0 || target[0] == '?' {
		_ = w.WriteByte('/')
	}
	_, _ = w.Write(target)
	_, _ = w.WriteString(" HTTP/1.1\r\nHost: ")
	if h.host.len() > 0 {
		_, _ = w.Write(h.bytes(h.host))
	} else {
		_, _ = w.WriteString(defaultHost)
	}
	_, _ = w.WriteString("\r\n")
	for _, f := range h.fields {
		if h.forwarded(f) {
			_, _ = w.Write(h.buf[f.name.start:f.value.end])
			_, _ = w.WriteString("\r\n")
		}
	}
	if peerIdentity != "" {
		_, _ = w.WriteString(PeerIdentityHeader + ": ")
		_, _ = w.WriteString(peerIdentity)
		_, _ = w.WriteString("\r\n")
	}
	if h.teTrailers {
		_, _ = w.WriteString("Te: trailers\r\n")
	}
	if h.upgrade() {
		_, _ = w.WriteString("Connection: Upgrade\r\n")
		for _, f := range h.fields {
			if f.kind == fieldUpgrade {
				_, _ = w.Write(h.buf[f.name.start:f.value.end])
				_, _ = w.WriteString("\r\n")
			}
		}
	}
	switch {
	case h.chunked:
		_, _ = w.WriteString("Transfer-Encoding: chunked\r\n")
	case h.contentLength >= 0:
		line := append(w.AvailableBuffer(), "Content-Length: "...)
		line = strconv.AppendInt(line, h.contentLength, 10)
		line = append(line, '\r', '\n')
		_, _ = w.Write(line)
	}
	_, _ = w.WriteString("\r\n")
}
