package proxy

import (
	"io"
	"sync"
)

// bufferSize is the copy buffer: one TLS record of plaintext.
const bufferSize = 16 << 10

var buffers = sync.Pool{New: func() any {
	b := make([]byte, bufferSize)
	return &b
}}

// pipe copies bytes both ways between a and b until both directions end, then closes both. A
// direction that ends cleanly half-closes its destination, so protocols that shut down their
// writing side first keep working; a failure in either direction ends both.
func pipe(a, b io.ReadWriteCloser) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		copyHalf(b, a)
	}()
	copyHalf(a, b)
	<-done
	_ = a.Close()
	_ = b.Close()
}

func copyHalf(dst, src io.ReadWriteCloser) {
	if err := copyStream(dst, src); err == nil {
		if cw, ok := dst.(closeWriter); ok && cw.CloseWrite() == nil {
			return
		}
	}
	_ = dst.Close()
	_ = src.Close()
}

// copyStream copies src to dst with a pooled buffer until src ends (nil) or either side fails.
// It does not use io.Copy, which would hand a *net.TCPConn destination a reader it cannot
// splice from and allocate a buffer of its own.
func copyStream(dst io.Writer, src io.Reader) error {
	bufp := buffers.Get().(*[]byte)
	defer buffers.Put(bufp)
	buf := *bufp
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
