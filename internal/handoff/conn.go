package handoff

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// Conn carries framed messages, and listening sockets with them, over a Unix stream socket.
type Conn struct {
	conn    *net.UnixConn
	timeout time.Duration
}

// NewConn wraps conn; every Send and Receive must complete within timeout.
func NewConn(conn *net.UnixConn, timeout time.Duration) *Conn {
	return &Conn{conn: conn, timeout: timeout}
}

// WaitPeerGone blocks until the peer closes the connection or dies (the kernel closes its end),
// or ctx ends. After DRAINED the peer sends nothing more, so anything it sends ends the wait too.
// The idle old process uses it to resume accepting when the new one dies after TAKEOVER.
func (c *Conn) WaitPeerGone(ctx context.Context) error {
	if err := c.conn.SetReadDeadline(time.Time{}); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { _ = c.conn.SetReadDeadline(time.Now()) })
	defer stop()
	var b [1]byte
	_, err := c.conn.Read(b[:])
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err == nil {
		return errors.New("the peer sent data after DRAINED")
	}
	return nil
}

// Close closes the socket.
func (c *Conn) Close() error { return c.conn.Close() }

// Send sends m with files attached (LISTENERS only).
func (c *Conn) Send(m Message, files ...*os.File) error {
	frame, err := Encode(m, len(files))
	if err != nil {
		return err
	}
	fds := make([]int, len(files))
	for i, f := range files {
		// Not f.Fd(): it puts the descriptor in blocking mode, and a duplicated listener shares
		// that flag with the original, which the old process still accepts on.
		raw, err := f.SyscallConn()
		if err != nil {
			return fmt.Errorf("failed to send %s: %w", m.Type, err)
		}
		if err := raw.Control(func(fd uintptr) { fds[i] = int(fd) }); err != nil {
			return fmt.Errorf("failed to send %s: %w", m.Type, err)
		}
	}
	var oob []byte
	if len(fds) > 0 {
		oob = syscall.UnixRights(fds...)
	}
	if err := c.conn.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
		return err
	}
	n, oobn, err := c.conn.WriteMsgUnix(frame, oob, nil)
	if err != nil {
		return fmt.Errorf("failed to send %s: %w", m.Type, err)
	}
	if n != len(frame) || oobn != len(oob) {
		return fmt.Errorf("failed to send %s: short write (%d of %d bytes)", m.Type, n, len(frame))
	}
	return nil
}

// Receive waits for the next message. File descriptors that came with a frame that is refused
// are closed, never leaked.
func (c *Conn) Receive() (Message, []*os.File, error) {
	if err := c.conn.SetReadDeadline(time.Now().Add(c.timeout)); err != nil {
		return Message{}, nil, err
	}
	header := make([]byte, headerSize)
	oob := make([]byte, syscall.CmsgSpace(MaxListeners*4))
	// The descriptors arrive with the first bytes of the frame.
	n, oobn, flags, _, err := c.conn.ReadMsgUnix(header, oob)
	fds, parseErr := parseRights(oob[:oobn])
	closeAll := func() {
		for _, fd := range fds {
			_ = syscall.Close(fd)
		}
	}
	switch {
	case err != nil:
		closeAll()
		return Message{}, nil, fmt.Errorf("failed to receive a message: %w", err)
	case flags&syscall.MSG_CTRUNC != 0:
		closeAll()
		return Message{}, nil, invalid("more than %d file descriptors attached", MaxListeners)
	case parseErr != nil:
		closeAll()
		return Message{}, nil, parseErr
	}
	if _, err := io.ReadFull(c.conn, header[n:]); err != nil {
		closeAll()
		return Message{}, nil, fmt.Errorf("failed to receive a message header: %w", err)
	}
	size := binary.BigEndian.Uint32(header)
	if size == 0 || size > MaxFrameSize-headerSize {
		closeAll()
		return Message{}, nil, invalid("frame length %d is not within 1..%d", size, MaxFrameSize-headerSize)
	}
	frame := make([]byte, headerSize+int(size))
	copy(frame, header)
	if _, err := io.ReadFull(c.conn, frame[headerSize:]); err != nil {
		closeAll()
		return Message{}, nil, fmt.Errorf("failed to receive a message body: %w", err)
	}
	m, err := Decode(frame, len(fds))
	if err != nil {
		closeAll()
		return Message{}, nil, err
	}
	files := make([]*os.File, len(fds))
	for i, fd := range fds {
		files[i] = os.NewFile(uintptr(fd), "handoff-"+m.Listeners[i])
	}
	return m, files, nil
}

func parseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	messages, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, invalid("bad control message: %v", err)
	}
	var fds []int
	var bad error
	for _, msg := range messages {
		rights, err := syscall.ParseUnixRights(&msg)
		if err != nil {
			bad = invalid("unexpected control message: %v", err)
			continue
		}
		fds = append(fds, rights...)
	}
	if bad != nil {
		for _, fd := range fds {
			_ = syscall.Close(fd)
		}
		return nil, bad
	}
	return fds, nil
}

// NamedListener is a listening socket and the name the peer knows it by.
type NamedListener struct {
	Name     string
	Listener *net.TCPListener
}

// ErrPeer wraps an ERROR message from the peer.
var ErrPeer = errors.New("the peer gave up the handoff")

// Offer is the old process's side: it waits for HELLO, refuses an incompatible protocol or a
// peer claiming our own slot, sends the listeners and waits for TAKEOVER. It returns the peer's
// HELLO; the caller then stops accepting, drains and sends DRAINED. If it fails, the caller
// keeps serving: nothing was given away.
func Offer(conn *Conn, ownSlot int, listeners []NamedListener) (Message, error) {
	hello, files, err := conn.Receive()
	closeFiles(files)
	if err != nil {
		return Message{}, err
	}
	switch {
	case hello.Type != TypeHello:
		return Message{}, refuse(conn, "expected HELLO, got %s", hello.Type)
	case hello.Protocol != ProtocolVersion:
		return Message{}, refuse(conn, "protocol %d is not supported (this process speaks %d)", hello.Protocol, ProtocolVersion)
	case hello.Slot == ownSlot:
		return Message{}, refuse(conn, "slot %d is this process's own slot", hello.Slot)
	}
	names := make([]string, len(listeners))
	dups := make([]*os.File, len(listeners))
	defer func() { closeFiles(dups) }()
	for i, l := range listeners {
		names[i] = l.Name
		if dups[i], err = l.Listener.File(); err != nil {
			return Message{}, fmt.Errorf("failed to duplicate listener %s: %w", l.Name, err)
		}
	}
	if err := conn.Send(Message{Type: TypeListeners, Listeners: names}, dups...); err != nil {
		return Message{}, err
	}
	reply, files, err := conn.Receive()
	closeFiles(files)
	if err != nil {
		return Message{}, fmt.Errorf("no TAKEOVER from the new process: %w", err)
	}
	if reply.Type == TypeError {
		return Message{}, fmt.Errorf("%w: %s", ErrPeer, reply.Reason)
	}
	if reply.Type != TypeTakeover {
		return Message{}, refuse(conn, "expected TAKEOVER, got %s", reply.Type)
	}
	return hello, nil
}

// Request is the new process's side up to receiving the listeners: it sends HELLO and returns
// the listening sockets by name. The caller starts accepting on them, becomes ready, then calls
// Takeover.
func Request(conn *Conn, version string, slot int) (map[string]net.Listener, error) {
	if err := conn.Send(Message{Type: TypeHello, Version: version, Protocol: ProtocolVersion, Slot: slot}); err != nil {
		return nil, err
	}
	reply, files, err := conn.Receive()
	defer closeFiles(files) // net.FileListener duplicates them
	if err != nil {
		return nil, fmt.Errorf("no listeners from the old process: %w", err)
	}
	if reply.Type == TypeError {
		return nil, fmt.Errorf("%w: %s", ErrPeer, reply.Reason)
	}
	if reply.Type != TypeListeners {
		return nil, refuse(conn, "expected LISTENERS, got %s", reply.Type)
	}
	listeners := make(map[string]net.Listener, len(files))
	for i, f := range files {
		l, err := net.FileListener(f)
		if err != nil {
			for _, opened := range listeners {
				_ = opened.Close()
			}
			return nil, refuse(conn, "socket %s is not a listener: %v", reply.Listeners[i], err)
		}
		listeners[reply.Listeners[i]] = l
	}
	return listeners, nil
}

// Takeover tells the old process that this one accepts on the listeners now, and waits until it
// drained, within the connection's timeout (the old process stops accepting either way).
func Takeover(conn *Conn) error {
	if err := conn.Send(Message{Type: TypeTakeover}); err != nil {
		return err
	}
	reply, files, err := conn.Receive()
	closeFiles(files)
	if err != nil {
		return fmt.Errorf("no DRAINED from the old process: %w", err)
	}
	if reply.Type != TypeDrained {
		return fmt.Errorf("expected DRAINED, got %s", reply.Type)
	}
	return nil
}

// Drained tells the new process that this one finished its in-flight work.
func Drained(conn *Conn) error { return conn.Send(Message{Type: TypeDrained}) }

func refuse(conn *Conn, format string, args ...any) error {
	reason := fmt.Sprintf(format, args...)
	_ = conn.Send(Message{Type: TypeError, Reason: reason})
	return fmt.Errorf("handoff refused: %s", reason)
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		if f != nil {
			_ = f.Close()
		}
	}
}
