package proxy

import (
	"errors"
	"io"
	"sync"
)

// maxReplay bounds the request body kept to send a request again.
const maxReplay = 64 << 10

var (
	errCannotReplay  = errors.New("request body is too large to send again")
	errBodyReplaced  = errors.New("request body is being sent again")
	replayBufferPool = sync.Pool{New: func() any {
		b := make([]byte, 0, 4<<10)
		return &b
	}}
)

// replayBody makes a request body readable again from the start, as long as no more than
// maxReplay bytes were read: what was read is kept. That is what lets a request that an upstream
// did not process (HTTP/2 GOAWAY during a handoff, a connection closed before the request was
// written) go again on another connection through Request.GetBody, streams included: only what
// was read so far is kept, reading does not wait for the end of the body.
//
// Each reader takes over from the previous one; the previous one fails from then on. Reads of
// the source are serialized, so the bytes stay in order whoever reads them.
type replayBody struct {
	src   io.ReadCloser
	srcMu sync.Mutex // held while reading src

	mu       sync.Mutex
	buf      *[]byte // what was read from src, while within maxReplay
	read     int     // bytes read from src
	overflow bool
	done     bool
	owner    *replayReader
}

type replayReader struct {
	body *replayBody
	off  int
}

func newReplayBody(src io.ReadCloser) *replayBody {
	buf := replayBufferPool.Get().(*[]byte)
	*buf = (*buf)[:0]
	return &replayBody{src: src, buf: buf}
}

// replayable reports whether reader can start the body again.
func (b *replayBody) replayable() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.overflow && !b.done
}

// reader starts reading from the beginning again (Request.GetBody).
func (b *replayBody) reader() (io.ReadCloser, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.overflow || b.done {
		return nil, errCannotReplay
	}
	r := &replayReader{body: b}
	b.owner = r
	return r, nil
}

// finish ends every reader and recycles the buffer; the server closes src.
func (b *replayBody) finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return
	}
	b.done = true
	if cap(*b.buf) <= maxReplay {
		replayBufferPool.Put(b.buf)
	}
	b.buf = nil
}

func (r *replayReader) Read(p []byte) (int, error) {
	b := r.body
	if n, ok, err := r.replay(p); ok || err != nil {
		return n, err
	}
	b.srcMu.Lock()
	defer b.srcMu.Unlock()
	// A previous reader may have read more while this one waited.
	if n, ok, err := r.replay(p); ok || err != nil {
		return n, err
	}
	n, err := b.src.Read(p)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return 0, errBodyReplaced
	}
	if n > 0 {
		if !b.overflow && len(*b.buf)+n <= maxReplay {
			*b.buf = append(*b.buf, p[:n]...)
		} else {
			b.overflow = true
		}
		b.read += n
		r.off += n
	}
	return n, err
}

// replay serves p from the bytes kept; ok is false when the reader is at the end of them and
// must read the source.
func (r *replayReader) replay(p []byte) (n int, ok bool, err error) {
	b := r.body
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.owner != r || b.done:
		return 0, false, errBodyReplaced
	case r.off < len(*b.buf):
		n = copy(p, (*b.buf)[r.off:])
		r.off += n
		return n, true, nil
	case r.off < b.read: // bytes read by a previous reader past maxReplay are gone
		return 0, false, errCannotReplay
	}
	return 0, false, nil
}

// Close leaves closing the source to the server that owns it.
func (r *replayReader) Close() error { return nil }
