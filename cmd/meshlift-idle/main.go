// Command meshlift-idle occupies the idle hot-upgrade slot of an injected pod. The slot container
// carries the proxy's arguments, environment and probes (only its image changes in place), so
// this program ignores the arguments and answers the slot's readiness probe: any HTTP request to
// the slot's admin port (15000 + MESHLIFT_SLOT - 1, or MESHLIFT_ADMIN_PORT) gets "200 idle". An
// idle slot is ready: it is doing its job. It blocks until SIGTERM or SIGINT and then exits 0 at
// once. It uses raw syscalls and no fmt or net, so the stripped binary stays about 1.4 MB.
package main

import (
	"os"
	"os/signal"
	"strconv"
	"syscall"
)

const response = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\nidle\n"

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	if port := adminPort(); port > 0 {
		if fd, err := listen(port); err != nil {
			// Not fatal: the slot then reports not ready, which the probe makes visible.
			_, _ = os.Stderr.WriteString("meshlift-idle: cannot listen on the admin port " + strconv.Itoa(port) + ": " + err.Error() + "\n")
		} else {
			go serve(fd)
		}
	}
	<-stop
}

// adminPort is the slot's admin port, as the proxy computes it.
func adminPort() int {
	if port, err := strconv.Atoi(os.Getenv("MESHLIFT_ADMIN_PORT")); err == nil {
		return port
	}
	slot, err := strconv.Atoi(os.Getenv("MESHLIFT_SLOT"))
	if err != nil || slot < 1 {
		slot = 1
	}
	return 15000 + slot - 1
}

func listen(port int) (int, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	_ = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Port: port}); err != nil {
		_ = syscall.Close(fd)
		return 0, err
	}
	if err := syscall.Listen(fd, 16); err != nil {
		_ = syscall.Close(fd)
		return 0, err
	}
	return fd, nil
}

// serve answers every connection with the fixed response after reading (at most 4 KiB of) its
// request, one second at most.
func serve(fd int) {
	buf := make([]byte, 4096)
	timeout := syscall.Timeval{Sec: 1}
	for {
		conn, _, err := syscall.Accept(fd)
		if err != nil {
			if err == syscall.EINTR || err == syscall.ECONNABORTED {
				continue
			}
			return
		}
		_ = syscall.SetsockoptTimeval(conn, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &timeout)
		_ = syscall.SetsockoptTimeval(conn, syscall.SOL_SOCKET, syscall.SO_SNDTIMEO, &timeout)
		_, _ = syscall.Read(conn, buf)
		_, _ = syscall.Write(conn, []byte(response))
		_ = syscall.Close(conn)
	}
}
