package proxy

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

func TestForwardedHeader(t *testing.T) {
	tests := []struct {
		name    string
		in      http.Header
		upgrade bool
		want    http.Header
		same    bool // the request's own map is used
	}{
		{name: "a header without hop-by-hop fields is used as is",
			in:   http.Header{"Accept": {"*/*"}, "User-Agent": {"curl"}},
			want: http.Header{"Accept": {"*/*"}, "User-Agent": {"curl"}}, same: true},
		{name: "a missing User-Agent stays missing",
			in:   http.Header{"Accept": {"*/*"}},
			want: http.Header{"Accept": {"*/*"}, "User-Agent": nil}, same: true},
		{name: "TE: trailers is kept as is",
			in:   http.Header{"Te": {"trailers"}, "User-Agent": {"grpc-go"}},
			want: http.Header{"Te": {"trailers"}, "User-Agent": {"grpc-go"}}, same: true},
		{name: "hop-by-hop fields are removed",
			in: http.Header{"Connection": {"keep-alive"}, "Keep-Alive": {"timeout=5"}, "Proxy-Connection": {"x"},
				"Transfer-Encoding": {"chunked"}, "Upgrade": {"h2c"}, "Trailer": {"X"}, "Accept": {"*/*"}, "User-Agent": {"a"}},
			want: http.Header{"Accept": {"*/*"}, "User-Agent": {"a"}}},
		{name: "fields named by Connection are removed",
			in:   http.Header{"Connection": {"X-Secret, close"}, "X-Secret": {"1"}, "X-Kept": {"2"}, "User-Agent": {"a"}},
			want: http.Header{"X-Kept": {"2"}, "User-Agent": {"a"}}},
		{name: "TE keeps only trailers",
			in:   http.Header{"Te": {"gzip, trailers"}, "User-Agent": {"a"}},
			want: http.Header{"Te": {"trailers"}, "User-Agent": {"a"}}},
		{name: "an upgrade keeps its Connection and Upgrade",
			in:      http.Header{"Connection": {"keep-alive, Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Key": {"k"}, "User-Agent": {"a"}},
			upgrade: true,
			want:    http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Key": {"k"}, "User-Agent": {"a"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := forwardedHeader(tt.in, tt.upgrade)
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			if same := reflect.ValueOf(got).UnsafePointer() == reflect.ValueOf(tt.in).UnsafePointer(); same != tt.same {
				t.Fatalf("used the request's map: %v, want %v", same, tt.same)
			}
		})
	}
}

func TestReplayBody(t *testing.T) {
	source := func(s string) io.ReadCloser { return io.NopCloser(strings.NewReader(s)) }
	readN := func(t *testing.T, r io.Reader, n int) string {
		t.Helper()
		buf := make([]byte, n)
		if _, err := io.ReadFull(r, buf); err != nil {
			t.Fatal(err)
		}
		return string(buf)
	}

	t.Run("a new reader replays what was read and goes on with the rest", func(t *testing.T) {
		body := newReplayBody(source("abcdefgh"))
		defer body.finish()
		first, _ := body.reader()
		if got := readN(t, first, 3); got != "abc" {
			t.Fatalf("first reader got %q", got)
		}
		second, err := body.reader()
		if err != nil {
			t.Fatal(err)
		}
		if got, err := io.ReadAll(second); err != nil || string(got) != "abcdefgh" {
			t.Fatalf("second reader got %q, %v", got, err)
		}
		if _, err := first.Read(make([]byte, 1)); !errors.Is(err, errBodyReplaced) {
			t.Fatalf("the first reader read on: %v", err)
		}
	})

	t.Run("a body read beyond the limit cannot start over", func(t *testing.T) {
		body := newReplayBody(io.NopCloser(bytes.NewReader(make([]byte, maxReplay+1))))
		defer body.finish()
		r, _ := body.reader()
		if n, err := io.Copy(io.Discard, r); err != nil || n != maxReplay+1 {
			t.Fatalf("read %d, %v", n, err)
		}
		if _, err := body.reader(); !errors.Is(err, errCannotReplay) {
			t.Fatalf("reader after the limit: %v", err)
		}
	})

	t.Run("readers fail once the request is finished", func(t *testing.T) {
		body := newReplayBody(source("abc"))
		r, _ := body.reader()
		body.finish()
		if _, err := r.Read(make([]byte, 1)); !errors.Is(err, errBodyReplaced) {
			t.Fatalf("read after finish: %v", err)
		}
		if _, err := body.reader(); err == nil {
			t.Fatal("a reader started after finish")
		}
	})
}
