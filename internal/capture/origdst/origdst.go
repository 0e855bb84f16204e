// Package origdst reads the original destination of a connection the capture rules redirected
// (package capture): it has no dependency beyond the standard library and x/sys, so the proxy
// links it without the nftables code.
package origdst

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Socket options that read a redirected connection's destination before NAT, from conntrack.
const (
	// soOriginalDst is SO_ORIGINAL_DST at level SOL_IP (linux/netfilter_ipv4.h).
	soOriginalDst = 80
	// ip6tSoOriginalDst is IP6T_SO_ORIGINAL_DST at level SOL_IPV6 (linux/netfilter_ipv6/ip6_tables.h).
	ip6tSoOriginalDst = 80
)

// OriginalDst is the destination a captured (REDIRECTed) TCP connection was addressed to:
// an app port for inbound, the remote service for outbound. conn must be a *net.TCPConn (or
// another syscall.Conn) accepted by a listener the capture rules redirect to. A connection
// that was not redirected returns its own local address (conntrack has no NAT for it). IPv4
// connections accepted on a dual-stack listener are read with the IPv4 option.
func OriginalDst(conn net.Conn) (netip.AddrPort, error) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("original destination: %T is not a socket connection", conn)
	}
	local, ok := conn.LocalAddr().(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("original destination: local address %v is not TCP", conn.LocalAddr())
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", err)
	}
	ipv4 := local.IP.To4() != nil
	var dst netip.AddrPort
	var sockErr error
	if err := raw.Control(func(fd uintptr) {
		if ipv4 {
			dst, sockErr = originalDst4(int(fd))
		} else {
			dst, sockErr = originalDst6(int(fd))
		}
	}); err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", err)
	}
	if sockErr != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination of the connection from %v (is it tracked by conntrack?): %w", conn.RemoteAddr(), sockErr)
	}
	return dst, nil
}

func originalDst4(fd int) (netip.AddrPort, error) {
	var sa unix.RawSockaddrInet4
	if err := getsockopt(fd, unix.SOL_IP, soOriginalDst, unsafe.Pointer(&sa), unsafe.Sizeof(sa)); err != nil {
		return netip.AddrPort{}, err
	}
	if sa.Family != unix.AF_INET {
		return netip.AddrPort{}, fmt.Errorf("SO_ORIGINAL_DST returned address family %d, not AF_INET", sa.Family)
	}
	return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), networkPort(sa.Port)), nil
}

func originalDst6(fd int) (netip.AddrPort, error) {
	var sa unix.RawSockaddrInet6
	if err := getsockopt(fd, unix.SOL_IPV6, ip6tSoOriginalDst, unsafe.Pointer(&sa), unsafe.Sizeof(sa)); err != nil {
		return netip.AddrPort{}, err
	}
	if sa.Family != unix.AF_INET6 {
		return netip.AddrPort{}, fmt.Errorf("IP6T_SO_ORIGINAL_DST returned address family %d, not AF_INET6", sa.Family)
	}
	return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), networkPort(sa.Port)), nil
}

// networkPort reads a sockaddr port, which is in network byte order in host memory.
func networkPort(port uint16) uint16 {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], port)
	return binary.BigEndian.Uint16(b[:])
}

func getsockopt(fd, level, name int, value unsafe.Pointer, size uintptr) error {
	length := uint32(size)
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(name),
		uintptr(value), uintptr(unsafe.Pointer(&length)), 0)
	if errno != 0 {
		if errors.Is(errno, unix.ENOENT) {
			return fmt.Errorf("no conntrack entry: %w", errno)
		}
		return errno
	}
	return nil
}
