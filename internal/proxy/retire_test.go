package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"

	"github.com/meshlift/meshlift/internal/proxyconfig"
)

// logLines records the lines a proxy logs.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) options() Options {
	return Options{Logger: funcr.New(func(prefix, args string) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.lines = append(l.lines, args)
	}, funcr.Options{})}
}

// count is how many lines contain every part.
func (l *logLines) count(parts ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.lines {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			n++
		}
	}
	return n
}

// stream is a long-lived connection through the client proxy: a TCP stream or an upgraded
// HTTP/1.1 connection, both echoing what they are sent.
type stream struct {
	conn   net.Conn
	reader *bufio.Reader
}

func openTCPStream(t *testing.T, address string) *stream {
	t.Helper()
	conn, err := net.Dial("tcp", address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	s := &stream{conn: conn, reader: bufio.NewReader(conn)}
	s.echo(t, "hello")
	return s
}

func openUpgraded(t *testing.T, address string) *stream {
	t.Helper()
	conn, err := net.Dial("tcp", address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	s := &stream{conn: conn, reader: bufio.NewReader(conn)}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: ws\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	res, err := http.ReadResponse(s.reader, nil)
	if err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", res, err)
	}
	s.echo(t, "hello")
	return s
}

// echo sends a line and checks that it comes back.
func (s *stream) echo(t *testing.T, line string) {
	t.Helper()
	if err := s.tryEcho(line); err != nil {
		t.Fatal(err)
	}
}

func (s *stream) tryEcho(line string) error {
	_ = s.conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(s.conn, line+"\n"); err != nil {
		return err
	}
	got, err := s.reader.ReadString('\n')
	if err != nil {
		return err
	}
	if got != line+"\n" {
		return fmt.Errorf("echoed %q, want %q", got, line)
	}
	return nil
}

// retireFixture is a client proxy in front of a server proxy, with three TCP streams and two
// upgraded connections open through both, and an idle HTTP/1.1 keep-alive connection.
type retireFixture struct {
	client, server *Proxy
	local          map[string]string
	streams        []*stream
	logs           *logLines
}

func newRetireFixture(t *testing.T) *retireFixture {
	f := newFixture(t)
	logs := &logLines{}
	_, serverAddr := f.serverProxy("STRICT", Options{}, serverPorts(t)...)
	opts := logs.options()
	opts.DrainIdleTimeout = -1
	names := []string{"http", "ws", "raw"}
	client, local := f.clientProxy(opts, names...)
	f.pointAt(client, serverAddr, names...)
	r := &retireFixture{client: client, local: local, logs: logs}
	for range 3 {
		r.streams = append(r.streams, openTCPStream(t, local["raw"]))
	}
	for range 2 {
		r.streams = append(r.streams, openUpgraded(t, local["ws"]))
	}
	if res, _ := mustGet(t, h1Client(), "http://"+local["http"]+"/fast"); res.StatusCode != http.StatusOK {
		t.Fatalf("HTTP/1.1: %s", res.Status)
	}
	return r
}

func (r *retireFixture) echoAll(t *testing.T, line string) {
	t.Helper()
	for i, s := range r.streams {
		if err := s.tryEcho(line); err != nil {
			t.Fatalf("stream %d broke: %v", i, err)
		}
	}
}

func TestRetire(t *testing.T) {
	t.Run("keeps streams that cannot move until they end, and closes HTTP/1 connections", func(t *testing.T) {
		r := newRetireFixture(t)
		drained := make(chan ConnectionCounts, 1)
		retired := make(chan error, 1)
		go func() {
			retired <- r.client.Retire(context.Background(), RetireOptions{DrainTimeout: time.Hour, MaxDuration: time.Hour,
				Drained: func(left ConnectionCounts) { drained <- left }})
		}()
		left := <-drained
		if left["tcp"] != 3 || left["upgraded"] != 2 || left.Total() != 5 {
			t.Errorf("DRAINED with %v left, want the 3 TCP streams and 2 upgraded connections only", left)
		}
		r.echoAll(t, "during the retirement")
		if got := r.client.RetiringConnections(); got != 5 {
			t.Errorf("RetiringConnections() = %d, want 5", got)
		}
		if got := counter(r.client.metrics.retiring[kindTCP]); got != 3 {
			t.Errorf("meshlift_proxy_retiring_connections{kind=tcp} = %v, want 3", got)
		}
		for _, s := range r.streams {
			_ = s.conn.Close()
		}
		if err := <-retired; err != nil {
			t.Fatalf("Retire() = %v, want nil once every connection ended", err)
		}
		if got := r.client.RetiringConnections(); got != 0 {
			t.Errorf("RetiringConnections() = %d after the retirement, want 0", got)
		}
		if got := counter(r.client.metrics.connectionsCut); got != 0 {
			t.Errorf("%v connections cut, want none", got)
		}
	})

	t.Run("keeps an HTTP/2 connection with a stream in flight after its GOAWAY until the stream ends", func(t *testing.T) {
		f := newFixture(t)
		app := newBlockingApp()
		_, serverAddr := f.serverProxy("STRICT", Options{}, proxyconfig.Port{Name: "grpc", Port: startHTTPApp(t, app, true), Protocol: "GRPC"})
		client, local := f.clientProxy(Options{DrainIdleTimeout: -1}, "grpc")
		f.pointAt(client, serverAddr, "grpc")
		h2 := h2cClient()
		inflight := make(chan error, 1)
		go func() {
			res, err := h2.Get("http://" + local["grpc"] + "/block")
			if err == nil {
				body, _ := io.ReadAll(res.Body)
				_ = res.Body.Close()
				if string(body) != "done" {
					err = fmt.Errorf("body %q", body)
				}
			}
			inflight <- err
		}()
		<-app.entered
		drained := make(chan ConnectionCounts, 1)
		retired := make(chan error, 1)
		go func() {
			retired <- client.Retire(context.Background(), RetireOptions{DrainTimeout: time.Hour, MaxDuration: time.Hour,
				Drained: func(left ConnectionCounts) { drained <- left }})
		}()
		if left := <-drained; left["http2"] != 1 || left.Total() != 1 {
			t.Errorf("DRAINED with %v left, want the HTTP/2 connection with its stream in flight", left)
		}
		close(app.release)
		if err := <-inflight; err != nil {
			t.Fatalf("the stream in flight failed: %v", err)
		}
		if err := <-retired; err != nil {
			t.Fatalf("Retire() = %v, want nil once the stream ended and the connection closed", err)
		}
	})

	t.Run("cuts what is left at the budget's end and reports each client", func(t *testing.T) {
		r := newRetireFixture(t)
		err := r.client.Retire(context.Background(), RetireOptions{DrainTimeout: time.Hour, MaxDuration: 300 * time.Millisecond})
		if !errors.Is(err, ErrDrainBudget) {
			t.Fatalf("Retire() = %v, want ErrDrainBudget", err)
		}
		for i, s := range r.streams {
			if err := s.tryEcho("after the budget"); err == nil {
				t.Errorf("stream %d still open after the budget", i)
			}
		}
		if got := counter(r.client.metrics.cut(CutReasonDrainBudget, kindTCP)); got != 3 {
			t.Errorf("cut_total{reason=drain_budget,kind=tcp} = %v, want 3", got)
		}
		if got := counter(r.client.metrics.cut(CutReasonDrainBudget, kindUpgraded)); got != 2 {
			t.Errorf("cut_total{reason=drain_budget,kind=upgraded} = %v, want 2", got)
		}
		for _, s := range r.streams {
			local := s.conn.LocalAddr().String() // the proxy's peer
			if n := r.logs.count(`"Cutting a connection"`, `"reason"="drain_budget"`, `"remote"="`+local+`"`, `"listener"="outbound:`, `"age"=`); n != 1 {
				t.Errorf("%d log lines report the cut of %s, want 1", n, local)
			}
		}
		if got := r.client.ConnectionsCutAtBudget(); got != 5 {
			t.Errorf("ConnectionsCutAtBudget() = %d, want 5", got)
		}
		if n := r.logs.count(`"Cut connections"`, `"connections"=5`); n != 1 {
			t.Errorf("%d summary lines, want 1", n)
		}
	})

	t.Run("a stopped retirement leaves its connections served and the proxy resumes", func(t *testing.T) {
		r := newRetireFixture(t)
		ctx, cancel := context.WithCancel(context.Background())
		drained := make(chan ConnectionCounts, 1)
		retired := make(chan error, 1)
		go func() {
			retired <- r.client.Retire(ctx, RetireOptions{DrainTimeout: time.Hour, MaxDuration: time.Hour,
				Drained: func(left ConnectionCounts) { drained <- left }})
		}()
		<-drained
		cancel()
		if err := <-retired; !errors.Is(err, context.Canceled) {
			t.Fatalf("Retire() = %v, want the context's error", err)
		}
		if err := r.client.ResumeAccepting(); err != nil {
			t.Fatal(err)
		}
		r.echoAll(t, "after the resume")
		fresh := openTCPStream(t, r.local["raw"])
		fresh.echo(t, "new stream")

		// A later shutdown drain takes the old streams in too, and cuts them at its end.
		ctx, cancel = context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		if err := r.client.Drain(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Drain() = %v, want the deadline", err)
		}
		if got := counter(r.client.metrics.connectionsCut); got != 6 {
			t.Errorf("%v connections cut by the drain, want 6 (3+1 TCP, 2 upgraded)", got)
		}
		if n := r.logs.count(`"Cutting a connection"`, `"reason"="drain_timeout"`); n != 6 {
			t.Errorf("%d log lines report cuts for drain_timeout, want 6", n)
		}
	})
}
