package proxy

import (
	"bufio"
	"errors"
	"io"
	"strconv"
)

var (
	errChunkLine     = errors.New("malformed chunked encoding: bad chunk size line")
	errChunkTooLarge = errors.New("malformed chunked encoding: chunk size too large")
	errChunkEnd      = errors.New("malformed chunked encoding: chunk data not followed by CRLF")
)

// copyBody copies n bytes (all of src up to EOF when n < 0) from src to dst, each piece as a
// chunk when chunk. It flushes dst whenever src has nothing buffered, before a read that may
// block: a response streams as it comes, and a small one leaves in one write.
func copyBody(dst *bufio.Writer, src *bufio.Reader, n int64, chunk bool) (readErr, writeErr error) {
	var bufp *[]byte
	defer func() {
		if bufp != nil {
			buffers.Put(bufp)
		}
	}()
	for n != 0 {
		if k := src.Buffered(); k > 0 {
			if n > 0 && int64(k) > n {
				k = int(n)
			}
			b, _ := src.Peek(k)
			if err := writePiece(dst, b, chunk); err != nil {
				return nil, err
			}
			_, _ = src.Discard(k)
			if n > 0 {
				n -= int64(k)
			}
			continue
		}
		if err := dst.Flush(); err != nil {
			return nil, err
		}
		if bufp == nil {
			bufp = buffers.Get().(*[]byte)
		}
		// At least the reader's size: it reads straight into buf, large pieces in one read.
		buf := *bufp
		if n > 0 && n < int64(len(buf)) {
			buf = buf[:n]
		}
		k, err := src.Read(buf)
		if k > 0 {
			if werr := writePiece(dst, buf[:k], chunk); werr != nil {
				return nil, werr
			}
			if n > 0 {
				n -= int64(k)
			}
		}
		if errors.Is(err, io.EOF) {
			if n < 0 {
				return nil, nil
			}
			if n > 0 {
				return io.ErrUnexpectedEOF, nil
			}
		} else if err != nil {
			return err, nil
		}
	}
	return nil, nil
}

func writePiece(dst *bufio.Writer, b []byte, chunk bool) error {
	if chunk {
		writeChunkSize(dst, int64(len(b)))
	}
	_, err := dst.Write(b)
	if chunk {
		_, err = dst.WriteString("\r\n")
	}
	return err
}

// copyChunked decodes a chunked response body from src into dst, chunked again when rechunk (one chunk
// per chunk read; extensions are dropped), and reads the trailer section into trailer, which
// it forwards when rechunk.
func copyChunked(dst *bufio.Writer, src *bufio.Reader, rechunk bool, trailer *h1Head) (readErr, writeErr error) {
	for {
		if src.Buffered() == 0 {
			if err := dst.Flush(); err != nil {
				return nil, err
			}
		}
		size, err := readChunkSize(src)
		if err != nil {
			return err, nil
		}
		if size == 0 {
			trailer.reset()
			if err := trailer.readFields(src); err != nil {
				return err, nil
			}
			if rechunk {
				_, _ = dst.WriteString("0\r\n")
				writeTrailer(dst, trailer)
				_, err = dst.WriteString("\r\n")
			}
			return nil, err
		}
		if rechunk {
			writeChunkSize(dst, size)
		}
		if readErr, writeErr = copyBody(dst, src, size, false); readErr != nil || writeErr != nil {
			return readErr, writeErr
		}
		if err := readChunkEnd(src); err != nil {
			return err, nil
		}
		if rechunk {
			if _, err := dst.WriteString("\r\n"); err != nil {
				return nil, err
			}
		}
	}
}

// writeTrailer writes the fields of a trailer section that may go on (no hop-by-hop or framing
// field).
func writeTrailer(dst *bufio.Writer, trailer *h1Head) {
	for _, f := range trailer.fields {
		if f.kind == fieldOther || f.kind == fieldExpect {
			_, _ = dst.Write(trailer.buf[f.name.start:f.value.end])
			_, _ = dst.WriteString("\r\n")
		}
	}
}

func writeChunkSize(dst *bufio.Writer, size int64) {
	line := strconv.AppendInt(dst.AvailableBuffer(), size, 16)
	line = append(line, '\r', '\n')
	_, _ = dst.Write(line)
}

// readChunkSize reads a chunk-size line (RFC 9112 section 7.1), ignoring chunk extensions.
func readChunkSize(br *bufio.Reader) (int64, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			return 0, errChunkLine
		case errors.Is(err, io.EOF):
			return 0, io.ErrUnexpectedEOF
		}
		return 0, err
	}
	line = line[:len(line)-1]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	for i, c := range line {
		if c == ';' {
			line = line[:i]
			break
		}
	}
	for len(line) > 0 && (line[len(line)-1] == ' ' || line[len(line)-1] == '\t') {
		line = line[:len(line)-1]
	}
	if len(line) == 0 {
		return 0, errChunkLine
	}
	if len(line) > 16 {
		return 0, errChunkTooLarge
	}
	var n uint64
	for _, c := range line {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, errChunkLine
		}
		n = n<<4 | uint64(c)
	}
	if n > 1<<63-1 {
		return 0, errChunkTooLarge
	}
	return int64(n), nil
}

// readChunkEnd reads the CRLF after chunk data.
func readChunkEnd(br *bufio.Reader) error {
	b, err := br.Peek(2)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return io.ErrUnexpectedEOF
		}
		return err
	}
	if b[0] != '\r' || b[1] != '\n' {
		return errChunkEnd
	}
	_, _ = br.Discard(2)
	return nil
}

// bodyReader reads a request body from the client's connection, decoded: contentLength bytes,
// or chunks up to the last one (the trailer section goes into trailer). Its errors stick.
type bodyReader struct {
	br      *bufio.Reader
	chunked bool
	left    int64 // bytes left of the body (Content-Length) or of the current chunk
	inChunk bool  // chunk data was read: its CRLF comes next
	done    bool  // the whole body was read
	err     error
	trailer *h1Head
}

// Close leaves the connection to its owner.
func (r *bodyReader) Close() error { return nil }

func (r *bodyReader) Read(p []byte) (int, error) {
	switch {
	case r.err != nil:
		return 0, r.err
	case r.done:
		return 0, io.EOF
	}
	if r.left == 0 {
		if !r.chunked {
			r.done = true
			return 0, io.EOF
		}
		if r.inChunk {
			if err := readChunkEnd(r.br); err != nil {
				r.err = err
				return 0, err
			}
			r.inChunk = false
		}
		size, err := readChunkSize(r.br)
		if err != nil {
			r.err = err
			return 0, err
		}
		if size == 0 {
			r.trailer.reset()
			if err := r.trailer.readFields(r.br); err != nil {
				r.err = err
				return 0, err
			}
			r.done = true
			return 0, io.EOF
		}
		r.left, r.inChunk = size, true
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.br.Read(p)
	r.left -= int64(n)
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		r.err = err
		if n > 0 {
			return n, nil
		}
	}
	return n, err
}
