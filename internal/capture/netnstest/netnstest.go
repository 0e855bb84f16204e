// Package netnstest creates throwaway network namespaces for tests of the capture rules: a
// namespace lives as long as the test holds its file descriptor and disappears with it, so
// nothing is mounted and nothing outlives the test. Tests that use it need root; without root
// they are skipped with a message that says so.
package netnstest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// SkipReason is the message of tests skipped for lack of privileges.
const SkipReason = "needs root to create a network namespace (run the tests as root)"

// NetNS is a network namespace created for one test.
type NetNS struct {
	file *os.File
	// Path opens the namespace (/proc/PID/fd/FD), for code that takes a namespace path.
	Path string
}

// New creates a network namespace with its loopback up, closed when the test ends (the
// kernel destroys it with its last reference). It skips the test when not root.
func New(t testing.TB) *NetNS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip(SkipReason)
	}
	var file *os.File
	err := onThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare(CLONE_NEWNET): %w", err)
		}
		var err error
		file, err = os.Open("/proc/thread-self/ns/net")
		return err
	})
	if errors.Is(err, unix.EPERM) {
		t.Skipf("%s: %v", SkipReason, err)
	}
	if err != nil {
		t.Fatalf("failed to create a network namespace: %v", err)
	}
	ns := &NetNS{file: file, Path: fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), file.Fd())}
	t.Cleanup(func() { _ = ns.file.Close() })
	handle := ns.Handle(t)
	lo, err := handle.LinkByName("lo")
	if err == nil {
		err = handle.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatalf("failed to bring up lo in the test network namespace: %v", err)
	}
	return ns
}

// Fd is the namespace's file descriptor.
func (ns *NetNS) Fd() int { return int(ns.file.Fd()) }

// Handle is a netlink handle inside the namespace, closed when the test ends.
func (ns *NetNS) Handle(t testing.TB) *netlink.Handle {
	t.Helper()
	handle, err := netlink.NewHandleAt(netns.NsHandle(ns.Fd()))
	if err != nil {
		t.Fatalf("failed to open a netlink handle in the test network namespace: %v", err)
	}
	t.Cleanup(handle.Close)
	return handle
}

// Do runs fn on a thread inside the namespace, as user fsUID for the sockets it creates when
// fsUID >= 0 (sockets carry the creator's filesystem UID, which nftables' meta skuid matches).
// Sockets that fn opens stay in the namespace after Do returns and can be used from any
// goroutine.
func (ns *NetNS) Do(fsUID int, fn func() error) error {
	return onThread(func() error {
		if err := unix.Setns(ns.Fd(), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("setns: %w", err)
		}
		if fsUID >= 0 {
			unix.Setfsuid(fsUID) //nolint:errcheck // setfsuid reports no error; the test sees the effect
		}
		return fn()
	})
}

// onThread runs fn on a locked thread and then puts the thread back in the namespace and
// filesystem user it had. The thread returns to the scheduler only when that worked; otherwise
// it stays locked and exits with its goroutine, so no other goroutine ever runs in a test
// namespace or as a test user by accident.
func onThread(fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		original, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			done <- fmt.Errorf("failed to open the thread's network namespace: %w", err)
			return
		}
		defer original.Close()
		uid := unix.Getuid()
		err = fn()
		if unix.Setns(int(original.Fd()), unix.CLONE_NEWNET) == nil {
			// setfsuid returns the previous value instead of failing: set it twice and compare.
			unix.Setfsuid(uid) //nolint:errcheck // checked by the second call
			if previous, _ := unix.SetfsuidRetUid(uid); previous == uid {
				runtime.UnlockOSThread()
			}
		}
		done <- err
	}()
	return <-done
}

// Listen opens a TCP listener inside the namespace, closed when the test ends.
func (ns *NetNS) Listen(t testing.TB, network, address string) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(-1, func() (err error) {
		ln, err = net.Listen(network, address)
		return err
	}); err != nil {
		t.Fatalf("failed to listen on %s %s in the test network namespace: %v", network, address, err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

// Dial connects from inside the namespace, as fsUID when >= 0 (see Do).
func (ns *NetNS) Dial(fsUID int, network, address string) (net.Conn, error) {
	var conn net.Conn
	err := ns.Do(fsUID, func() (err error) {
		conn, err = net.Dial(network, address)
		return err
	})
	return conn, err
}

// Link connects two namespaces with a veth pair and gives each end its addresses (CIDRs such
// as "10.0.0.1/24" or "fd00::1/64"; IPv6 without duplicate address detection, so they are
// usable at once).
func Link(t testing.TB, a *NetNS, aName string, aAddrs []string, b *NetNS, bName string, bAddrs []string) {
	t.Helper()
	handleA, handleB := a.Handle(t), b.Handle(t)
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: aName},
		PeerName:      bName,
		PeerNamespace: netlink.NsFd(b.Fd()),
	}
	if err := handleA.LinkAdd(veth); err != nil {
		t.Fatalf("failed to create veth %s/%s: %v", aName, bName, err)
	}
	for _, end := range []struct {
		handle *netlink.Handle
		name   string
		addrs  []string
	}{{handleA, aName, aAddrs}, {handleB, bName, bAddrs}} {
		link, err := end.handle.LinkByName(end.name)
		if err != nil {
			t.Fatalf("failed to find %s: %v", end.name, err)
		}
		for _, cidr := range end.addrs {
			addr, err := netlink.ParseAddr(cidr)
			if err != nil {
				t.Fatalf("bad test address %q: %v", cidr, err)
			}
			addr.Flags = unix.IFA_F_NODAD
			if err := end.handle.AddrAdd(link, addr); err != nil {
				t.Fatalf("failed to add %s to %s: %v", cidr, end.name, err)
			}
		}
		if err := end.handle.LinkSetUp(link); err != nil {
			t.Fatalf("failed to bring up %s: %v", end.name, err)
		}
	}
}
