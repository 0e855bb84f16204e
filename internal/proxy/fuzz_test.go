package proxy

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/meshlift/meshlift/internal/proxyconfig"
)

// FuzzFirstBytes sends arbitrary first bytes to a PERMISSIVE inbound listener and to an
// outbound listener (real sockets, real proxies): whatever arrives, the proxy answers or closes
// the connection, and stays up.
func FuzzFirstBytes(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		http2Preface + "\x00\x00\x00\x04\x00\x00\x00\x00\x00",
		"\x16\x03\x01\x00\x05hello",
		"\x16\x03\x01\xff\xff",
		"POST / HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n",
		"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		"GET http:/",
		"\x00\x01\x02\x03",
	} {
		f.Add([]byte(seed))
	}
	fx := newFixture(f)
	app := startHTTPApp(f, echoApp("app"), false)
	_, inboundAddr := fx.serverProxy("PERMISSIVE", Options{HandshakeTimeout: 2 * time.Second},
		proxyconfig.Port{Name: "http", Port: app, Protocol: "HTTP"})
	client, local := fx.clientProxy(Options{HandshakeTimeout: 2 * time.Second}, "http")
	fx.pointAt(client, inboundAddr, "http")

	f.Fuzz(func(t *testing.T, b []byte) {
		var wg sync.WaitGroup
		for _, addr := range []string{inboundAddr, local["http"]} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				conn, err := net.Dial("tcp", addr)
				if err != nil {
					t.Errorf("dial %s: %v", addr, err)
					return
				}
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
				_, _ = conn.Write(b)
				_ = conn.(*net.TCPConn).CloseWrite()
				if _, err := io.Copy(io.Discard, conn); isTimeout(err) {
					t.Errorf("%s kept the connection open after %q", addr, b)
				}
			}()
		}
		wg.Wait()
	})
}
