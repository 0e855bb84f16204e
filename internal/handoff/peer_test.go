package handoff

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// otherUID is the UID of the processes the tests start as another user (nobody).
const otherUID = 65534

// Environment of a helper process: what it does, and where the socket is.
const (
	helperEnv = "MESHLIFT_HANDOFF_TEST_HELPER"
	socketEnv = "MESHLIFT_HANDOFF_TEST_SOCKET"
)

func TestMain(m *testing.M) {
	if role := os.Getenv(helperEnv); role != "" {
		os.Exit(runHelper(role, os.Getenv(socketEnv)))
	}
	os.Exit(m.Run())
}

// runHelper is a process of another UID in TestAnotherUIDIsRefused. It reports on stdout.
func runHelper(role, path string) int {
	switch role {
	case "connect":
		// A container of the pod that found the socket: it connects, says HELLO as a new proxy
		// would, and reports what it gets back.
		conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			fmt.Println("connect failed:", err)
			return 0
		}
		c := NewConn(conn, 10*time.Second)
		if err := c.Send(Message{Type: TypeHello, Version: "1.0.0", Protocol: ProtocolVersion, Slot: 2}); err != nil {
			fmt.Println("closed before HELLO went out:", err)
			return 0
		}
		m, files, err := c.Receive()
		closeFiles(files)
		if err != nil {
			fmt.Println("closed:", err)
			return 0
		}
		fmt.Printf("received %s with %d files\n", m.Type, len(files))
	case "squat":
		// A container that replaced the socket with its own, to hand a new proxy listeners of
		// its choosing.
		_ = os.Remove(path)
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			fmt.Println("listen failed:", err)
			return 1
		}
		_ = os.Chmod(path, 0o666)
		fmt.Println("listening")
		_ = l.SetDeadline(time.Now().Add(10 * time.Second))
		if conn, err := l.Accept(); err == nil {
			_, _ = io.Copy(io.Discard, conn)
		}
	default:
		fmt.Println("unknown helper", role)
		return 1
	}
	return 0
}

// sharedDir is a directory every UID may use, as the pod's emptyDir is, with a copy of this test
// binary that another UID may run (go test's own build directory is private to root).
func sharedDir(t *testing.T) (dir, binary string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "handoff-peer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	binary = filepath.Join(dir, "handoff.test")
	if err := os.WriteFile(binary, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, binary
}

// startAs runs the helper role as otherUID and returns its process and its stdout lines.
func startAs(t *testing.T, binary, role, socket string) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	cmd := exec.Command(binary, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+role, socketEnv+"="+socket)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: otherUID, Gid: otherUID, NoSetGroups: true}}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting a process as uid %d: %v", otherUID, err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd, bufio.NewScanner(out)
}

func nextLine(t *testing.T, lines *bufio.Scanner) string {
	t.Helper()
	if !lines.Scan() {
		t.Fatalf("the helper process ended without a report: %v", lines.Err())
	}
	return lines.Text()
}

func TestCheckPeer(t *testing.T) {
	tests := []struct {
		name   string
		peer   PeerCredentials
		own    uint32
		refuse bool
	}{
		{"a peer of the proxy's own uid is accepted", PeerCredentials{PID: 7, UID: 65532, GID: 65532}, 65532, false},
		{"a peer of the proxy's uid but another gid is accepted (the uid decides)", PeerCredentials{PID: 7, UID: 65532, GID: 0}, 65532, false},
		{"a peer of another uid is refused", PeerCredentials{PID: 7, UID: 1000, GID: 65532}, 65532, true},
		{"a root peer of a non-root proxy is refused (an app container running as root)", PeerCredentials{PID: 7, UID: 0}, 65532, true},
		{"a non-root peer of a root proxy is refused", PeerCredentials{PID: 7, UID: 65532}, 0, true},
		{"a root peer of a root proxy is accepted", PeerCredentials{PID: 7, UID: 0}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckPeer(tt.peer, tt.own)
			if refused := errors.Is(err, ErrPeerRefused); refused != tt.refuse {
				t.Fatalf("CheckPeer = %v, want refused %v", err, tt.refuse)
			}
			if tt.refuse && !strings.Contains(err.Error(), fmt.Sprintf("uid %d", tt.peer.UID)) {
				t.Fatalf("the refusal %q does not name the peer's uid", err)
			}
		})
	}
}

func TestListenCreatesTheSocketWithMode0600(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "handoff.sock")
	if err := os.WriteFile(path, []byte("stale"), 0o666); err != nil {
		t.Fatal(err)
	}
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Type() != os.ModeSocket || info.Mode().Perm() != SocketMode {
		t.Fatalf("the handoff socket is %v, want a socket with mode %v", info.Mode(), SocketMode)
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 1 {
		t.Fatalf("the directory holds %v (%v), want only the socket", entries, err)
	}
	// The socket that was renamed into place is the one that accepts, and a peer of this UID
	// is authorized on both sides.
	accepted := make(chan error, 1)
	go func() {
		conn, err := l.AcceptUnix()
		if err == nil {
			var peer PeerCredentials
			peer, err = Authorize(conn, OwnUID())
			if err == nil && peer.PID != int32(os.Getpid()) {
				err = fmt.Errorf("peer pid %d, want %d", peer.PID, os.Getpid())
			}
			_ = conn.Close()
		}
		accepted <- err
	}()
	conn, peer, err := Dial(path, OwnUID())
	if err != nil {
		t.Fatalf("Dial refused a listener of this process's own uid: %v", err)
	}
	_ = conn.Close()
	if peer.UID != uint32(os.Geteuid()) || peer.PID != int32(os.Getpid()) {
		t.Fatalf("the listener's credentials are %+v, want this process's", peer)
	}
	if err := <-accepted; err != nil {
		t.Fatalf("the listener refused a peer of its own uid: %v", err)
	}
}

// TestAnotherUIDIsRefused runs real processes of another UID (nobody) against the handoff
// socket: the kernel's file mode and credentials, not a fake, decide.
func TestAnotherUIDIsRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: it starts processes of another uid (syscall.Credential)")
	}

	t.Run("a process of another uid cannot connect to the 0600 socket", func(t *testing.T) {
		dir, binary := sharedDir(t)
		path := filepath.Join(dir, "handoff.sock")
		l, err := Listen(path)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		_, lines := startAs(t, binary, "connect", path)
		if got := nextLine(t, lines); !strings.Contains(got, "connect failed") || !strings.Contains(got, "permission denied") {
			t.Fatalf("the process of uid %d reports %q, want a refused connect (permission denied)", otherUID, got)
		}
	})

	t.Run("the serving proxy refuses a peer of another uid that reached the socket, before HELLO", func(t *testing.T) {
		// The file mode is one layer; an app container running as root ignores it. Opening the
		// mode here stands in for that peer, so that the credentials check alone must refuse.
		dir, binary := sharedDir(t)
		path := filepath.Join(dir, "handoff.sock")
		l, err := Listen(path)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		if err := os.Chmod(path, 0o666); err != nil {
			t.Fatal(err)
		}
		tcp, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer tcp.Close()
		cmd, lines := startAs(t, binary, "connect", path)

		_ = l.SetDeadline(time.Now().Add(10 * time.Second))
		conn, err := l.AcceptUnix()
		if err != nil {
			t.Fatal(err)
		}
		peer, err := Authorize(conn, OwnUID())
		if !errors.Is(err, ErrPeerRefused) {
			_, _ = Offer(NewConn(conn, 5*time.Second), 1, []NamedListener{{Name: "inbound", Listener: tcp}})
			t.Fatalf("Authorize = %v, want a refusal of uid %d", err, otherUID)
		}
		_ = conn.Close()
		if peer.UID != otherUID || peer.PID != int32(cmd.Process.Pid) {
			t.Fatalf("the refused peer is %+v, want uid %d pid %d", peer, otherUID, cmd.Process.Pid)
		}
		if got := nextLine(t, lines); !strings.HasPrefix(got, "closed") {
			t.Fatalf("the refused process reports %q, want the connection closed without LISTENERS", got)
		}
	})

	t.Run("the new proxy refuses a socket served by another uid", func(t *testing.T) {
		dir, binary := sharedDir(t)
		path := filepath.Join(dir, "handoff.sock")
		cmd, lines := startAs(t, binary, "squat", path)
		if got := nextLine(t, lines); got != "listening" {
			t.Fatalf("the squatting process reports %q", got)
		}
		conn, peer, err := Dial(path, OwnUID())
		if !errors.Is(err, ErrPeerRefused) {
			if conn != nil {
				_ = conn.Close()
			}
			t.Fatalf("Dial = %v, want a refusal of uid %d", err, otherUID)
		}
		if peer.UID != otherUID || peer.PID != int32(cmd.Process.Pid) {
			t.Fatalf("the refused listener is %+v, want uid %d pid %d", peer, otherUID, cmd.Process.Pid)
		}
	})
}
