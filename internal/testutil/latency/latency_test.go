package latency

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func TestConnKeepsOneConnectionToServe(t *testing.T) {
	l := listen(t)
	go Serve(l, 1024)
	c := NewConn("http://"+l.Addr().String()+"/", bytes.Repeat([]byte("x"), 1024))
	defer c.Close()
	c.Post(t)
	first := c.conn
	for range 10 {
		if d := c.Post(t); d <= 0 {
			t.Fatalf("took %v", d)
		}
	}
	if c.conn != first {
		t.Error("the connection was not kept alive")
	}
	if n := testing.AllocsPerRun(100, func() { c.Post(t) }); n != 0 {
		t.Errorf("%v allocations per request, want 0", n)
	}
}

func TestServeAnswersNetHTTPClients(t *testing.T) {
	l := listen(t)
	go Serve(l, 5)
	for range 3 {
		res, err := http.Post("http://"+l.Addr().String()+"/", "text/plain", strings.NewReader("hello world"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		_ = res.Body.Close()
		if res.StatusCode != http.StatusOK || string(body) != "xxxxx" {
			t.Fatalf("got %s %q", res.Status, body)
		}
	}
}

func TestDoReportsAWrongAnswerAndReconnects(t *testing.T) {
	var status atomic.Int32
	status.Store(http.StatusOK)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(int(status.Load()))
		_, _ = w.Write([]byte("abc"))
	}))
	defer app.Close()
	c := NewConn(app.URL+"/", []byte("abc"))
	defer c.Close()
	if _, err := c.Do(); err != nil {
		t.Fatal(err)
	}
	status.Store(http.StatusTeapot)
	if _, err := c.Do(); err == nil || !strings.Contains(err.Error(), "answered 418 with 3 bytes") {
		t.Fatalf("got %v, want the 418 reported", err)
	}
	if c.conn != nil {
		t.Error("the connection was kept after a wrong answer")
	}
	status.Store(http.StatusOK)
	if _, err := c.Do(); err != nil {
		t.Fatalf("after a wrong answer: %v", err)
	}
	app.Close()
	c.Close()
	if _, err := c.Do(); err == nil {
		t.Fatal("no error from a closed server")
	}
}
