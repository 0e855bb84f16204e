package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

// echoListener serves the TCP line echo on the loopback until the test ends.
func echoListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveTCPEcho(ctx, ln, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serveTCPEcho: %v", err)
		}
	})
	return ln.Addr().String()
}

func runStreamsJSON(t *testing.T, ctx context.Context, args ...string) (streamsSummary, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(ctx, append([]string{"streams", "--output=json"}, args...), &stdout, &stderr)
	var summary streamsSummary
	if code != exitUsage {
		if err := json.Unmarshal(stdout.Bytes(), &summary); err != nil {
			t.Fatalf("summary %q (stderr %q): %v", stdout.String(), stderr.String(), err)
		}
	}
	return summary, code
}

func TestStreamsStayUpAgainstTheEcho(t *testing.T) {
	addr := echoListener(t)
	summary, code := runStreamsJSON(t, context.Background(), "--target="+addr, "--streams=5", "--interval=5ms", "--duration=400ms")
	if code != exitOK || summary.Broken != 0 || summary.Streams != 5 {
		t.Fatalf("exit %d, summary %+v: want 5 streams and none broken", code, summary)
	}
	if summary.Lines < 5*10 {
		t.Errorf("%d lines echoed in 400ms by 5 streams every 5ms, want at least 50", summary.Lines)
	}
}

// TestStreamsReportEveryStreamThatBreaks: a server that closes every connection after three
// lines breaks every stream, and each is counted with its reason.
func TestStreamsReportEveryStreamThatBreaks(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = conn.Close() }()
				r := bufio.NewReader(conn)
				for range 3 {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					_, _ = io.WriteString(conn, line)
				}
			}()
		}
	}()
	summary, code := runStreamsJSON(t, context.Background(), "--target="+ln.Addr().String(), "--streams=4", "--interval=5ms", "--duration=2s")
	if code != exitFailure || summary.Broken != 4 || summary.Lines != 12 {
		t.Fatalf("exit %d, summary %+v: want 4 broken streams after 12 lines", code, summary)
	}
	for reason := range summary.Failures {
		if !strings.HasPrefix(reason, "read: ") && !strings.HasPrefix(reason, "write: ") {
			t.Errorf("reason %q names neither a read nor a write", reason)
		}
	}
}

func TestStreamsCountAWrongAnswer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer func() { _ = conn.Close() }()
		r := bufio.NewReader(conn)
		if _, err := r.ReadString('\n'); err == nil {
			_, _ = io.WriteString(conn, "not what was sent\n")
		}
		time.Sleep(time.Second)
	}()
	summary, code := runStreamsJSON(t, context.Background(), "--target="+ln.Addr().String(), "--streams=1", "--duration=500ms")
	if code != exitFailure || summary.Failures["read: a wrong answer"] != 1 {
		t.Fatalf("exit %d, summary %+v: want one stream broken by a wrong answer", code, summary)
	}
}

func TestStreamsRejectInvalidFlags(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"--target=nohostport"},
		{"--target=127.0.0.1:1", "--streams=0"},
		{"--target=127.0.0.1:1", "--interval=0s"},
		{"--target=127.0.0.1:1", "--duration=2h"},
		{"--target=127.0.0.1:1", "--output=yaml"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), append([]string{"streams"}, args...), &stdout, &stderr); code != exitUsage {
			t.Errorf("streams %v: exit %d, want %d", args, code, exitUsage)
		}
	}
}

// TestTheEchoRefusesOverlongLines: a line longer than maxEchoLine ends its connection.
func TestTheEchoRefusesOverlongLines(t *testing.T) {
	addr := echoListener(t)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	go func() { _, _ = conn.Write(bytes.Repeat([]byte("x"), maxEchoLine+10)) }()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := conn.Read(make([]byte, 10)); err == nil {
		t.Fatalf("read %d bytes of an answer to an overlong line, want the connection closed", n)
	}
}
