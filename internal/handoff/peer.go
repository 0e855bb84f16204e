package handoff

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
)

// The handoff socket lives in a volume (meshlift-run) that other containers of the pod may
// mount too, and whoever completes a handoff receives the pod's inbound listeners. Two layers
// keep it between the two proxy slots, which run as the same UID:
//   - the socket file is 0600 from the moment its name appears (Listen), so only that UID, or a
//     process that may ignore file modes (root with CAP_DAC_OVERRIDE: an app container running
//     as root), can connect;
//   - each side reads the other's credentials from the kernel (SO_PEERCRED) and refuses a peer
//     of another UID before a single message is exchanged (CheckPeer), which stops root too.

// SocketMode is the handoff socket's file mode.
const SocketMode os.FileMode = 0o600

// ErrPeerRefused wraps the refusal of a peer whose credentials are not the process's own.
var ErrPeerRefused = errors.New("handoff peer refused")

// PeerCredentials are the credentials the kernel recorded for the other end of a Unix socket:
// of the process that connected (seen by the listener), or of the one that listened (seen by the
// process that connected).
type PeerCredentials struct {
	PID int32
	UID uint32
	GID uint32
}

// CheckPeer decides whether peer may take part in a handoff with a process whose effective UID
// is ownUID: only a process of the same UID may, root included (a root peer of a non-root proxy
// is another container, not the other slot).
func CheckPeer(peer PeerCredentials, ownUID uint32) error {
	if peer.UID != ownUID {
		return fmt.Errorf("%w: its uid %d is not this process's uid %d (pid %d)", ErrPeerRefused, peer.UID, ownUID, peer.PID)
	}
	return nil
}

// PeerCredentialsOf reads the peer's credentials of conn (SO_PEERCRED).
func PeerCredentialsOf(conn *net.UnixConn) (PeerCredentials, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return PeerCredentials{}, fmt.Errorf("failed to read the handoff peer's credentials: %w", err)
	}
	var cred *syscall.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return PeerCredentials{}, fmt.Errorf("failed to read the handoff peer's credentials: %w", err)
	}
	if credErr != nil {
		return PeerCredentials{}, fmt.Errorf("failed to read the handoff peer's credentials: %w", credErr)
	}
	return PeerCredentials{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid}, nil
}

// OwnUID is the UID a peer must have: this process's effective UID.
func OwnUID() uint32 { return uint32(os.Geteuid()) }

// Authorize reads conn's peer credentials and checks them with CheckPeer. It returns the
// credentials also when it refuses, for the caller to log; the caller closes a refused
// connection without sending anything on it.
func Authorize(conn *net.UnixConn, ownUID uint32) (PeerCredentials, error) {
	peer, err := PeerCredentialsOf(conn)
	if err != nil {
		return PeerCredentials{}, err
	}
	return peer, CheckPeer(peer, ownUID)
}

// Listen binds the handoff socket at path with SocketMode, replacing a stale file there. The
// socket is bound under a temporary name in a fresh 0700 directory next to path, given its mode
// and then renamed into place, so no process of another UID can connect at any instant (a umask
// would do it too, but it is per process and would race with every other file this process
// creates). The file is never unlinked on close: after a handoff it belongs to the new process.
func Listen(path string) (*net.UnixListener, error) {
	private, err := os.MkdirTemp(filepath.Dir(path), ".handoff-")
	if err != nil {
		return nil, fmt.Errorf("failed to create a private directory for the handoff socket: %w", err)
	}
	defer func() { _ = os.RemoveAll(private) }()
	staging := filepath.Join(private, "handoff.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: staging, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("failed to listen on the handoff socket: %w", err)
	}
	l.SetUnlinkOnClose(false)
	if err := os.Chmod(staging, SocketMode); err != nil {
		_ = l.Close()
		return nil, fmt.Errorf("failed to restrict the handoff socket: %w", err)
	}
	// rename replaces a stale socket atomically: there is never a moment without a file at path
	// that another process could bind in its place.
	if err := os.Rename(staging, path); err != nil {
		_ = l.Close()
		return nil, fmt.Errorf("failed to move the handoff socket into place: %w", err)
	}
	return l, nil
}

// Dial connects to the handoff socket at path and refuses a listener whose UID is not ownUID (a
// process that replaced the socket could otherwise hand this one listening sockets of its own).
// A refusal wraps ErrPeerRefused and returns the peer's credentials; the connection is closed.
func Dial(path string, ownUID uint32) (*net.UnixConn, PeerCredentials, error) {
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, PeerCredentials{}, err
	}
	peer, err := Authorize(conn, ownUID)
	if err != nil {
		_ = conn.Close()
		return nil, peer, err
	}
	return conn, peer, nil
}
