// Package latency is what the proxy's latency benchmarks (internal/proxy in process, test/proxy
// with real processes) share: an HTTP/1.1 client and app that allocate nothing per request,
// reporting what a path adds to the direct one, and reading a process's memory.
package latency

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ReportAdded sorts the request times of the three paths and reports, for p50 and p99, the
// direct and proxied times and what the proxies and the relays add to the direct one
// (<q>-direct-µs, <q>-proxied-µs, <q>-added-µs, <q>-relays-added-µs).
func ReportAdded(b *testing.B, direct, proxied, relayed []time.Duration) {
	for _, times := range [][]time.Duration{direct, proxied, relayed} {
		slices.Sort(times)
	}
	for _, q := range []struct {
		name string
		p    float64
	}{{"p50", .5}, {"p99", .99}} {
		d, p, r := Percentile(direct, q.p), Percentile(proxied, q.p), Percentile(relayed, q.p)
		b.ReportMetric(micros(d), q.name+"-direct-µs")
		b.ReportMetric(micros(p), q.name+"-proxied-µs")
		b.ReportMetric(micros(p-d), q.name+"-added-µs")
		b.ReportMetric(micros(r-d), q.name+"-relays-added-µs")
	}
}

// Percentile is the p-th (0 to 1) of sorted times, 0 for none.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(float64(len(sorted))*p))]
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// ResidentMB reads a process's resident set size and its peak, in MiB (Linux /proc).
func ResidentMB(pid int) (rss, peak float64, err error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		for _, field := range []struct {
			prefix string
			value  *float64
		}{{"VmRSS:", &rss}, {"VmHWM:", &peak}} {
			if rest, ok := strings.CutPrefix(line, field.prefix); ok {
				kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
				if err != nil {
					return 0, 0, fmt.Errorf("parsing %q: %w", line, err)
				}
				*field.value = float64(kb) / 1024
			}
		}
	}
	return rss, peak, nil
}

// Conn is a minimal HTTP/1.1 keep-alive client on one connection that allocates nothing per
// request, so that the load generator's garbage collection does not weigh on the figures of
// a benchmark that shares its process with what it measures.
type Conn struct {
	address string
	request []byte
	conn    net.Conn
	br      *bufio.Reader
	buf     []byte
	// bodySize is the size of the request body, and of the response body expected.
	bodySize int
}

// NewConn prepares POST requests with body to the "/" of the HTTP URL's host:port.
func NewConn(url string, body []byte) *Conn {
	host := strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/")
	head := "POST / HTTP/1.1\r\nHost: " + host + "\r\nContent-Type: application/octet-stream\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n"
	return &Conn{address: host, request: append([]byte(head), body...), bodySize: len(body), buf: make([]byte, 64<<10)}
}

// Post sends the request, reads the whole response and returns how long it took; the answer
// must be 200 with as many bytes as the request body.
func (c *Conn) Post(tb testing.TB) time.Duration {
	tb.Helper()
	elapsed, err := c.Do()
	if err != nil {
		tb.Fatal(err)
	}
	return elapsed
}

// Do is Post for goroutines other than the test's: it returns what went wrong, after which the
// connection is closed (the next request opens a new one).
func (c *Conn) Do() (time.Duration, error) {
	start := time.Now()
	if c.conn == nil {
		conn, err := net.Dial("tcp", c.address)
		if err != nil {
			return 0, err
		}
		c.conn, c.br = conn, bufio.NewReaderSize(conn, 16<<10)
	}
	status, length, err := c.exchange()
	if err != nil {
		c.Close()
		return 0, fmt.Errorf("%s: %w", c.address, err)
	}
	elapsed := time.Since(start)
	if status != http.StatusOK || length != c.bodySize {
		c.Close()
		return 0, fmt.Errorf("%s answered %d with %d bytes", c.address, status, length)
	}
	return elapsed, nil
}

func (c *Conn) exchange() (status, length int, err error) {
	if _, err := c.conn.Write(c.request); err != nil {
		return 0, 0, fmt.Errorf("sending the request: %w", err)
	}
	length = -1
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return 0, 0, fmt.Errorf("reading the response head: %w", err)
		}
		if status == 0 {
			if len(line) < 12 {
				return 0, 0, fmt.Errorf("bad status line %q", line)
			}
			status = atoi(line[9:12])
			continue
		}
		if len(line) <= 2 {
			break
		}
		if name, value, ok := bytes.Cut(line, []byte(":")); ok && strings.EqualFold(string(name), "Content-Length") {
			length = atoi(bytes.TrimSpace(value))
		}
	}
	if length < 0 || length > len(c.buf) {
		return 0, 0, fmt.Errorf("response with Content-Length %d", length)
	}
	if _, err := io.ReadFull(c.br, c.buf[:length]); err != nil {
		return 0, 0, fmt.Errorf("reading the response body: %w", err)
	}
	return status, length, nil
}

func atoi(b []byte) int {
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// Serve answers every HTTP/1.1 request on l with 200 and a body of size bytes, reading and
// dropping the request body (Content-Length only), allocating nothing per request, until l is
// closed: an app whose own garbage collection does not weigh on the figures.
func Serve(l net.Listener, size int) {
	head := []byte("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: " + strconv.Itoa(size) + "\r\n\r\n")
	response := append(head, bytes.Repeat([]byte("x"), size)...)
	for {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer conn.Close()
			br := bufio.NewReaderSize(conn, 16<<10)
			for {
				length := 0
				for first := true; ; first = false {
					line, err := br.ReadSlice('\n')
					if err != nil {
						return
					}
					if len(line) <= 2 {
						if first {
							continue
						}
						break
					}
					if name, value, ok := bytes.Cut(line, []byte(":")); ok && strings.EqualFold(string(name), "Content-Length") {
						length = atoi(bytes.TrimSpace(value))
					}
				}
				if length < 0 {
					return
				}
				if _, err := br.Discard(length); err != nil {
					return
				}
				if _, err := conn.Write(response); err != nil {
					return
				}
			}
		}()
	}
}

// Close closes the connection, if there is one.
func (c *Conn) Close() {
	if c.conn != nil {
		_ = c.conn.Close()
		c.conn = nil
	}
}
